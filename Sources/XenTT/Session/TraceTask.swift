import SystemPackage
import TTSystem

/// The capture half of `tt trace-task`: drive a replay session from a start location to an
/// end location with branch tracing on between them, writing the session's replay log
/// (session start, a landmark at each end, trace on/off, the branch records as
/// hardware-branch entries, session end). The records in the log are then exactly the
/// taken transfers numbered c_s+1 … c_e, where (eip_s, c_s) and (eip_e, c_e) are the
/// landmarks the session landed on; `BTS.TraceTaskOutput` extracts them into a BTS file.
///
/// Location semantics (as the original's trace_task intended):
/// - a start without a branch count (`WHERE`) is WHERE's first execution in the replay;
/// - an end without one is WHERE's first execution after the start;
/// - `WHERE#N` is the N-th execution since the replay began (for the end, found by a
///   first pass and then reached again exactly, so tracing never has to go back);
/// - `WHERE:brctr[:cx]` is that exact point; an end before the start is an error.
///
/// The session must be active: whoever made it so (booted a VM, or attached to a live one)
/// decides its fate afterwards. On an error, tracing is switched off, so a VM left alive
/// never blocks on a full ring.
public final class TraceTask {
    public let session: ReplaySession
    public let start: ResolvedLocation
    public let end: ResolvedLocation
    /// The replay log this task writes (replaced if it exists).
    public let logPath: FilePath
    public let guestWordSize: UInt8
    /// Called with the live branch count while the replay runs (e.g. for a progress line).
    public var progress: ((_ phase: Phase, _ brctr: UInt64) -> Void)?
    /// Replays tracing at once (`--jobs`): with more than one, an end given exactly and a
    /// checkpoint index, the window is split at indexed checkpoints; segment 0 is traced
    /// here, segment j by a replay `makeWorker(j, cancellation)` returns (active, at its
    /// start, stopping when `cancellation` is cancelled), all at once, then their records
    /// are appended in order. Otherwise one replay traces it all.
    public var jobs = 1
    public var makeWorker: ((Int, Cancellation) throws -> ReplaySession)?
    /// Called with each worker when its segment is done (or failed): end its VM.
    public var disposeWorker: ((ReplaySession, Int) -> Void)?
    /// The session's VM ends with the command: its landings get no checkpoint (nothing comes
    /// back to them), and after a split run it is not brought to the end (a replay of every
    /// later segment again, untraced, after its own).
    public var vmEndsWithTask = false
    /// Debug lines (`-d`): when each segment of a split run was done.
    public var debug: ((String) -> Void)?
    /// Where the records also go as they are traced (OUT, in place); nil: the log only.
    public var output: TraceOutput?
    /// How many segments the last run traced at once (1: no split).
    public private(set) var segments = 1

    public enum Phase: String, Sendable { case resolvingEnd = "finding the end", toStart = "running to the start", tracing }

    public init(session: ReplaySession, start: ResolvedLocation, end: ResolvedLocation,
                logPath: FilePath, guestWordSize: UInt8 = 64) {
        self.session = session
        self.start = start
        self.end = end
        self.logPath = logPath
        self.guestWordSize = guestWordSize
    }

    /// What a capture produced. When `complete` is false the run stopped early (error or
    /// signal) and the records cover c_s+1 … `lastBrctr` only.
    public struct Window: Sendable {
        /// Where the session landed at the start (nil: it never got there).
        public var start: Position?
        /// Where it landed at the end (nil unless complete).
        public var end: Position?
        public var logPath: FilePath
        /// Records written to the log.
        public var records: UInt64
        /// Branch counters of the first and last record written.
        public var brctrRange: ClosedRange<UInt64>?
        public var complete: Bool
        /// Whether tracing was switched on (there is something to extract, maybe nothing).
        public var traced: Bool
    }

    /// Failure of a capture, with what was captured up to it.
    public struct Incomplete: Error, CustomStringConvertible, ExitStatusProviding {
        public let underlying: Error
        public let window: Window
        public var description: String { String(describing: underlying) }
        public var exitStatus: Int32 { (underlying as? ExitStatusProviding)?.exitStatus ?? ExitStatus.failure }
    }

