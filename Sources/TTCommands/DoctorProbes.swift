import Foundation
import SystemPackage
import Symbolize
import TTSystem

/// One capability line of `tt doctor`.
public struct DoctorCheck: Codable, Equatable {
    public var name: String
    public var ok: Bool
    /// What was found (a version, a path) when ok; why not when not ok.
    public var detail: String
    /// What to do about a "no".
    public var advice: String?
}

/// Where the probes look: a file-system root and a PATH, so tests can point them at a fake tree.
public struct DoctorEnvironment {
    public var root: FilePath
    public var searchPath: [String]
    /// Directories searched for tt's own QEMU plugin, before the installed locations.
    public var pluginDirectories: [FilePath]
    public var stateBase: FilePath
    public var effectiveUserID: UInt32

    public init(root: FilePath, searchPath: [String], pluginDirectories: [FilePath], stateBase: FilePath, effectiveUserID: UInt32) {
        self.root = root
        self.searchPath = searchPath
        self.pluginDirectories = pluginDirectories
        self.stateBase = stateBase
        self.effectiveUserID = effectiveUserID
    }

    /// This machine as it is.
    public static func current(stateBase: FilePath) -> DoctorEnvironment {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        var pluginDirs: [FilePath] = []
        if let env = ProcessInfo.processInfo.environment["TT_PLUGIN_DIR"] { pluginDirs.append(FilePath(env)) }
        pluginDirs.append(FilePath(Bundle.main.executablePath ?? CommandLine.arguments[0]).removingLastComponent())
        pluginDirs += ["/usr/local/lib/tt", "/usr/lib/tt"]
        return DoctorEnvironment(root: "/", searchPath: path, pluginDirectories: pluginDirs,
                                 stateBase: stateBase, effectiveUserID: geteuid())
    }

    /// A path as seen under `root`.
    func resolve(_ path: FilePath) -> FilePath {
        root == "/" ? path : root.pushing(path.removingRoot())
    }

