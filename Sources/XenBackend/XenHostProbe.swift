import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// One capability of this host for Xen replay sessions: "yes", or "no" with why and what to do.
public struct XenCapability: Codable, Equatable, Sendable {
    /// What is checked, e.g. "Xen privcmd device".
    public let name: String
    public let available: Bool
    /// When available: what was found (a path, a version). Otherwise: why not, in one line.
    public let detail: String
    /// When not available: what to do about it, in one line.
    public let advice: String?

    init(_ name: String, yes detail: String) {
        self.name = name; available = true; self.detail = detail; advice = nil
    }
    init(_ name: String, no reason: String, advice: String?) {
        self.name = name; available = false; detail = reason; self.advice = advice
    }
}

/// What `XenHostProbe.probe` found: one `XenCapability` per check, the raw facts
/// behind them, and whether Xen replay sessions can run here at all.
public struct XenHostReport: Codable, Equatable, Sendable {
    /// /dev/xen/privcmd (or /proc/xen/privcmd): the hypercall device of dom0.
    public var privcmd: XenCapability
    /// /sys/hypervisor/type reads "xen".
    public var hypervisorType: XenCapability
    /// /proc/xen/capabilities says control_d: this is dom0.
    public var controlDomain: XenCapability
    /// The effective user is root (privcmd needs it).
    public var root: XenCapability
    /// libxenctrl and libxl loaded, with their versions.
    public var libraries: XenCapability
    /// A libxenctrl handle opened and the hypervisor answered.
    public var hypervisorReachable: XenCapability
    /// The time-travel hypervisor's `xc_ttd_*` calls exported by the loaded libxenctrl.
    public var timeTravel: XenCapability
    /// The CPU has Intel PT (cpuinfo flag intel_pt).
    public var intelPT: XenCapability
    /// Xen's vmtrace (Intel PT for guests) is usable: CPU flag plus hypervisor capability.
    public var vmtrace: XenCapability
    /// PV guests can be stopped for a debugger: the hypervisor has CONFIG_GDBSX (Debian's
    /// stock build has not). Live sessions on PV guests need it.
    public var pvDebugging: XenCapability

    /// Raw facts, for `--json` and for messages.
    public var privcmdPath: String?
    public var hypervisorTypeText: String?
    public var libxenctrlVersion: String?
    public var libxlVersion: String?
    public var hypervisorVersion: String?
    /// The `xc_ttd_*` functions found, out of `XenTimeTravelExtensions.functionNames`.
    public var timeTravelFunctions: [String]
    /// What the Xen libraries logged while probing (caught by tt's logger, never printed).
    public var libraryMessages: [String]

    /// Whether `tt record`/`tt replay --backend xen` can run here: a reachable hypervisor,
    /// dom0, root, and the time-travel extensions (stock Xen cannot record or replay).
    public var canRunSessions: Bool
    /// When sessions cannot run: the first obstacle, in one line.
    public var reason: String?
    /// When sessions cannot run: what to do, in one line.
    public var advice: String?

    /// The checks in the order a report should show them.
    public var capabilities: [XenCapability] {
        [privcmd, hypervisorType, controlDomain, root, libraries, hypervisorReachable,
         timeTravel, intelPT, vmtrace, pvDebugging]
    }
}

/// The time-travel hypervisor's additions to libxenctrl. No public header declares
/// them; the names come from the tools that used them, the signatures are assumptions
/// documented at `XenTimeTravelCalls`.
public enum XenTimeTravelExtensions {
    /// Add / remove an execution probe at a guest address in a replay domain.
    public static let addProbe = "xc_ttd_vmi_add_probe"
    public static let removeProbe = "xc_ttd_vmi_remove_probe"
    /// Switch branch-trace store into the replay log on / off for a domain.
    public static let btsOn = "xc_ttd_set_bts_on"
    public static let btsOff = "xc_ttd_set_bts_off"
    /// Read a vCPU's virtualised retired-branch counter.
    public static let branchCounter = "xc_ttd_get_brctr"

    public static let functionNames = [addProbe, removeProbe, btsOn, btsOff, branchCounter]
    /// Without these two there is no way to stop a replay at a location.
    public static let required = [addProbe, removeProbe]
}