    public struct BadWindow: Error, CustomStringConvertible, ExitStatusProviding {
        public let message: String
        public init(message: String) { self.message = message }
        public var description: String { message }
        public var exitStatus: Int32 { ExitStatus.dataError }
    }

    /// An internal check failed: the trace would not be exact.
    public struct Inexact: Error, CustomStringConvertible, ExitStatusProviding {
        public let message: String
        public init(message: String) { self.message = message }
        public var description: String { "internal error, trace not exact: \(message)" }
        public var exitStatus: Int32 { ExitStatus.failure }
    }

    /// The log, created (an old one replaced) by `startWorkers` or `run`.
    private var log: ReplayLogWriter?

    private func openLog() throws -> ReplayLogWriter {
        if let log { return log }
        SafeFiles.removeFreeingLater(logPath)
        let w = try ReplayLogWriter(creating: logPath, header: ReplayLogHeader(
            producer: "tt trace-task (\(session.backend.name))", guestWordSize: guestWordSize, vcpuCount: 1))
        log = w
        return w
    }

    /// The later segments' sinks whose log regions the log took over, in order.
    private var adopted: [ReplayLogBranchSink] = []

    /// The counter of the last record captured: of the last segment taken over, else of segment 0.
    private func capturedLast(_ sink: ReplayLogBranchSink?) -> UInt64? {
        adopted.last(where: { $0.lastBrctr != nil })?.lastBrctr ?? sink?.lastBrctr
    }