    func find(executable name: String) -> FilePath? {
        for dir in searchPath where !dir.isEmpty {
            let candidate = resolve(FilePath(dir).appending(name))
            if access(candidate.string, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// The capability probes behind `tt doctor`. Each is independent and never throws:
/// a failed probe is a "no" with a reason.
public enum DoctorProbes {
    public static let qemuSystem = "qemu-system-x86_64"
    public static let pluginFileName = "libttplugin.so"
    /// A symbol only a QEMU built with TCG plugin support exports.
    static let pluginAPISymbol = "qemu_plugin_register_vcpu_tb_trans_cb"
    /// What tt's plugin calls beyond that: QEMU 10's plugin API (v4) reads registers and
    /// guest memory (Debian 12's own QEMU 7.2 exports neither).
    static let pluginAPIv4Symbols = ["qemu_plugin_read_register", "qemu_plugin_read_memory_vaddr"]

    public struct QEMUReport {
        public var checks: [DoctorCheck]
        public var canRunSessions: Bool
    }

    public static func qemu(_ env: DoctorEnvironment) -> QEMUReport {
        var checks: [DoctorCheck] = []
        var usable = true

        if let qemu = env.find(executable: qemuSystem) {
            let version = versionLine(of: qemu) ?? "version unknown"
            checks.append(DoctorCheck(name: "qemu", ok: true, detail: "\(qemu) (\(version))"))
            do {
                let symbols = try ELFInspection.definedDynamicSymbols(path: qemu)
                let missing = pluginAPIv4Symbols.filter { !symbols.contains($0) }
                if symbols.contains(pluginAPISymbol) && missing.isEmpty {
                    let count = symbols.filter { $0.hasPrefix("qemu_plugin_") }.count
                    checks.append(DoctorCheck(name: "qemu plugin API", ok: true, detail: "\(count) qemu_plugin_* symbols exported"))
                } else if symbols.contains(pluginAPISymbol) {
                    usable = false
                    checks.append(DoctorCheck(name: "qemu plugin API", ok: false,
                        detail: "\(qemu)'s plugin API lacks \(missing.joined(separator: ", ")), which tt's plugin needs (QEMU 10, plugin API v4)",
                        advice: "install QEMU 10: on Debian 12, apt-get install -t bookworm-backports qemu-system-x86 qemu-utils (scripts/setup does it)"))
                } else {
                    usable = false
                    checks.append(DoctorCheck(name: "qemu plugin API", ok: false,
                        detail: "\(qemu) exports no qemu_plugin_* symbols (built without --enable-plugins)",
                        advice: "install QEMU 10: on Debian 12, apt-get install -t bookworm-backports qemu-system-x86 qemu-utils (scripts/setup does it)"))
                }
            } catch {
                usable = false
                checks.append(DoctorCheck(name: "qemu plugin API", ok: false, detail: "\(error)",
                                          advice: "install Debian's qemu-system-x86"))
            }
        } else {
            usable = false
            checks.append(DoctorCheck(name: "qemu", ok: false, detail: "\(qemuSystem) not found on PATH",
                                      advice: "apt-get install qemu-system-x86 (scripts/setup does it)"))
        }

        if let img = env.find(executable: "qemu-img") {
            checks.append(DoctorCheck(name: "qemu-img", ok: true, detail: "\(img) (\(versionLine(of: img) ?? "version unknown"))"))
        } else {
            usable = false
            checks.append(DoctorCheck(name: "qemu-img", ok: false, detail: "qemu-img not found on PATH (needed for replay snapshots)",
                                      advice: "apt-get install qemu-utils (scripts/setup does it)"))
        }

        if let plugin = findPlugin(env) {
            checks.append(DoctorCheck(name: "tt plugin", ok: true, detail: plugin.string))
        } else {
            usable = false
            checks.append(DoctorCheck(name: "tt plugin", ok: false,
                detail: "\(pluginFileName) not found in \(env.pluginDirectories.map(\.string).joined(separator: ", "))",
                advice: "run scripts/setup (swift build builds it next to tt), or set TT_PLUGIN_DIR"))
        }
        return QEMUReport(checks: checks, canRunSessions: usable)
    }

    public static func findPlugin(_ env: DoctorEnvironment) -> FilePath? {
        for dir in env.pluginDirectories {
            let candidate = env.resolve(dir.appending(pluginFileName))
            if access(candidate.string, R_OK) == 0 { return candidate }
        }
        return nil
    }

    public static func libdw() -> DoctorCheck {
        DoctorCheck(name: "libdw", ok: true, detail: "elfutils \(ELFInspection.libdwVersion)")
    }

    /// The state base must exist and be writable, or be creatable under its nearest existing parent.
    public static func stateDirectory(_ env: DoctorEnvironment) -> DoctorCheck {
        var dir = env.resolve(env.stateBase)
        var existing = dir
        while access(existing.string, F_OK) != 0, !existing.components.isEmpty {
            existing.removeLastComponent()
        }
        let name = "state directory"
        if access(existing.string, W_OK | X_OK) == 0 {
            let how = existing == dir ? "writable" : "can be created under \(existing)"
            return DoctorCheck(name: name, ok: true, detail: "\(env.stateBase) (\(how))")
        }
        dir = env.stateBase
        return DoctorCheck(name: name, ok: false, detail: "\(dir) is not writable by uid \(env.effectiveUserID)",
                           advice: "run as root, or choose another base with -s or TT_STATE_BASE")
    }

    /// First line of `PROGRAM --version`, run without a shell (10 s at most: a probe
    /// must not hang `tt doctor`).
    static func versionLine(of program: FilePath) -> String? {
        let configuration = Subprocess.Configuration(executable: program.string, arguments: ["--version"],
                                                     output: .collect(limit: 1 << 16))
        guard let result = try? Subprocess.run(configuration, timeoutMS: 10_000), result.status.isSuccess else { return nil }
        return result.standardOutputText.split(separator: "\n").first.map(String.init)
    }
}