/// What the probe asks of the live system; tests substitute their own.
struct XenProbeSystem {
    enum Contact {
        case notAttempted(String)
        case failed(XenOpenFailure)
        case reached(version: String?, vmtrace: Bool?, gdbsx: Bool?)
    }
    var effectiveUserID: () -> UInt32
    var libxenctrlFile: () -> String?
    var libxlFile: () -> String?
    var exports: (_ library: String, _ symbol: String) -> Bool
    /// Open a libxenctrl handle (with tt's logger) and ask the hypervisor its version.
    var contactHypervisor: (_ root: FilePath, _ log: XenLibraryLog) -> Contact

    static let live = XenProbeSystem(
        effectiveUserID: { geteuid() },
        libxenctrlFile: { XenLibraries.libxenctrlFile },
        libxlFile: { XenLibraries.libxlFile },
        exports: { XenLibraries.library($0, exports: $1) },
        contactHypervisor: { root, log in
            // libxenctrl only knows the real /dev/xen: a fake tree is never mixed with real handles.
            guard root == "/" else {
                return .notAttempted("not checked: handles open only against the real root, not \(root)")
            }
            do {
                let xc = try XenControlInterface(log: log)
                return .reached(version: xc.hypervisorVersion(), vmtrace: xc.hypervisorHasVmtrace(),
                                gdbsx: xc.hypervisorHasGDBSX())
            } catch let failure as XenOpenFailure {
                return .failed(failure)
            } catch {
                return .failed(XenOpenFailure(call: "xc_interface_open", errno: EIO,
                                              libraryMessage: "\(error)"))
            }
        })
}

/// Checks whether this host can run Xen replay sessions. Prints nothing: the Xen
/// libraries' messages are caught by tt's logger and returned in the report.
public struct XenHostProbe {
    /// Probe the host. `root` lets tests point the file checks at a fake tree; handles
    /// are opened (through libxenctrl, which only knows the real /dev/xen) only when
    /// `root` is "/".
    public static func probe(root: FilePath = "/") -> XenHostReport {
        probe(root: root, system: .live)
    }

