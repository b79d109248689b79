import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Entry points for the session commands: open the Xen backend (or refuse in one line),
/// record a run in a Xen domain, decide `--backend auto`.
public enum XenSessions {
    /// Open every Xen handle and require the time-travel extensions. Throws the one-line
    /// refusal (exit status 69): not under Xen / not dom0 / not root, or stock Xen.
    /// `requireTimeTravel: false` (live sessions): a reachable hypervisor is enough.
    public static func openToolstack(requireTimeTravel: Bool = true) throws -> LibXenToolstack {
        let toolstack = try LibXenToolstack()
        guard toolstack.hasTimeTravel || !requireTimeTravel else {
            let version = XenLibraries.libxenctrlFile.flatMap(XenLibraries.version(fromLibraryFile:)).map { "libxenctrl \($0)" } ?? "libxenctrl"
            let xen = toolstack.hypervisorVersion.map { "Xen \($0)" } ?? "the hypervisor"
            throw XenError.noTimeTravel(detail: "\(xen) has no time travel (stock Xen: \(version) lacks \(XenTimeTravelExtensions.addProbe)), so it can neither record nor replay (a live session can: tt record --backend xen --live)")
        }
        return toolstack
    }

    /// Check, before touching any state, that Xen sessions can run here: a reachable
    /// hypervisor (not under Xen, not dom0, not root: the one-line refusal). Whether a
    /// recording can be replayed (time travel) is decided per state directory.
    public static func requireAvailable() throws {
        _ = try openToolstack(requireTimeTravel: false)
    }

    /// Whether `state` holds a live session (`tt record --backend xen --live`), not a recording.
    public static func isLive(_ state: StateDirectory) -> Bool { state.fileExists(StateFile.live) }

    /// `--backend auto`: Xen when a hypervisor with time travel is reachable, QEMU
    /// otherwise (on stock Xen only QEMU can record and replay).
    public static func autoSelectsXen() -> Bool {
        XenHostProbe.probe().canRunSessions
    }

    /// The replay backend of a recording made with `record`.
    /// A live session's directory gives a live backend (no time travel needed).
    public static func replayBackend(state: StateDirectory) throws -> XenReplayBackend {
        let live = isLive(state)
        let toolstack = try openToolstack(requireTimeTravel: !live)
        let json = try state.read(StateFile.replayJSON)
        return XenReplayBackend(toolstack: toolstack, state: state, domainName: state.name, configJSON: json, live: live)
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
        try state.write(StateFile.recordConfig, record.xlText)
        try state.write(StateFile.recordJSON, record.json)
        try state.write(StateFile.replayConfig, replay.xlText)
        try state.write(StateFile.replayJSON, replay.json)
        try state.write(StateFile.backend, BackendKind.xen.rawValue + "\n")
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
                              cancellation: Cancellation = Cancellation(),
                              clock: XenClock = MonotonicClock(), startTimeout: Double = 30) throws -> RecordSummary {
        if let existing = try toolstack.findDomain(named: config.name) {
            throw XenError.domainExists(config.name, existing)
        }
        let id = try toolstack.createDomain(configJSON: config.json)
        try state.write(StateFile.domid, "\(id.rawValue)\n")
        func cleanUp() {
            try? toolstack.destroyDomain(id)
            state.remove(StateFile.domid)
        }
        do {
            try toolstack.unpauseDomain(id)
            let deadline = clock.now() + startTimeout
            var ending: XenShutdownReason?
            var started = false
            while true {
                if cancellation.isCancelled {
                    cleanUp()
                    return RecordSummary(domid: id, ending: nil, signal: cancellation.signal == 0 ? SIGINT : cancellation.signal)
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

/// `tt record --backend xen`: the record domain from etc/xentt's template, through libxl.
public final class XenRecorder: Recorder {
    public let kind = BackendKind.xen
    let toolstack: LibXenToolstack
    let guestType: XenGuestType
    /// Prepare a live session (configurations only; nothing runs, nothing is recorded).
    let live: Bool

    /// Opens the Xen handles and requires time travel (the one-line refusal otherwise);
    /// `live`: a reachable hypervisor is enough.
    public init(guestType: XenGuestType = .pv, live: Bool = false) throws {
        toolstack = try XenSessions.openToolstack(requireTimeTravel: !live)
        self.guestType = guestType
        self.live = live
    }

    /// No progress: a Xen recording has no instruction count to show.
    public func record(_ request: RecordingRequest, into state: StateDirectory,
                       cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> RecordingOutcome {
        guard !request.detach else { throw XenConfigError("--detach is not available with --backend xen") }
        var parameters = XenDomainParameters(name: state.name)
        parameters.type = guestType
        parameters.kernel = request.kernel
        parameters.ramdisk = request.initrd
        parameters.commandLine = request.append
        parameters.memoryMB = request.memoryMB
        parameters.stateDirectory = state.path
        let template = try XenDomainTemplate.load(from: XenSessions.templatePath())
        let configs = try XenSessions.writeConfigurations(parameters, template: template, into: state)
        if live {
            try state.write(StateFile.live, "\(guestType.rawValue)\n")
            return .finished(summary: "live \(guestType.rawValue) session prepared, nothing recorded (tt replay -p creates the domain paused; live: no going back, no branch counter)")
        }
        let summary = try XenSessions.record(state: state, config: configs.record, toolstack: toolstack,
                                             cancellation: cancellation)
        if summary.signal != 0 { return .interrupted(signal: summary.signal) }
        return .finished(summary: "Xen \(summary.domid), \(summary.ending.map { "\($0)" } ?? "destroyed")")
    }

    public func stopRecording(in state: StateDirectory) throws -> Bool {
        guard let domid = try toolstack.findDomain(named: state.name) else { return false }
        try toolstack.destroyDomain(domid)
        state.remove(StateFile.domid)
        return true
    }

    public func runningVM(in state: StateDirectory) -> String? {
        (try? toolstack.findDomain(named: state.name))?.map { "Xen \($0)" }
    }
}