    /// Run the task. Throws `Incomplete` (wrapping the cause) when it could not finish.
    public func run() throws -> Window {
        var window = Window(start: nil, end: nil, logPath: logPath, records: 0, brctrRange: nil, complete: false, traced: false)
        var writer: ReplayLogWriter?
        var sink: ReplayLogBranchSink?
        // Segment 0's sink: the log's, and OUT's with an output.
        var segmentSink: BranchSink?
        var tracing = false
        let cancellation = session.cancellation
        session.guestWordSize = guestWordSize
        if vmEndsWithTask { session.checkpointsLandings = false }
        // The last CPU state stamped into the log (stamps never go backwards).
        var stamped = CPUState()
        // The session-start entry is written at the start landmark: on a live replay the
        // run may first go back in time to reach it, and the log's counters only go up.
        var started = false
        // A split run's workers, from `startWorkers` or started after the landing.
        var split = early
        early = nil
        adopted = []
        // The log is closed when the run ends (its lock released), however it ends.
        defer { log = nil }
        defer { if let split { Self.release(split.workers) } }

        func beginLog(_ w: ReplayLogWriter, _ cpu: CPUState) throws {
            try appendText(w, .sessionStart, info: 1, cpu: cpu, session.name)
            started = true
        }

        func finishLog(_ info: UInt32, _ text: String) {
            guard let w = writer else { return }
            // What later segments wrote beyond the last one taken over is not kept.
            try? w.discardBeyond()
            var cpu = stamped
            if let p = try? session.position(), p.landmark.brctr >= stamped.brctr { cpu = self.cpu(p) }
            if let last = capturedLast(sink), last > cpu.brctr { cpu = CPUState(ip: 0, brctr: last) }
            if !started { try? beginLog(w, cpu) }
            try? appendText(w, .sessionEnd, info: info, cpu: cpu, text)
            try? w.flush()
        }

        /// What the sink and the segments taken over after it wrote, into the window.
        func takeCounts(_ sk: ReplayLogBranchSink) {
            window.records = ([sk] + adopted).reduce(0) { $0 + $1.recordCount }
            if let last = capturedLast(sk) { window.brctrRange = (last - window.records + 1)...last }
        }

        do {
            try cancellation.check()
            let w = try openLog()
            writer = w

            // An end given as the N-th execution is found first, then reached exactly.
            var endTarget = end
            if case .occurrence = end.condition {
                let found = try session.runUntil(end, progress: progress.map { p in { p(.resolvingEnd, $0) } })
                endTarget = ResolvedLocation(address: end.address,
                                             condition: .exact(brctr: found.landmark.brctr, cx: found.landmark.cx),
                                             text: end.text)
            }
            // A start without a count is the first execution since the replay began.
            var startTarget = start
            if case .next = start.condition {
                startTarget = ResolvedLocation(address: start.address, condition: .occurrence(1), text: start.text)
            }
            let s = try session.runUntil(startTarget, progress: progress.map { p in { p(.toStart, $0) } })
            window.start = s
            stamped = cpu(s)
            try beginLog(w, stamped)
            try cancellation.check()
            if case .exact(let b, let cx) = endTarget.condition, Timeline.isBefore(address: endTarget.address, brctr: b, cx: cx, s.landmark) {
                throw BadWindow(message: "the end \(end.text) (\(Landmark(ip: endTarget.address, brctr: b, cx: cx ?? 0))) lies before the start \(start.text), which landed at \(s.landmark)")
            }
            try appendText(w, .landmark, info: 0, cpu: cpu(s), start.text)
            try w.append(type: .traceOn, info: BranchSource.tcgPlugin.rawValue, domid: 0, vcpu: 0, cpu: cpu(s),
                         payload: UnsafeRawBufferPointer(start: nil, count: 0))
            // The prefix is what the segments' places were computed from.
            let prefix = prefixLayout(w)
            guard w.byteCount == prefix.bytes, w.entryCount == prefix.entries else {
                throw Inexact(message: "the log's first entries end at byte \(w.byteCount), entry \(w.entryCount); computed: \(prefix.bytes), \(prefix.entries)")
            }
            let sk = ReplayLogBranchSink(writer: w, vcpu: 0, source: .tcgPlugin, after: s.landmark.brctr)
            sink = sk
            let both: BranchSink = try output.map { BranchSinkPair(sk, try $0.segmentSink(recordIndex: 0)) } ?? sk
            segmentSink = both
            try session.setTracing(both)
            tracing = true
            window.traced = true
            let e: Position
            if let early = split, let bad = early.cut.first(where: { c in c.icount <= s.icount ?? .max }) {
                throw Inexact(message: "the cut at icount \(bad.icount), made before the start was reached, is not after its landing at icount \(s.icount.map(String.init) ?? "?")")
            }
            if let early = split, early.places[0].after != s.landmark.brctr {
                throw Inexact(message: "the segments were placed for a start at brctr \(early.places[0].after), it landed at \(s.landmark)")
            }
            if split == nil, case .exact(let endBrctr, _) = endTarget.condition {
                split = try startWorkers(after: s, endBrctr: endBrctr)
            }
            if let (cut, workers, places) = split {
                split = nil
                e = try runSplit(cut, endTarget: endTarget, sink: both, logSink: sk, workers: workers, places: places)
            } else {
                e = try Self.traceSegment(0, of: [], in: session, endTarget: endTarget, sink: both,
                                          progress: progress.map { p in { p(.tracing, $0) } })!
                try both.finish()
            }
            tracing = false
            takeCounts(sk)
            // The exactness check: the records are c_s+1 … c_e, each once, in order
            // (the sink already refused gaps and repeats).
            let expected = e.landmark.brctr - s.landmark.brctr
            guard window.records == expected, expected == 0 || capturedLast(sk) == e.landmark.brctr else {
                throw Inexact(message: "captured \(window.records) records ending at brctr \(capturedLast(sk).map(String.init) ?? "-"), but the window \(s.landmark) … \(e.landmark) has \(expected)")
            }
            try w.append(type: .traceOff, info: BranchSource.tcgPlugin.rawValue, domid: 0, vcpu: 0, cpu: cpu(e),
                         payload: UnsafeRawBufferPointer(start: nil, count: 0))
            try appendText(w, .landmark, info: 1, cpu: cpu(e), end.text)
            try appendText(w, .sessionEnd, info: 1, cpu: cpu(e), "complete")
            // Written through (flush), not fsync'd: the log is this run's working file, and
            // an fsync of a long trace's megabytes would cost more than the trace itself.
            try w.flush()
            writer = nil
            window.end = e
            window.complete = true
        } catch {
            // Stop tracing so that a VM left alive never blocks on a full ring.
            if tracing, session.state == .active { try? session.setTracing(nil) }
            try? segmentSink?.finish()
            // No worker writes into the log any more before it is finished here.
            if let workers = split?.workers { Self.release(workers) }
            split = nil
            if let sk = sink { takeCounts(sk) }
            finishLog(2, String(describing: error))
            throw Incomplete(underlying: error, window: window)
        }
        return window
    }