    static func probe(root: FilePath, system: XenProbeSystem) -> XenHostReport {
        let files = ProbeFiles(root: root)

        // privcmd: the device (modern) or the xenfs file (old kernels).
        let privcmdPath = ["dev/xen/privcmd", "proc/xen/privcmd"].first { files.exists($0) }.map { "/" + $0 }
        let privcmd = privcmdPath.map { XenCapability("Xen privcmd device", yes: $0) }
            ?? XenCapability("Xen privcmd device", no: "/dev/xen/privcmd is missing",
                             advice: "run tt in dom0 of a Xen host with the xen-privcmd module loaded")

        let typeText = files.read("sys/hypervisor/type")?.trimmingWhitespace
        let hypervisorType: XenCapability
        switch typeText {
        case "xen"?:
            hypervisorType = XenCapability("Xen hypervisor type", yes: "/sys/hypervisor/type is xen")
        case let other? where !other.isEmpty:
            hypervisorType = XenCapability("Xen hypervisor type", no: "/sys/hypervisor/type is '\(other)', not xen",
                                           advice: "boot this machine under Xen, or use --backend qemu")
        default:
            hypervisorType = XenCapability("Xen hypervisor type", no: "/sys/hypervisor/type is missing: not running under Xen",
                                           advice: "boot this machine under Xen, or use --backend qemu")
        }

        let capabilities = files.read("proc/xen/capabilities")
        let controlDomain: XenCapability
        if let capabilities, capabilities.contains("control_d") {
            controlDomain = XenCapability("Xen control domain (dom0)", yes: "/proc/xen/capabilities has control_d")
        } else if capabilities != nil {
            controlDomain = XenCapability("Xen control domain (dom0)", no: "this is a Xen guest (domU), not dom0",
                                          advice: "run tt in dom0")
        } else {
            controlDomain = XenCapability("Xen control domain (dom0)", no: "/proc/xen/capabilities is missing",
                                          advice: "run tt in dom0 with xenfs mounted on /proc/xen")
        }

        let euid = system.effectiveUserID()
        let rootCheck = euid == 0
            ? XenCapability("running as root", yes: "effective user id 0")
            : XenCapability("running as root", no: "effective user id is \(euid), not 0",
                            advice: "run tt as root in dom0 (privcmd is root-only)")

        let xcFile = system.libxenctrlFile()
        let xlFile = system.libxlFile()
        let xcVersion = xcFile.flatMap(XenLibraries.version(fromLibraryFile:))
        let xlVersion = xlFile.flatMap(XenLibraries.version(fromLibraryFile:))
        let libraries: XenCapability
        if let xcFile, let xlFile {
            libraries = XenCapability("Xen libraries",
                                      yes: "libxenctrl \(xcVersion ?? "?") (\(xcFile)), libxenlight \(xlVersion ?? "?") (\(xlFile))")
        } else {
            libraries = XenCapability("Xen libraries", no: "libxenctrl or libxenlight not loaded",
                                      advice: "install Xen's libraries (Debian: libxen-dev / libxenmisc)")
        }

        let log = XenLibraryLog()
        let contact = system.contactHypervisor(root, log)
        var hypervisorVersion: String?
        var hypervisorVmtrace: Bool?
        var hypervisorGDBSX: Bool?
        let reachable: XenCapability
        switch contact {
        case .notAttempted(let why):
            reachable = XenCapability("Xen hypervisor reachable", no: why, advice: nil)
        case .failed(let failure):
            let (why, advice) = explain(failure, privcmdPresent: privcmdPath != nil, typeText: typeText)
            reachable = XenCapability("Xen hypervisor reachable", no: why, advice: advice)
        case .reached(let version, let vmtrace, let gdbsx):
            hypervisorVersion = version
            hypervisorVmtrace = vmtrace
            hypervisorGDBSX = gdbsx
            reachable = XenCapability("Xen hypervisor reachable", yes: "Xen \(version ?? "(version unknown)")")
        }

        let found = xcFile.map { file in XenTimeTravelExtensions.functionNames.filter { system.exports(file, $0) } } ?? []
        let missing = XenTimeTravelExtensions.required.filter { !found.contains($0) }
        let timeTravel = missing.isEmpty
            ? XenCapability("Xen time-travel extensions", yes: found.joined(separator: ", "))
            : XenCapability("Xen time-travel extensions",
                            no: "the hypervisor\(hypervisorVersion.map { " (Xen \($0))" } ?? "") has no time travel: libxenctrl\(xcVersion.map { " " + $0 } ?? "") lacks \(missing.joined(separator: ", ")) (stock Xen)",
                            advice: "install the time-travel Xen, or use --backend qemu")

        let cpuHasPT = files.read("proc/cpuinfo").map(cpuinfoHasIntelPT) ?? false
        let intelPT = cpuHasPT
            ? XenCapability("Intel PT (cpu)", yes: "cpuinfo flag intel_pt")
            : XenCapability("Intel PT (cpu)", no: "no intel_pt flag in /proc/cpuinfo",
                            advice: "branch traces on stock Xen need an Intel CPU with PT; use --backend qemu")
        let vmtrace: XenCapability
        if !reachable.available {
            vmtrace = XenCapability("Xen vmtrace (Intel PT)", no: "the hypervisor is not reachable",
                                    advice: reachable.advice)
        } else if hypervisorVmtrace == true {
            vmtrace = XenCapability("Xen vmtrace (Intel PT)", yes: "hypervisor reports vmtrace")
        } else if hypervisorVmtrace == false {
            vmtrace = XenCapability("Xen vmtrace (Intel PT)", no: "the hypervisor does not offer vmtrace",
                                    advice: "boot Xen with vmtrace support (vmtrace_buf_kb) on a CPU with PT in VMX")
        } else {
            vmtrace = XenCapability("Xen vmtrace (Intel PT)", no: "the hypervisor did not report its capabilities",
                                    advice: nil)
        }

        let pvDebugging: XenCapability
        switch (reachable.available, hypervisorGDBSX) {
        case (false, _):
            pvDebugging = XenCapability("Xen PV debugging (GDBSX)", no: "the hypervisor is not reachable", advice: reachable.advice)
        case (true, true?):
            pvDebugging = XenCapability("Xen PV debugging (GDBSX)", yes: "debug traps of PV guests pause them for tt")
        case (true, false?):
            pvDebugging = XenCapability("Xen PV debugging (GDBSX)",
                                        no: "the hypervisor is built without CONFIG_GDBSX: PV guests cannot be stopped (live sessions can create, read and destroy them only)",
                                        advice: "rebuild Xen with CONFIG_EXPERT=y CONFIG_GDBSX=y")
        case (true, nil):
            pvDebugging = XenCapability("Xen PV debugging (GDBSX)", no: "the hypervisor's answer did not tell", advice: nil)
        }

        // The first obstacle decides the reason: the order is the order a user fixes them in.
        let sessionChecks = [hypervisorType, privcmd, controlDomain, rootCheck, libraries, reachable, timeTravel]
        let blocker: XenCapability?
        if !hypervisorType.available && privcmdPath == nil {
            // Not under Xen at all: one combined line, not a cascade of consequences.
            blocker = XenCapability("Xen", no: "this machine is not running under Xen (/dev/xen/privcmd missing, /sys/hypervisor/type \(typeText.map { "is '\($0)'" } ?? "missing"))",
                                    advice: "Xen replay sessions must run as root in dom0 with privcmd loaded; use --backend qemu")
        } else {
            blocker = sessionChecks.first { !$0.available }
        }

        return XenHostReport(
            privcmd: privcmd, hypervisorType: hypervisorType, controlDomain: controlDomain,
            root: rootCheck, libraries: libraries, hypervisorReachable: reachable,
            timeTravel: timeTravel, intelPT: intelPT, vmtrace: vmtrace, pvDebugging: pvDebugging,
            privcmdPath: privcmdPath, hypervisorTypeText: typeText,
            libxenctrlVersion: xcVersion, libxlVersion: xlVersion, hypervisorVersion: hypervisorVersion,
            timeTravelFunctions: found,
            libraryMessages: log.messages.map(\.description),
            canRunSessions: blocker == nil,
            reason: blocker.map(\.detail),
            advice: blocker.map { b in
                let base = b.advice ?? ""
                return base.contains("--backend qemu") ? base : (base.isEmpty ? "use --backend qemu" : base + "; or use --backend qemu")
            })
    }

