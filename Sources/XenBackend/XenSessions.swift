import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Entry points for the session commands: open the Xen backend (or refuse in one line),
/// record a run in a Xen domain, decide `--backend auto`.
public enum XenSessions {
    /// Every file the Xen backend creates in a state directory (what -D and -f may remove).
    public static let stateFiles = ["record.cfg", "record.json", "replay.cfg", "replay.json", "backend", "domid", "symfile"]

    /// Open every Xen handle and require the time-travel extensions. Throws the one-line
    /// refusal (exit status 69): not under Xen / not dom0 / not root, or stock Xen.
    public static func openToolstack() throws -> LibXenToolstack {
        let toolstack = try LibXenToolstack()
        guard toolstack.hasTimeTravel else {
            let version = XenLibraries.libxenctrlFile.flatMap(XenLibraries.version(fromLibraryFile:)).map { " \($0)" } ?? ""
            throw XenError.noTimeTravel(detail: "the hypervisor has no time travel (stock Xen: libxenctrl\(version) lacks \(XenTimeTravelExtensions.addProbe)), so it can neither record nor replay")
        }
        return toolstack
    }

    /// Check, before touching any state, that Xen sessions can run here.
    public static func requireAvailable() throws {
        _ = try openToolstack()
    }

    /// `--backend auto`: Xen when a hypervisor with time travel is reachable, QEMU
    /// otherwise (on stock Xen only QEMU can record and replay).
    public static func autoSelectsXen() -> Bool {
        XenHostProbe.probe().canRunSessions
    }

    /// The replay backend of a recording made with `record`.
    public static func replayBackend(state: StateDirectory) throws -> XenReplayBackend {
        let toolstack = try openToolstack()
        let json = try state.read("replay.json")
        return XenReplayBackend(toolstack: toolstack, state: state, domainName: state.name, configJSON: json)
    }

    /// The domain template: $TT_XEN_TEMPLATE, /etc/xentt/, or etc/xentt/ of the package.
    public static func templatePath() throws -> FilePath {
        var candidates: [String] = []
        if let e = getenv("TT_XEN_TEMPLATE") { candidates.append(String(cString: e)) }
        candidates.append("/etc/xentt/" + XenDomainTemplate.fileName)
        for root in TTConfiguration.packageRootCandidates() {
            candidates.append(root.appending("etc/xentt/" + XenDomainTemplate.fileName).string)
        }
        for c in candidates where access(c, R_OK) == 0 { return FilePath(c) }
        throw XenConfigError("the Xen domain template \(XenDomainTemplate.fileName) was not found (looked at \(candidates.joined(separator: ", ")))")
    }

    /// Write the record and replay configurations (xl text for people, libxl JSON for
    /// creation) into the state directory, both from the one template.
    public static func writeConfigurations(_ parameters: XenDomainParameters, template: XenDomainTemplate,
                                           into state: StateDirectory) throws -> (record: XenDomainConfig, replay: XenDomainConfig) {
        var p = parameters
        p.stateDirectory = p.stateDirectory ?? state.path
        let record = try template.render(p, role: .record)
        let replay = try template.render(p, role: .replay)
        try state.write("record.cfg", record.xlText)
        try state.write("record.json", record.json)
        try state.write("replay.cfg", replay.xlText)
        try state.write("replay.json", replay.json)
        try state.write("backend", "xen\n")
        return (record, replay)
    }

    public struct RecordSummary: Equatable, Sendable {
        public var domid: XenDomainID
        public var ending: XenShutdownReason?
        /// A signal stopped the recording (the domain was destroyed, the state kept).
        public var signal: Int32
    }

    /// Record a run: create the record domain (paused, from record.json), let it run
    /// until it shuts down, then destroy it. A signal destroys it and keeps the state.
    public static func record(state: StateDirectory, config: XenDomainConfig, toolstack: XenToolstack,
                              clock: XenClock = MonotonicClock(), startTimeout: Double = 30) throws -> RecordSummary {
        if let existing = try toolstack.findDomain(named: config.name) {
            throw XenError.domainExists(config.name, existing)
        }
        let id = try toolstack.createDomain(configJSON: config.json)
        try state.write("domid", "\(id.rawValue)\n")
        func cleanUp() {
            try? toolstack.destroyDomain(id)
            state.remove("domid")
        }
        do {
            try toolstack.unpauseDomain(id)
            let deadline = clock.now() + startTimeout
            var ending: XenShutdownReason?
            var started = false
            while true {
                if SignalWatcher.pending != 0 {
                    cleanUp()
                    return RecordSummary(domid: id, ending: nil, signal: SignalWatcher.pending)
                }
                guard let info = try toolstack.domainInfo(id) else { break }
                if let reason = info.shutdown { ending = reason; break }
                if info.isDying { break }
                if info.isActive { started = true }
                if !started && clock.now() > deadline {
                    throw XenError.timedOut("after \(Int(startTimeout)) s waiting for \(id) to run")
                }
                clock.sleep(seconds: 0.2)
            }
            cleanUp()
            if ending == .crash { throw XenError.domainEnded(id, .crash) }
            return RecordSummary(domid: id, ending: ending, signal: 0)
        } catch {
            cleanUp()
            throw error
        }
    }
}