    /// Host seconds a trace costs per branch record on top of replaying (the plugin's
    /// callback, the ring, the log): small beside the replay itself. Measured on the Linux
    /// boot, a 54.8 M-record window traced in about 24.6 s where the index pass had
    /// replayed it in 24 s (0.01 µs a record), and two segments of one cut gave 0.01 and
    /// 0.1 µs; 0.2 µs, from a single noisy run, cut a window 11.7 s against 7.1 s.
    static let tracingSecondsPerRecord = 0.03e-6

    /// Up to `jobs - 1` resumable indexed checkpoints after the start and before the end's
    /// branch count (and icount, when known): where the window is cut (`--jobs`, and
    /// `--plan`'s segments). After the start is after its icount or, before the start is
    /// reached (`startWorkers()`: no icount yet), after its branch count (a checkpoint with
    /// the same branch count may lie on either side of it, so none such is taken). Each is
    /// the candidate nearest to an equal share of the window's estimated cost: the index
    /// pass's replay seconds up to that point plus `tracingSecondsPerRecord` per record.
    /// Without replay times (an index of format 1) the cost is the branch count alone.
    public static func splitPoints(_ timeline: Timeline, jobs: Int, after start: Position, beforeBrctr endBrctr: UInt64,
                                   endICount: UInt64? = nil) -> [IndexedCheckpoint] {
        guard let index = timeline.index else { return [] }
        let here = start.icount
        let candidates = index.checkpoints.filter { c in
            !index.unresumable.contains(c.icount) && c.fingerprint.landmark.brctr < endBrctr && c.icount < (endICount ?? .max)
                && (here.map { c.icount > $0 } ?? (c.fingerprint.landmark.brctr > start.landmark.brctr)) && !c.backendState.isEmpty
        }
        let k = min(jobs - 1, candidates.count)
        guard k > 0 else { return [] }
        // Where the replay time is known, it dominates: a Linux boot replays 200 times fewer
        // instructions a second in its `rdtsc` delay loops than in its decompressor, and
        // branch density varies too (cutting by branch counts left one segment 23 s of
        // replay and the other 5 s).
        func cost(icount: UInt64?, brctr: UInt64) -> Double {
            let records = Double(brctr) * tracingSecondsPerRecord
            guard let replay = index.replaySeconds(toICount: icount, brctr: brctr) else { return Double(brctr) }
            return replay + records
        }
        let first = cost(icount: here, brctr: start.landmark.brctr)
        let last = max(first, cost(icount: endICount, brctr: endBrctr))
        let costs = candidates.map { cost(icount: $0.icount, brctr: $0.fingerprint.landmark.brctr) }
        var picks: [Int] = []
        for j in 1...k {
            let ideal = first + (last - first) * Double(j) / Double(k + 1)
            let later = candidates.indices.filter { c in picks.last.map { c > $0 } ?? true }
            guard let best = later.min(by: { abs(costs[$0] - ideal) < abs(costs[$1] - ideal) }) else { break }
            picks.append(best)
        }
        return picks.map { candidates[$0] }
    }

