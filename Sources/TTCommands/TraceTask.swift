import ArgumentParser
import BTS
import Symbolize
import SystemPackage
import TTSystem
import XenBackend
import QEMUBackend
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `tt trace-task`: the branch trace between two locations of a replay.
struct TraceTaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace-task",
        abstract: "Capture the branch trace between two locations of a replay, exactly.",
        discussion: """
            Runs the replay (a live one of NAME, started by tt replay, or a new one that is \
            killed afterwards) to the start location, switches branch tracing on, runs to the \
            end location and switches it off. The branch records go into the replay log \
            STATEDIR/trace.ttlog as hardware-branch entries (with landmark, trace-on/off and \
            session start/end entries around them); the records numbered c_s+1 … c_e, where \
            (eip_s, c_s) and (eip_e, c_e) are the landmarks landed on, are extracted into OUT.

            A start without a branch count is its symbol's first execution in the replay; an \
            end without one, its first execution after the start; WHERE#N the N-th since the \
            replay began; WHERE:brctr[:cx] that exact point.

            OUT is written as OUT.partial and renamed when complete: after an error or a \
            signal, the records captured so far are in OUT.partial, the exit status is \
            non-zero, no VM of this command is left running, and a live replay that was \
            used stays alive, paused where it stopped.
            """)

    @Flag(name: .customShort("d"), help: "Debug output (QEMU protocol steps, extraction counts).")
    var debug = false
    @Option(name: .customLong("start"), help: ArgumentHelp("Where tracing starts: WHERE[:brctr[:cx]] or WHERE#N.", valueName: "LOC"))
    var startText: String?
    @Option(name: .customLong("end"), help: ArgumentHelp("Where tracing ends: WHERE[:brctr[:cx]] or WHERE#N.", valueName: "LOC"))
    var endText: String?
    @Option(name: .customShort("o"), help: ArgumentHelp("Output BTS file (default: STATEDIR/trace.bts).", valueName: "OUT"))
    var output: String?
    @Flag(name: .customShort("x"), help: "Write an extended BTS file (magic record, branch counter in each record).")
    var extended = false
    @Option(help: ArgumentHelp("Symbol file for printing the trace (default: the recording's symbol file).", valueName: "FILE"))
    var symbols: String?
    @Option(help: ArgumentHelp("Print the trace (GDB style) when it has at most N records; otherwise print the bts-dump command. 0: never.", valueName: "N"))
    var printLimit: Int = 2000
    @Option(help: ArgumentHelp("Hypervisor: xen or qemu (default: the one the recording was made with).", valueName: "xen|qemu|auto"))
    var backend: BackendChoice?
    @Option(help: ArgumentHelp("Trace with up to N replays at once: the window is split at the recording's indexed checkpoints (tt index; an end given as WHERE:brctr[:cx]), the seams checked; the output is the same as with 1.", valueName: "N"))
    var jobs: Int = 1
    @Option(help: ArgumentHelp("Write a plan of the window into DIR for a scheduler: the segments --jobs N would trace (one job each), a Slurm array script, a Kubernetes Indexed Job, a commands file; with --segment K, trace segment K of the plan in DIR.", valueName: "DIR"))
    var plan: String?
    @Option(help: ArgumentHelp("With --plan DIR: trace segment K (0…) of the plan into DIR/segment-K.ttlog.", valueName: "K"))
    var segment: Int?
    @Option(help: ArgumentHelp("Check the segments of the plan in DIR and join them into OUT (default DIR/trace.bts), as one job writes it.", valueName: "DIR"))
    var merge: String?
    @Option(help: ArgumentHelp("With --plan: how many segments the Kubernetes Job runs at once (default: all).", valueName: "P"))
    var parallelism: Int?
    @Option(help: ArgumentHelp("With --plan: the container image of the Kubernetes Job (holding tt and QEMU at the paths of this machine).", valueName: "IMAGE"))
    var image: String?
    @OptionGroup var divergence: DivergenceOptions
    @OptionGroup var state: OptionalStateOptions

    /// What the command line asks for: one trace, a plan, one segment of a plan, a merge.
    enum Mode { case trace, plan, segment, merge }
    var mode: Mode { merge != nil ? .merge : segment != nil ? .segment : plan != nil ? .plan : .trace }

    func validate() throws {
        guard printLimit >= 0 else { throw ValidationError("--print-limit must be ≥ 0") }
        let maxJobs = mode == .plan ? TracePlan.maxSegments : StateFile.maxJobs
        guard (1...maxJobs).contains(jobs) else { throw ValidationError("--jobs must be 1…\(maxJobs)\(mode == .plan ? " with --plan" : "")") }
        func absent(_ given: [(String, Bool)], _ why: String) throws {
            if let (flag, _) = given.first(where: { $0.1 }) { throw ValidationError("\(flag) \(why)") }
        }
        let window = [("--start", startText != nil), ("--end", endText != nil), ("NAME", state.name != nil), ("-s", state.stateDirectory != nil)]
        let planOnly = [("--parallelism", parallelism != nil), ("--image", image != nil)]
        switch mode {
        case .trace, .plan:
            guard startText != nil else { throw ValidationError("Missing expected argument '--start <LOC>'") }
            guard endText != nil else { throw ValidationError("Missing expected argument '--end <LOC>'") }
            guard state.name != nil else { throw ValidationError("Missing expected argument '<name>'") }
            if mode == .plan { try absent([("-o", output != nil), ("-x", extended)], "is given to --merge, not to --plan") }
            else { try absent(planOnly, "goes with --plan") }
        case .segment:
            guard plan != nil else { throw ValidationError("--segment K needs --plan DIR (the plan it is a segment of)") }
            guard segment! >= 0 else { throw ValidationError("--segment must be ≥ 0") }
            try absent(window + planOnly + [("-o", output != nil), ("-x", extended), ("--merge", merge != nil), ("--jobs", jobs != 1)],
                       "is not used with --segment: the plan says what to trace")
        case .merge:
            try absent(window + planOnly + [("--plan", plan != nil), ("--segment", segment != nil), ("--jobs", jobs != 1)],
                       "is not used with --merge: the plan in DIR says what was traced")
        }
        if let parallelism, parallelism < 1 { throw ValidationError("--parallelism must be ≥ 1") }
        if let image, image.isEmpty || image.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw ValidationError("--image: empty or with control characters")
        }
    }

    func run() throws {
        switch mode {
        case .trace: try trace()
        case .plan: try makePlan()
        case .segment: try traceSegment()
        case .merge: try mergeSegments()
        }
    }

    /// The window's locations (syntax, then symbols of the recording).
    func window(_ recording: RecordingSymbols) throws -> (start: ResolvedLocation, end: ResolvedLocation) {
        let start = try Location(parsing: startText!).resolved(recording.address(ofSymbol:))
        let end = try Location(parsing: endText!).resolved(recording.address(ofSymbol:))
        if case .callReturn = start.condition {
            throw ValidationError("--start return: 'return' can only end a trace (the return of the call the start enters)")
        }
        if case .callReturn = end.condition { try recording.requireFunctionEntry(start.address, for: "the start \(start.text) at") }
        return (start, end)
    }

    private func trace() throws {
        // Syntax first, before touching anything.
        if backend == .xen { try XenSessions.requireAvailable() }
        _ = try Location(parsing: startText!)
        _ = try Location(parsing: endText!)
        let scope = try SessionScope(state: try state.resolve(), debug: debug, choice: backend)
        divergence.apply(to: scope.session)
        try scope.run { scope in
            let dir = scope.state
            let recording = RecordingSymbols(dir)
            let (start, end) = try window(recording)
            let out = output.map { FilePath($0) } ?? dir.file(StateFile.traceOutput)
            let session = scope.session
            let wordSize = recording.elfWordSize ?? 64
            let task = TraceTask(session: session, start: start, end: end,
                                 logPath: dir.file(StateFile.traceLog), guestWordSize: wordSize)
            task.jobs = jobs
            if debug { task.debug = { printError("tt: trace-task: \($0)") } }
            // OUT is written as the records are traced (every segment into its place). Before
            // running anything, InPlace checks that OUT is new or a regular file in a directory.
            let inPlace = try TraceTaskOutput.InPlace(out: out, extended: extended)
            task.output = inPlace
            // OUT.partial stays only when something was traced into it.
            var traced = false
            defer { if !traced { inPlace.remove() } }
            if jobs > 1 {
                let debug = self.debug
                task.makeWorker = { k, cancellation in try Self.worker(k, of: scope, cancellation: cancellation, debug: debug) }
                task.disposeWorker = { worker, k in
                    try? worker.destroy()
                    if let dir = try? Self.workerDirectory(k, of: dir) { _ = try? StateOwnership.remove(dir) }
                }
                // The workers boot beside this command's replay (when the window is exact).
                try task.startWorkers()
            }
            try scope.attachOrBoot()
            task.vmEndsWithTask = scope.bootedVM
            let progress = ProgressLine()
            if isatty(2) != 0 {
                task.progress = { phase, brctr in
                    let target = phase == .tracing ? targetBrctr(end) : phase == .toStart ? targetBrctr(start) : nil
                    progress.reporter("trace-task: \(phase.rawValue)", target: target)?(brctr)
                }
            }
            let window: TraceTask.Window
            do {
                window = try task.run()
                traced = true
                progress.end()
            } catch let failure as TraceTask.Incomplete {
                progress.end()
                // The records traced in place may have gaps (segments cut short): OUT.partial
                // is written again from the log, which keeps what was traced in order.
                traced = failure.window.traced
                inPlace.discard()
                if let r = try? TraceTaskOutput.write(failure.window, to: out, extended: extended) {
                    printError("tt: trace-task incomplete: \(r.summary.records) records captured before the failure are in \(r.path) (partial)")
                }
                throw failure
            }
            let written = try inPlace.commit(records: window.records)
            let s = window.start!, e = window.end!
            let range = window.brctrRange.map { "brctr \($0.lowerBound)…\($0.upperBound)" } ?? "empty"
            printLine("tt: trace-task \(dir.name): \(window.records) records, \(range)")
            printLine("  start \(start.text): landed at \(session.describe(s))")
            printLine("  end   \(end.text): landed at \(session.describe(e))")
            printLine("  output \(written) (\(extended ? "extended" : "raw")); replay log \(window.logPath)")
            if jobs > 1 { printLine("  traced in \(task.segments) segment\(task.segments == 1 ? "" : "s") at once\(task.segments == 1 ? " (no indexed checkpoint inside the window, or its end has no branch count)" : ", cut at indexed checkpoints")") }
            try printTrace(written, records: window.records, recording: recording)
        }
    }

    /// Worker k's state directory: STATEDIR/jobK, holding hard links to the recording's
    /// files and the index (a replay VM's sockets, pid and images are per directory).
    static func workerDirectory(_ k: Int, of dir: StateDirectory) throws -> StateDirectory {
        try StateDirectory(name: dir.name, explicit: dir.file(StateFile.jobDirectory(k)).string, base: "/")
    }

    /// A replay of the same recording in worker k's directory, booted, at its start.
    static func worker(_ k: Int, of scope: SessionScope, cancellation: Cancellation, debug: Bool) throws -> ReplaySession {
        let dir = try workerDirectory(k, of: scope.state)
        if dir.exists { _ = try StateOwnership.remove(dir) }  // left by a command that died
        return try replay(in: dir, of: scope.state, cpu: CPUPlacement.cpu(forReplay: k), name: "\(dir.name) job \(k)", cancellation: cancellation,
                          policy: scope.session.divergencePolicy, debug: debug)
    }

    /// A replay of the recording in `recording` booted in `dir` (created here, the
    /// recording's files linked in; its own sockets, pid and images), at its start, its VM
    /// on `cpu`.
    static func replay(in dir: StateDirectory, of recording: StateDirectory, cpu: Int32?, name: String, cancellation: Cancellation,
                       policy: DivergencePolicy, debug: Bool) throws -> ReplaySession {
        try dir.create()
        for f in StateFile.recordingForReplay where recording.fileExists(f) { try recording.link(f, into: dir) }
        let backend = QEMUReplayBackend(state: dir)
        backend.debug = debug
        backend.cpu = cpu
        let session = ReplaySession(name: name, backend: backend, timeline: Timeline(state: dir), cancellation: cancellation)
        session.divergencePolicy = policy
        // Its VM ends with its segment: a snapshot of where it lands would never be used.
        session.checkpointsLandings = false
        try session.start(paused: true)
        return session
    }

    /// The trace in GDB style (bts-dump -G's formatting), or the command that prints it.
    func printTrace(_ path: FilePath, records: UInt64, recording: RecordingSymbols) throws {
        guard records > 0 else { return }
        // --symbols, else the recording's symbol file if it is an ELF file (a bzImage is not).
        let symbolPath = symbols ?? (recording.elfWordSize == nil ? nil : recording.path)
        var file: SymbolFile? = nil
        if records <= UInt64(printLimit), let symbolPath {
            file = symbols == nil ? try recording.file ?? SymbolFile(path: FilePath(symbolPath)) : try SymbolFile(path: FilePath(symbolPath))
        }
        guard records <= UInt64(printLimit), let file else {
            let options = symbolPath.map { " --symbols \($0) -G" } ?? " --symbols VMLINUX -G"
            printLine("  print it with: bts-dump\(options) \(path)")
            return
        }
        let out = OutputBuffer(fd: 1, capacity: 1 << 20)
        let symbolic = SymbolicAddresses(symbolizer: Symbolizer(maps: [SymbolMapEntry(range: 0...UInt64.max, file: file)]), style: .gdb)
        var dumper = BranchDump()
        dumper.annotate = { a, out in try symbolic.write(a, to: out) }
        try dumper.dump(try BTSFile(path: path), to: out)
        try out.flush()
    }

}