    /// Turn a failed handle open into why + what to do, from errno and the files.
    static func explain(_ failure: XenOpenFailure, privcmdPresent: Bool, typeText: String?) -> (String, String) {
        let library = failure.libraryMessage.map { " (\($0))" } ?? ""
        switch failure.errno {
        case ENOENT, ENXIO, ENODEV:
            if typeText == "xen" {
                return ("\(failure.call) failed: no privcmd device\(library)",
                        "load the xen-privcmd module and mount xenfs on /proc/xen, in dom0")
            }
            return ("\(failure.call) failed: this machine is not running under Xen\(library)",
                    "Xen replay sessions must run as root in dom0 with privcmd loaded")
        case EACCES, EPERM:
            return ("\(failure.call) failed: permission denied\(library)", "run tt as root in dom0")
        default:
            return ("\(failure.call) failed: \(String(cString: strerror(failure.errno)))\(library)",
                    "check that this is dom0 of a running Xen host")
        }
    }

    /// Whether a /proc/cpuinfo text lists intel_pt among any CPU's flags.
    static func cpuinfoHasIntelPT(_ text: String) -> Bool {
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[line.index(after: colon)...].split(separator: " ").contains("intel_pt") { return true }
        }
        return false
    }
}

/// Small text files under a (possibly fake) root.
struct ProbeFiles {
    let root: FilePath

    func path(_ relative: String) -> FilePath { root.pushing(FilePath(relative)) }

    func exists(_ relative: String) -> Bool {
        path(relative).withPlatformString { access($0, F_OK) == 0 }
    }

    /// The whole file, or nil when unreadable. Capped at 4 MiB: these are one-line files
    /// and /proc/cpuinfo.
    func read(_ relative: String) -> String? {
        guard let bytes = try? readSmallFile(path(relative), limit: 4 << 20) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