    /// Segment `j` of a window cut at `splits` (none: one segment), traced into `sink` by
    /// `session`. A seam is the plugin's raw count at the checkpoint (its first backend
    /// word): the segment before records up to it, the one after from the next — both see
    /// only transfers that executed, whatever is pending at the stop. Segment 0 starts at
    /// the start's landing, where `session` must stand with tracing on into `sink`; segment
    /// j > 0 at the indexed checkpoint `splits[j-1]`, restored here (its count checked).
    /// Each but the last ends at the next seam (its fingerprint and count checked) and
    /// returns nil; the last runs to `endTarget` and returns its landing. Tracing is off after.
    public static func traceSegment(_ j: Int, of splits: [IndexedCheckpoint], in session: ReplaySession,
                                    endTarget: ResolvedLocation, sink: BranchSink,
                                    progress: ((UInt64) -> Void)? = nil) throws -> Position? {
        precondition(j >= 0 && j <= splits.count)
        if j > 0 {
            let from = splits[j - 1]
            try session.restoreIndexed(from.icount)
            let start = try session.setRawTracing(sink)
            guard start == from.backendState[0] else {
                throw Inexact(message: "segment \(j) starts at count \(start), the checkpoint's is \(from.backendState[0])")
            }
        }
        guard j < splits.count else {
            let landed = try session.runUntil(endTarget, progress: progress)
            try session.setTracing(nil)
            return landed
        }
        let to = splits[j]
        let p = try session.runToICount(to.icount, progress: progress)
        let here = try session.fingerprint(p)
        guard here == to.fingerprint else {
            throw Inexact(message: "segment \(j) stopped at \(here), the index has \(to.fingerprint)")
        }
        let raw = try session.setRawTracing(nil)
        guard raw == to.backendState[0] else {
            throw Inexact(message: "segment \(j) ends at count \(raw), the checkpoint's is \(to.backendState[0])")
        }
        return nil
    }

    /// Where segment j of a split window goes: the records after brctr `after`, `records`
    /// of them, from record `recordIndex` of the window on, into log entries from index
    /// `entryIndex` at byte `logOffset` (`ReplayLogBranchSink.layout` of the segments
    /// before it after the log's first entries).
    struct Placement {
        var after: UInt64
        var records: UInt64
        var recordIndex: UInt64
        var logOffset: UInt64
        var entryIndex: UInt64
    }

    /// The log's bytes and entries before the first record, as `run` writes them: the
    /// header's slot, the session start (the session's name), the start's landmark entry
    /// (its text) and trace-on.
    private func prefixLayout(_ w: ReplayLogWriter) -> (bytes: UInt64, entries: UInt64) {
        let slot = Int(w.header.slotSize)
        func size(_ text: String) -> UInt64 {
            UInt64(ReplayLogFormat.slotCount(payloadLength: Self.textPayload(text).count, slotSize: slot) * slot)
        }
        return (UInt64(slot) + size(session.name) + size(start.text) + size(""), 3)
    }

    /// The places of the segments of the window (s, e] cut at `cut` (seams: the
    /// checkpoints' raw counts).
    private func placements(cut: [IndexedCheckpoint], from s: UInt64, to e: UInt64, log w: ReplayLogWriter) throws -> [Placement] {
        let seams = [s] + cut.map { $0.backendState[0] } + [e]
        guard zip(seams, seams.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw Inexact(message: "the seams \(seams.map(String.init).joined(separator: ", ")) of the cut are not in order")
        }
        var (offset, index) = prefixLayout(w)
        var result: [Placement] = []
        for j in 0..<(seams.count - 1) {
            let n = seams[j + 1] - seams[j]
            result.append(Placement(after: seams[j], records: n, recordIndex: seams[j] - s, logOffset: offset, entryIndex: index))
            let size = ReplayLogBranchSink.layout(records: n, slotSize: Int(w.header.slotSize))
            offset += size.bytes
            index += size.entries
        }
        return result
    }

    /// What a worker's segment left: its log sink (the records it wrote into its region of
    /// the log, flushed, whatever happened), its landing at the end (the last segment), and
    /// why it stopped early, if it did.
    struct SegmentOutcome {
        var sink: ReplayLogBranchSink
        var end: Position?
        var failure: Error?
    }

