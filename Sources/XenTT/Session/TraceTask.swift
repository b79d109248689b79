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
    /// here, segment j by a replay `makeWorker(j)` returns (active, at its start), all at
    /// once, then their records are appended in order. Otherwise one replay traces it all.
    public var jobs = 1
    public var makeWorker: ((Int) throws -> ReplaySession)?
    /// Called with each worker when its segment is done (or failed): end its VM.
    public var disposeWorker: ((ReplaySession, Int) -> Void)?
    /// The session's VM ends with the command: its landings get no checkpoint (nothing comes
    /// back to them), and after a split run it is not brought to the end (a replay of every
    /// later segment again, untraced, after its own).
    public var vmEndsWithTask = false
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

    /// Run the task. Throws `Incomplete` (wrapping the cause) when it could not finish.
    public func run() throws -> Window {
        var window = Window(start: nil, end: nil, logPath: logPath, records: 0, brctrRange: nil, complete: false, traced: false)
        var writer: ReplayLogWriter?
        var sink: ReplayLogBranchSink?
        var tracing = false
        let backend = session.backend
        let cancellation = session.cancellation
        session.guestWordSize = guestWordSize
        if vmEndsWithTask { session.checkpointsLandings = false }
        // The last CPU state stamped into the log (stamps never go backwards).
        var stamped = CPUState()
        // The session-start entry is written at the start landmark: on a live replay the
        // run may first go back in time to reach it, and the log's counters only go up.
        var started = false

        func beginLog(_ w: ReplayLogWriter, _ cpu: CPUState) throws {
            try appendText(w, .sessionStart, info: 1, cpu: cpu, session.name)
            started = true
        }

        func finishLog(_ info: UInt32, _ text: String) {
            guard let w = writer else { return }
            var cpu = stamped
            if let p = try? session.position(), p.landmark.brctr >= stamped.brctr { cpu = self.cpu(p) }
            if let last = sink?.lastBrctr, last > cpu.brctr { cpu = CPUState(ip: 0, brctr: last) }
            if !started { try? beginLog(w, cpu) }
            try? appendText(w, .sessionEnd, info: info, cpu: cpu, text)
            try? w.flush()
        }

        /// What the sink wrote, into the window.
        func takeCounts(_ sk: ReplayLogBranchSink) {
            window.records = sk.recordCount
            if let last = sk.lastBrctr { window.brctrRange = (last - sk.recordCount + 1)...last }
        }

        do {
            try cancellation.check()
            _ = unlinkIfPresent(logPath)
            let w = try ReplayLogWriter(creating: logPath, header: ReplayLogHeader(
                producer: "tt trace-task (\(backend.name))", guestWordSize: guestWordSize, vcpuCount: 1))
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
            let sk = ReplayLogBranchSink(writer: w, vcpu: 0, source: .tcgPlugin)
            sink = sk
            try session.setTracing(sk)
            tracing = true
            window.traced = true
            let e: Position
            if case .exact(let endBrctr, _) = endTarget.condition, jobs > 1, let makeWorker,
               case let splits = Self.splitPoints(session.timeline, jobs: jobs, after: s, beforeBrctr: endBrctr), !splits.isEmpty {
                e = try runSplit(splits, endTarget: endTarget, sink: sk, makeWorker: makeWorker)
            } else {
                e = try Self.traceSegment(0, of: [], in: session, endTarget: endTarget, sink: sk,
                                          progress: progress.map { p in { p(.tracing, $0) } })!
            }
            tracing = false
            takeCounts(sk)
            // The exactness check: the records are c_s+1 … c_e, each once, in order
            // (the sink already refused gaps and repeats).
            let expected = e.landmark.brctr - s.landmark.brctr
            guard sk.recordCount == expected, expected == 0 || sk.lastBrctr == e.landmark.brctr else {
                throw Inexact(message: "captured \(sk.recordCount) records ending at brctr \(sk.lastBrctr.map(String.init) ?? "-"), but the window \(s.landmark) … \(e.landmark) has \(expected)")
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
            if let sk = sink { takeCounts(sk) }
            finishLog(2, String(describing: error))
            throw Incomplete(underlying: error, window: window)
        }
        return window
    }

    /// Up to `jobs - 1` resumable indexed checkpoints after the start and before the end's
    /// branch count, each the nearest to an equal share of the window's branch counts: where
    /// the window is cut (`--jobs`, and `--plan`'s segments).
    public static func splitPoints(_ timeline: Timeline, jobs: Int, after start: Position, beforeBrctr endBrctr: UInt64) -> [IndexedCheckpoint] {
        guard let index = timeline.index, let here = start.icount else { return [] }
        let candidates = index.checkpoints.filter {
            !index.unresumable.contains($0.icount) && $0.icount > here && $0.fingerprint.landmark.brctr < endBrctr
                && !$0.backendState.isEmpty
        }
        let k = min(jobs - 1, candidates.count)
        guard k > 0 else { return [] }
        // The segments' records balanced: at each j/(k+1) of the window's branch counts, the
        // candidate nearest to it (checkpoints are spread by instructions, and branch
        // density varies: a Linux boot's decompressor has a tenth of the kernel's).
        let first = start.landmark.brctr, span = endBrctr > first ? endBrctr - first : 0
        var picks: [IndexedCheckpoint] = []
        for j in 1...k {
            let ideal = first + span / UInt64(k + 1) * UInt64(j)
            let later = candidates.filter { c in picks.last.map { c.icount > $0.icount } ?? true }
            guard let best = later.min(by: { a, b in
                let da = a.fingerprint.landmark.brctr.distance(to: ideal).magnitude
                let db = b.fingerprint.landmark.brctr.distance(to: ideal).magnitude
                return da < db
            }) else { break }
            picks.append(best)
        }
        return picks
    }

    /// A worker's records, spilled to a file and read back in order when their turn comes:
    /// a segment of tens of millions of records never sits in memory (24 bytes each). The
    /// file is created new (0600, never through a link) beside the trace log and unlinked
    /// at once: only the descriptor holds it, so nothing is left behind whatever ends tt.
    final class Spill: BranchSink {
        private let fd: FileDescriptor
        private(set) var count = 0

        init(beside log: FilePath, segment: Int) throws {
            var dir = log
            dir.removeLastComponent()
            let path = dir.appending(".tt-segment-\(segment)-\(getpid()).spill")
            fd = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusiveCreate, .noFollow, .closeOnExec],
                                         permissions: [.ownerReadWrite])
            _ = unlinkIfPresent(path)
        }

        deinit { try? fd.close() }

        func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws {
            _ = try fd.writeAll(UnsafeRawBufferPointer(batch))
            count += batch.count
        }

        /// Everything received, in order, into `sink`, a chunk at a time.
        func replay(into sink: BranchSink) throws {
            let chunk = 1 << 16
            var buffer = [BranchTransfer](repeating: BranchTransfer(from: 0, to: 0, brctr: 0), count: chunk)
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                try buffer.withUnsafeMutableBufferPointer { records in
                    let bytes = UnsafeMutableRawBufferPointer(start: records.baseAddress, count: n * MemoryLayout<BranchTransfer>.stride)
                    var got = 0
                    while got < bytes.count {
                        let r = try fd.read(fromAbsoluteOffset: Int64(done * MemoryLayout<BranchTransfer>.stride + got),
                                            into: UnsafeMutableRawBufferPointer(rebasing: bytes[got...]))
                        guard r > 0 else { throw Inexact(message: "a segment's spilled records ended early") }
                        got += r
                    }
                    try sink.receive(UnsafeBufferPointer(rebasing: records[0..<n]))
                }
                done += n
            }
        }
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

    /// The window cut at `splits`: segment 0 here (its records straight into `sink`), the
    /// others by workers at once, each into a spill file, appended in order (the sink
    /// refuses a gap or a repeat across a seam).
    private func runSplit(_ splits: [IndexedCheckpoint], endTarget: ResolvedLocation, sink: ReplayLogBranchSink,
                          makeWorker: @escaping (Int) throws -> ReplaySession) throws -> Position {
        segments = splits.count + 1
        let main = session
        var bodies: [() throws -> (records: Spill?, end: Position?)] = []
        bodies.append {
            _ = try Self.traceSegment(0, of: splits, in: main, endTarget: endTarget, sink: sink)
            return (nil, nil)
        }
        let log = logPath
        for j in 1...splits.count {
            let dispose = disposeWorker
            bodies.append {
                let worker = try makeWorker(j)
                defer { dispose?(worker, j) }
                let spill = try Spill(beside: log, segment: j)
                let landed = try Self.traceSegment(j, of: splits, in: worker, endTarget: endTarget, sink: spill)
                return (spill, landed)
            }
        }
        let results = runConcurrently(bodies)
        var parts: [(records: Spill?, end: Position?)] = []
        for r in results { parts.append(try r.get()) }
        for part in parts.dropFirst() { try part.records?.replay(into: sink) }
        guard let workerEnd = parts.last?.end else { throw Inexact(message: "the last segment did not land at the end") }
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

    /// A text entry (session start/end, landmark) of at most 4096 bytes.
    static func appendText(_ w: ReplayLogWriter, _ type: ReplayEventType, info: UInt32, cpu: CPUState, _ text: String) throws {
        var bytes = Array(text.utf8.prefix(4096))
        try bytes.withUnsafeMutableBytes { try w.append(type: type, info: info, domid: 0, vcpu: 0, cpu: cpu, payload: UnsafeRawBufferPointer($0)) }
    }
}

#if canImport(Glibc)
import Glibc
#endif

@discardableResult
func unlinkIfPresent(_ p: FilePath) -> Bool { unlink(p.string) == 0 }