    /// A `--jobs` worker: on a thread of its own, boots a replay (`makeWorker`), traces
    /// its segment into its region of the log (and its place in OUT) and ends the VM — on
    /// that one thread, because a VM dies with the thread that spawned it (`tt_spawn`'s
    /// PR_SET_PDEATHSIG). Given up (`release`) through a cancellation of its own, linked
    /// to the command's.
    final class Worker {
        let cancellation: Cancellation
        let outcome: BackgroundThread<SegmentOutcome>

        init(_ j: Int, of cut: [IndexedCheckpoint], task: TraceTask, makeWorker: @escaping (Int, Cancellation) throws -> ReplaySession,
             endTarget: ResolvedLocation, region: ReplayLogWriter, place: Placement) throws {
            let cancellation = Cancellation(linkedTo: task.session.cancellation)
            self.cancellation = cancellation
            let dispose = task.disposeWorker, debug = task.debug
            // Made here, on the command's thread: the writers are not shared across threads.
            let logSink = ReplayLogBranchSink(writer: region, vcpu: 0, source: .tcgPlugin, after: place.after)
            let sink: BranchSink = try task.output.map { BranchSinkPair(logSink, try $0.segmentSink(recordIndex: place.recordIndex)) } ?? logSink
            outcome = BackgroundThread {
                let worker = try makeWorker(j, cancellation)
                defer { dispose?(worker, j) }
                let t0 = monotonicSeconds()
                do {
                    let landed = try TraceTask.traceSegment(j, of: cut, in: worker, endTarget: endTarget, sink: sink)
                    try sink.finish()
                    try region.flush()
                    debug?("segment \(j): \(logSink.recordCount) records traced in \(Int((monotonicSeconds() - t0) * 1000)) ms")
                    return SegmentOutcome(sink: logSink, end: landed, failure: nil)
                } catch {
                    // What was traced is kept: the log may take it over.
                    try? sink.finish()
                    try? region.flush()
                    return SegmentOutcome(sink: logSink, end: nil, failure: error)
                }
            }
        }
    }

    /// Started by `startWorkers()` before this replay is booted, for `run`.
    private var early: (cut: [IndexedCheckpoint], workers: [Worker], places: [Placement])?

    /// Workers started for a run that never came (the command's own replay failed to
    /// boot) are given up with the task.
    deinit { if let early { Self.release(early.workers) } }

    /// With a start and an end given exactly (`WHERE:brctr[:cx]`), more than one job and a
    /// checkpoint index: cut the window now and start the workers, before this command's
    /// replay boots and lands at the start, so that every replay boots (QEMU's start and a
    /// snapshot load: 0.1–0.3 s each on the Linux guest) at once.
    /// Otherwise `run` cuts after landing. Call before `run`.
    public func startWorkers() throws {
        guard early == nil, case .exact(let b, let cx) = start.condition, case .exact(let endBrctr, _) = end.condition else { return }
        early = try startWorkers(after: Position(landmark: Landmark(ip: start.address, brctr: b, cx: cx ?? 0), icount: nil), endBrctr: endBrctr)
    }

    /// The cut after `start` (its icount unknown before landing), the segments' places and
    /// a worker started for each segment after the first; nil when there is no cut.
    private func startWorkers(after start: Position, endBrctr: UInt64) throws -> (cut: [IndexedCheckpoint], workers: [Worker], places: [Placement])? {
        guard jobs > 1, let makeWorker else { return nil }
        let cut = Self.splitPoints(session.timeline, jobs: jobs, after: start, beforeBrctr: endBrctr)
        guard !cut.isEmpty else { return nil }
        let w = try openLog()
        let places = try placements(cut: cut, from: start.landmark.brctr, to: endBrctr, log: w)
        let endTarget = end
        var workers: [Worker] = []
        do {
            for j in 1...cut.count {
                let region = try w.region(at: places[j].logOffset, entryIndex: places[j].entryIndex, after: places[j].after)
                workers.append(try Worker(j, of: cut, task: self, makeWorker: makeWorker, endTarget: endTarget, region: region, place: places[j]))
            }
        } catch {
            Self.release(workers)
            throw error
        }
        return (cut, workers, places)
    }

    /// Give workers up: cancel each and wait for its thread (its VM ended).
    private static func release(_ workers: [Worker]) {
        for w in workers { w.cancellation.cancel() }
        for w in workers { _ = w.outcome.result() }
    }

    /// The window cut at `splits`: segment 0 here (into `sink`: the log through `logSink`,
    /// and OUT), the others by `workers` at once (worker j traces segment j into its region
    /// of the log and its place in OUT). Then the log takes the regions over in order
    /// (each must begin where the one before ended): nothing is copied. After a failure,
    /// what was traced contiguously from the start is kept and the rest cut off.
    private func runSplit(_ splits: [IndexedCheckpoint], endTarget: ResolvedLocation, sink: BranchSink, logSink: ReplayLogBranchSink,
                          workers: [Worker], places: [Placement]) throws -> Position {
        precondition(workers.count == splits.count && places.count == splits.count + 1)
        segments = splits.count + 1
        let t0 = monotonicSeconds()
        let mine = Result {
            _ = try Self.traceSegment(0, of: splits, in: session, endTarget: endTarget, sink: sink)
            try sink.finish()
        }
        debug?("segment 0: \(logSink.recordCount) records traced in \(Int((monotonicSeconds() - t0) * 1000)) ms")
        if case .failure = mine { Self.release(workers) }
        // Every worker's thread is joined before anything is thrown.
        let parts = workers.map { $0.outcome.result() }
        try mine.get()
        guard logSink.recordCount == places[0].records else {
            throw Inexact(message: "segment 0 captured \(logSink.recordCount) records, its place holds \(places[0].records)")
        }
        var workerEnd: Position?
        for (k, part) in parts.enumerated() {
            let outcome = try part.get()
            try logSink.writer.adopt(outcome.sink.writer)
            adopted.append(outcome.sink)
            if let failure = outcome.failure { throw failure }
            guard outcome.sink.recordCount == places[k + 1].records else {
                throw Inexact(message: "segment \(k + 1) captured \(outcome.sink.recordCount) records, its place holds \(places[k + 1].records)")
            }
            workerEnd = outcome.end
        }
        guard let workerEnd else { throw Inexact(message: "the last segment did not land at the end") }
        // The last worker's landing was checked where it landed (a second, independent read).
        if vmEndsWithTask { return workerEnd }
        // This replay stands at the first seam: bring it to the end (untraced), where a
        // live replay is left.
        let e = try session.runUntil(endTarget, progress: progress.map { p in { p(.tracing, $0) } })
        guard e.landmark == workerEnd.landmark else {
            throw Inexact(message: "the end landed at \(workerEnd.landmark) in its segment but at \(e.landmark) here")
        }
        return e
    }

    private func cpu(_ p: Position) -> CPUState { Self.cpu(p.landmark) }

    static func cpu(_ l: Landmark) -> CPUState { CPUState(ip: l.ip, brctr: l.brctr, rcx: l.cx) }

    private func appendText(_ w: ReplayLogWriter, _ type: ReplayEventType, info: UInt32, cpu: CPUState, _ text: String) throws {
        try Self.appendText(w, type, info: info, cpu: cpu, text)
    }

    /// A text entry's payload: at most 4096 bytes of the text.
    static func textPayload(_ text: String) -> [UInt8] { Array(text.utf8.prefix(4096)) }

    /// A text entry (session start/end, landmark) of at most 4096 bytes.
    static func appendText(_ w: ReplayLogWriter, _ type: ReplayEventType, info: UInt32, cpu: CPUState, _ text: String) throws {
        var bytes = textPayload(text)
        try bytes.withUnsafeMutableBytes { try w.append(type: type, info: info, domid: 0, vcpu: 0, cpu: cpu, payload: UnsafeRawBufferPointer($0)) }
    }
}

#if canImport(Glibc)
import Glibc
#endif

