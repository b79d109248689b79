import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Errors of replay sessions, one line each, with the exit status they deserve.
public enum SessionError: Error, CustomStringConvertible, ExitStatusProviding {
    case wrongState(operation: String, state: ReplaySession.State)
    case notReached(target: String, endedAt: String)
    case passed(target: String, at: Landmark)
    case needsSeeking(target: String, at: Landmark, backend: String)
    case interrupted(at: Landmark, signal: Int32)
    case landingMismatch(target: String, first: Landmark, second: Landmark)
    case noReturnAddress(at: Landmark, why: String)
    case needsBranchCounter(target: String, backend: String)
    case unsupported(operation: String, backend: String)
    case checkpointFailed(icount: UInt64, why: String)
    /// The replay executed nothing for `seconds` after loading the checkpoint at that icount.
    case stalled(checkpointICount: UInt64, at: Landmark, seconds: Int)

    public var description: String {
        switch self {
        case .wrongState(let op, let state):
            return "cannot \(op): the session is \(state)"
        case .notReached(let target, let end):
            return "\(target) not reached; replay ended at \(end)"
        case .passed(let target, let at):
            return "\(target) not reached: the replay passed its branch count without the ip there (now at \(at))"
        case .needsSeeking(let target, let at, let backend):
            return "\(target) lies before the current position \(at), and the \(backend) backend cannot go back"
        case .interrupted(let at, _):
            return "interrupted; the replay is paused at \(at)"
        case .noReturnAddress(let at, let why):
            return "return: no return address at \(at): \(why)"
        case .needsBranchCounter(let target, let backend):
            return "\(target): this \(backend) session is live and has no branch counter; give WHERE or WHERE#N (counted from here)"
        case .unsupported(let op, let backend):
            return "cannot \(op): the \(backend) backend does not support it"
        case .stalled(let icount, let at, let seconds):
            return "the replay executed nothing for \(seconds) s after loading the checkpoint at icount \(icount) (stopped at \(at)): QEMU cannot resume from that snapshot"
        case .checkpointFailed(let icount, let why):
            return "cannot make a checkpoint at icount \(icount): \(why)"
        case .landingMismatch(let target, let first, let second):
            return "internal error: landed on \(target) at \(first) but a second read says \(second)"
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .interrupted(_, let signal): return Cancelled(signal: signal).exitStatus
        case .notReached, .passed: return 2
        case .needsBranchCounter, .unsupported: return ExitStatus.unavailable
        default: return ExitStatus.failure
        }
    }
}

/// A replay of one recorded state directory, driven through a backend.
///
/// States, as in the original tools: `initialized` (created; no VM of ours),
/// `active` (a replay VM exists and this object controls it), `invalid` (destroyed).
/// A call in the wrong state throws `SessionError.wrongState`. The state changes only
/// here, on what the calls did or what the backend reported (`.exited`: the VM is gone).
public final class ReplaySession {
    public enum State: String, CustomStringConvertible, Sendable {
        case initialized, active, invalid
        public var description: String { rawValue }
    }

    public let name: String
    public let backend: ReplayBackend
    /// The live replay's checkpoints and the order of moments.
    public let timeline: Timeline
    /// Watched by every run of the vCPU; a cancelled run stops where it is.
    public let cancellation: Cancellation
    public private(set) var state: State = .initialized
    /// The guest's word size in bits (32 or 64): the size of a return address on its stack.
    public var guestWordSize: UInt8 = 64
    /// What a run that passes (or restores) an indexed checkpoint does when the replay is
    /// not what the index saw there (`--on-divergence`).
    public var divergencePolicy: DivergencePolicy = .abort
    /// Where `.warn` divergences and other warnings of the timeline go (default: the line on stderr).
    public var divergenceReport: (Divergence?, String) -> Void = { _, line in
        _ = (line + "\n").withCString { fputs($0, stderr) }
    }
    /// The divergences this session found (each one also reported or thrown).
    public private(set) var divergences: [Divergence] = []
    /// Compare with the index wherever a run passes one of its checkpoints (default on).
    public var checksDivergence = true {
        didSet { if state == .active { armDivergenceChecks() } }
    }
    /// Branch tracing is on: runs then never skip ahead through a checkpoint.
    public private(set) var tracing = false
    /// Whether a landing gets a checkpoint (a snapshot: ~0.2 s for a 256 MB guest). Off when
    /// nothing will come back to it: a trace-task in a VM that dies with the command.
    public var checkpointsLandings = true
    /// A `WHERE#N` run in progress: the address and the arrivals counted since the start,
    /// kept at each indexed checkpoint it passes (`Timeline.recordHits`).
    private var counting: (address: UInt64, seen: UInt64)?

    /// Create a session object; creates no VM.
    public init(name: String, backend: ReplayBackend, timeline: Timeline = Timeline(),
                cancellation: Cancellation = Cancellation()) {
        self.name = name
        self.backend = backend
        self.timeline = timeline
        self.cancellation = cancellation
    }

    private func require(_ expected: State, _ operation: String) throws {
        guard state == expected else { throw SessionError.wrongState(operation: operation, state: state) }
    }

    // MARK: starting and ending

    /// Boot the replay VM at the beginning of the recording, stopped; then, if asked,
    /// run until `location` (and stay paused there) or let it run freely (`paused: false`).
    /// `outlivesCommand`: the VM stays after this process ends (`tt replay`); by default it
    /// belongs to the process and does not survive it.
    @discardableResult
    public func start(paused: Bool = true, until location: ResolvedLocation? = nil, outlivesCommand: Bool = false,
                      progress: ((UInt64) -> Void)? = nil) throws -> Position {
        try require(.initialized, "start")
        timeline.reset()
        try backend.boot(outlivesCommand: outlivesCommand)
        state = .active
        armDivergenceChecks()
        if let location { return try runUntil(location, progress: progress) }
        let position = try backend.position()
        if !paused { try backend.resumeDetached() }
        return position
    }

    /// Take control of the replay VM an earlier command started (it stops the vCPU).
    public func attach() throws {
        try require(.initialized, "attach")
        try backend.attach()
        state = .active
        armDivergenceChecks()
    }

    /// Kill the replay VM and keep every recorded file; the session can start again.
    /// From `initialized` it kills a VM left by an earlier command, if any.
    public func stop() throws {
        guard state != .invalid else { throw SessionError.wrongState(operation: "stop", state: state) }
        try backend.kill()
        timeline.reset()
        state = .initialized
    }

    /// Let go of a live VM without stopping it (it outlives this process), end this object.
    public func detach() throws {
        try require(.active, "detach")
        backend.detach()
        state = .invalid
    }

    /// Stop, then make this object unusable. The state directory stays.
    public func destroy() throws {
        guard state != .invalid else { throw SessionError.wrongState(operation: "destroy", state: state) }
        if state == .active {
            try backend.kill()
            timeline.reset()
        }
        state = .invalid
    }

    // MARK: while active

    public func pause() throws {
        try require(.active, "pause")
        try backend.pause()
    }

    public func resume() throws {
        try require(.active, "resume")
        try backend.resumeDetached()
    }

    public func position() throws -> Position {
        try require(.active, "read the position")
        return try backend.position()
    }

    public func registers() throws -> [RegisterValue] {
        try require(.active, "read registers")
        return try backend.registers()
    }

    public func setTracing(_ sink: BranchSink?) throws {
        try require(.active, "switch tracing")
        try backend.setTracing(sink)
        tracing = sink != nil
    }

    /// Run (forwards, or backwards through a checkpoint when the target lies behind) until
    /// the vCPU is exactly at `target`, and check it after landing. Ends with
    /// `SessionError.notReached` instead of hanging when the replay ends first.
    @discardableResult
    public func runUntil(_ target: ResolvedLocation, progress: ((UInt64) -> Void)? = nil) throws -> Position {
        try require(.active, "run until \(target)")
        var position = try backend.position()
        let landed: Landmark
        let live = backend.capabilities.contains(.live)
        switch target.condition {
        case .exact where live:
            throw SessionError.needsBranchCounter(target: target.text, backend: backend.name)
        case .occurrence(let n) where live:
            // No going back and no count since a beginning: the N-th arrival from here.
            var seen: UInt64 = 0
            landed = try runToBreakpoint(target, hint: nil, progress: progress) { here in
                guard here.ip == target.address else { return false }
                seen += 1
                return seen == n
            }
        case .exact(let brctr, let cx):
            if target.matches(position.landmark) { return position }
            // The index has a checkpoint at exactly this moment (landmarks it printed, trace
            // windows cut at them): load it, whichever way it lies. Never while tracing.
            if !tracing, backend.capabilities.contains(.seeking), let cx,
               let exact = timeline.indexed(at: Landmark(ip: target.address, brctr: brctr, cx: cx)), exact.icount != position.icount {
                position = try restore(exact)
                if target.matches(position.landmark) { return position }
            }
            if Timeline.isBefore(address: target.address, brctr: brctr, cx: cx, position.landmark) {
                position = try goBack(before: brctr, target: target, from: position.landmark)
                if target.matches(position.landmark) { return position }
            } else if !tracing, backend.capabilities.contains(.seeking), let here = position.icount,
                      case let ahead = timeline.latest(before: brctr), ahead.icount > here {
                // A checkpoint between here and the target (a landing's, or the index's):
                // start from it instead of replaying everything in between. Never while
                // tracing: the records in between would be missing.
                position = try restore(ahead)
                if target.matches(position.landmark) { return position }
            }
            let jumpsRepIterations = position.icount != nil   // a replay break needs an icount
            while true {
                do {
                    var previous: Landmark?
                    var stop = try runToBreakpoint(target, hint: brctr, progress: progress) { here in
                        if target.matches(here) { return true }
                        if here.brctr > brctr { throw SessionError.passed(target: target.text, at: here) }
                        // Iterations of the target's rep instruction before its cx, jumped below:
                        // known by a second stop at its address with the same branch count and
                        // a smaller cx (only a rep iteration runs an instruction again with no
                        // transfer between).
                        let before = previous
                        previous = here
                        return jumpsRepIterations && here.ip == target.address && here.brctr == brctr && (cx ?? 0) < here.cx
                            && before.map { $0.ip == here.ip && $0.brctr == here.brctr && $0.cx > here.cx } == true
                    }
                    if !target.matches(stop), let cx { stop = try skipRepIterations(to: target, cx: cx, from: stop, progress: progress) }
                    landed = stop
                    break
                } catch SessionError.stalled(let icount, _, let seconds) {
                    // QEMU cannot resume from that snapshot: never again; from an earlier one.
                    try timeline.markUnresumable(icount)
                    let earlier = timeline.latest(before: brctr)
                    divergenceReport(nil, "tt: warning: the checkpoint at icount \(icount) cannot be resumed (nothing executed for \(seconds) s after loading it); it is marked so, and the run starts again from icount \(earlier.icount)")
                    position = try restore(earlier)
                    if target.matches(position.landmark) { return position }
                }
            }
        case .next:
            landed = try runToBreakpoint(target, hint: nil, progress: progress) { target.matches($0) }
        case .callReturn:
            // At a call's entry the stack's top word is the return address; the return is the
            // first arrival there with the stack pointer above the entry's (a recursive call
            // of the same function returns to the same address with the stack lower).
            let entry = try stackPointer()
            let width = Int(guestWordSize / 8)
            let bytes = try backend.readMemory(at: entry, count: width)
            guard bytes.count == width else {
                throw SessionError.noReturnAddress(at: position.landmark, why: "the stack at 0x\(String(entry, radix: 16)) cannot be read")
            }
            let returnAddress = bytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let returning = ResolvedLocation(address: returnAddress, condition: .next, text: target.text)
            landed = try runToBreakpoint(returning, hint: nil, progress: progress) { here in
                guard here.ip == returnAddress else { return false }
                return try self.stackPointer() > entry
            }
            let again = try backend.position()
            guard again.landmark == landed else {
                throw SessionError.landingMismatch(target: target.text, first: landed, second: again.landmark)
            }
            checkpointIfWorthIt(at: again)
            return again
        case .occurrence(let n):
            defer { counting = nil }
            while true {
                // From the latest indexed checkpoint where an earlier run counted fewer than
                // N arrivals (Timeline.hits), or from the start.
                let from = !tracing && backend.capabilities.contains(.seeking) ? timeline.latestHits(at: target.address, below: n) : nil
                if let from {
                    position = try restore(from.checkpoint)
                    counting = (target.address, from.count)
                } else {
                    if !(position.landmark.brctr == 0 && (position.icount ?? 0) == 0) {
                        position = try goBack(before: 0, target: target, from: position.landmark)
                    }
                    counting = (target.address, position.landmark.ip == target.address ? 1 : 0)
                    if counting!.seen == n { return position }
                }
                do {
                    landed = try runToBreakpoint(target, hint: nil, progress: progress) { here in
                        guard here.ip == target.address else { return false }
                        self.counting!.seen += 1
                        return self.counting!.seen == n
                    }
                    break
                } catch SessionError.stalled(let icount, _, let seconds) where from != nil {
                    try timeline.markUnresumable(icount)
                    divergenceReport(nil, "tt: warning: the checkpoint at icount \(icount) cannot be resumed (nothing executed for \(seconds) s after loading it); it is marked so, and the count starts again from an earlier one")
                }
            }
        }
        // Landing check: a second, independent read must agree.
        let again = try backend.position()
        guard again.landmark == landed, target.matches(again.landmark) else {
            throw SessionError.landingMismatch(target: target.text, first: landed, second: again.landmark)
        }
        checkpointIfWorthIt(at: again)
        return again
    }

    /// A landing is where users come back to: keep a checkpoint there unless one is near.
    /// A failed checkpoint costs only speed later, never exactness, so it is not an error.
    private func checkpointIfWorthIt(at position: Position) {
        guard checkpointsLandings, timeline.wantsCheckpoint(at: position),
              let checkpoint = try? backend.saveCheckpoint(at: position) else { return }
        try? timeline.add(checkpoint)
    }

    /// Back to the latest checkpoint before branch count `brctr` (the start for 0).
    private func goBack(before brctr: UInt64, target: ResolvedLocation, from: Landmark) throws -> Position {
        guard backend.capabilities.contains(.seeking) else {
            throw SessionError.needsSeeking(target: target.text, at: from, backend: backend.name)
        }
        return try restore(timeline.latest(before: brctr))
    }

    /// The backend's restore, then the index's check when the checkpoint is one of its
    /// (a damaged snapshot, or a recording changed since, shows here).
    private func restore(_ checkpoint: Checkpoint) throws -> Position {
        let position = try backend.restore(checkpoint)
        try compareWithIndex(position)
        return position
    }

    // MARK: the checkpoint index

    /// Watch the index's instruction counts in every forward run of this VM.
    private func armDivergenceChecks() {
        guard checksDivergence, let index = timeline.index, !index.checkpoints.isEmpty else {
            backend.watchICounts([], handler: nil)
            return
        }
        backend.watchICounts(index.checkpoints.map(\.icount)) { [unowned self] position in
            // A count is kept only where the replay is the index's run.
            guard try self.compareWithIndex(position), let c = self.counting, let icount = position.icount else { return }
            try? self.timeline.recordHits(c.address, icount: icount, count: c.seen)
        }
    }

    /// The fingerprint of the current stop.
    public func fingerprint(_ position: Position? = nil) throws -> Fingerprint {
        try require(.active, "read the registers")
        let p = try position ?? backend.position()
        return Fingerprint(landmark: p.landmark, icount: p.icount ?? 0, registerHash: try backend.registerHash() ?? 0)
    }

    /// At an indexed checkpoint's icount: what the index saw there must be what is here.
    /// False when it differs (and the policy is to warn).
    @discardableResult
    private func compareWithIndex(_ position: Position) throws -> Bool {
        guard let icount = position.icount, let (number, entry) = timeline.indexed(at: icount) else { return true }
        let actual = try fingerprint(position)
        guard actual != entry.fingerprint else { return true }
        let d = Divergence(expected: entry.fingerprint, actual: actual, number: number)
        divergences.append(d)
        if divergencePolicy == .abort { throw d }
        divergenceReport(d, "tt: warning: \(d)")
        return false
    }

    private func interruptedHere() -> SessionError {
        .interrupted(at: (try? backend.landmark()) ?? Landmark(ip: 0, brctr: 0, cx: 0), signal: cancellation.signal)
    }

    /// Make the recording's checkpoint index from a replay standing at its start: stop
    /// `spacing` apart, take a checkpoint there with its fingerprint and the host seconds
    /// the replay took since the last one, until the replay ends (its end is kept too) or
    /// `keepGoing` says stop (after that checkpoint). Then each checkpoint is loaded and run
    /// on for `probeInstructions`: one QEMU cannot run on from is marked unresumable (see
    /// `CheckpointIndex.unresumable`). Then the backend keeps the snapshots
    /// for every later replay and the VM ends (the session can start again). The index is
    /// returned; saving it (`CheckpointIndex.save`) makes later replays use it.
    /// Instructions run past a `--seconds` index pass's deadline stop to a replay-break stop,
    /// where the checkpoint is taken.
    static let settleInstructions: UInt64 = 1000

    public func buildIndex(spacing: IndexSpacing, probeInstructions: UInt64 = 1_000_000,
                           keepGoing: (IndexedCheckpoint) -> Bool = { _ in true },
                           progress: ((UInt64) -> Void)? = nil) throws -> CheckpointIndex {
        try require(.active, "make a checkpoint index")
        if case .instructions(let n) = spacing { precondition(n > 0) }
        let begin = try backend.position()
        guard begin.icount == 0 else {
            throw SessionError.checkpointFailed(icount: begin.icount ?? 0, why: "an index is made from the start of a replay")
        }
        let checking = checksDivergence
        checksDivergence = false
        defer { checksDivergence = checking }
        var index = CheckpointIndex(spacing: spacing)
        var here: UInt64 = 0
        gaps: while true {
            // One gap. By time, the vCPU is stopped when S seconds have passed, wherever it
            // is: a gap sized from the pace of the one before overran by 15× on a Linux
            // boot, whose `rdtsc` delay loops replay 200 times fewer instructions a second
            // than its decompressor. The replay-break at the far target is never reached.
            let t0 = monotonicSeconds()
            var (target, deadline): (UInt64, Double?)
            switch spacing {
            case .instructions(let n): (target, deadline) = (here + n, nil)
            case .seconds(let want): (target, deadline) = (here + (1 << 60), t0 + want)
            }
            var position: Position
            while true {
                let reason = try backend.runToICount(target, deadline: deadline, cancellation: cancellation, progress: progress)
                if reason == .interrupted { throw interruptedHere() }
                if reason == .exited {
                    timeline.reset()
                    state = .initialized
                    throw SessionError.checkpointFailed(icount: target, why: "the replay VM exited before its end could be kept")
                }
                if reason == .ended {
                    if let end = try? backend.position(), let icount = end.icount, icount > here {
                        index.end = IndexedEnd(icount: icount, brctr: end.landmark.brctr, replaySeconds: monotonicSeconds() - t0)
                    }
                    break gaps
                }
                position = try backend.position()
                guard let icount = position.icount, icount == target || (reason == .deadline && icount > here) else {
                    throw SessionError.checkpointFailed(icount: target, why: "the replay stopped at icount \(position.icount.map(String.init) ?? "?")")
                }
                guard reason == .deadline else { break }
                // Where an interrupt stopped it is no place for a snapshot: QEMU refused
                // some (`savevm`: replay events pending) and could not run on from others
                // after loading them (measured on the bundled guest with 20 ms gaps). So the
                // checkpoint is a replay-break stop a few instructions further on.
                (target, deadline) = (icount + Self.settleInstructions, nil)
            }
            let took = monotonicSeconds() - t0
            here = target
            let print = try fingerprint(position)
            guard let saved = try backend.saveCheckpoint(at: position) else {
                throw SessionError.checkpointFailed(icount: here, why: "the \(backend.name) backend saved no snapshot")
            }
            let entry = IndexedCheckpoint(fingerprint: print, backendState: saved.backendState, replaySeconds: took)
            index.checkpoints.append(entry)
            if !keepGoing(entry) { break }
        }
        // QEMU must be able to run on from each snapshot, which is not always so (a Linux
        // guest's snapshots past its decompressor, measured: QEMU spins executing nothing).
        // Load each and run a little: one that stalls, or differs from what was saved, is
        // marked unresumable (compared when passed, never restored).
        for entry in index.checkpoints {
            try cancellation.check()
            do {
                let restored = try backend.restore(entry.checkpoint)
                guard try fingerprint(restored) == entry.fingerprint else {
                    index.unresumable.insert(entry.icount)
                    continue
                }
                let reason = try backend.runToICount(entry.icount + probeInstructions, cancellation: cancellation, progress: nil)
                if reason == .interrupted { throw interruptedHere() }
                if reason == .exited {
                    timeline.reset()
                    state = .initialized
                    throw SessionError.checkpointFailed(icount: entry.icount, why: "the replay VM exited while its snapshots were tried")
                }
            } catch SessionError.stalled {
                index.unresumable.insert(entry.icount)
            }
        }
        try backend.keepCheckpoints()
        timeline.reset()
        state = .initialized
        return index
    }

    /// Stand at the indexed checkpoint at `icount` (its snapshot restored and compared).
    @discardableResult
    public func restoreIndexed(_ icount: UInt64) throws -> Position {
        try require(.active, "restore a checkpoint")
        guard let (_, entry) = timeline.indexed(at: icount) else {
            throw SessionError.checkpointFailed(icount: icount, why: "no such indexed checkpoint")
        }
        return try restore(entry.checkpoint)
    }

    /// The backend's raw-count tracing (see `ReplayBackend.setRawTracing`).
    @discardableResult
    public func setRawTracing(_ sink: BranchSink?) throws -> UInt64 {
        try require(.active, "switch tracing")
        let raw = try backend.setRawTracing(sink)
        tracing = sink != nil
        return raw
    }

    /// Run forwards to exactly `icount` instructions (breakpoints ignored).
    @discardableResult
    public func runToICount(_ icount: UInt64, progress: ((UInt64) -> Void)? = nil) throws -> Position {
        try require(.active, "run to icount \(icount)")
        switch try backend.runToICount(icount, cancellation: cancellation, progress: progress) {
        case .stepped: return try backend.position()
        case .interrupted: throw interruptedHere()
        case .exited:
            timeline.reset()
            state = .initialized
            throw SessionError.notReached(target: "icount \(icount)", endedAt: "its end")
        default:
            throw SessionError.notReached(target: "icount \(icount)", endedAt: (try? backend.position()).map(describe) ?? "its end")
        }
    }

    /// One checkpoint as `verifyIndex` found it: `actual` nil when the replay ended before it.
    public struct Verified: Sendable {
        public var number: Int
        public var expected: Fingerprint
        public var actual: Fingerprint?
        public var equal: Bool { actual == expected }
    }

    /// Replay from the start through every indexed checkpoint (stopping exactly at its
    /// icount) and compare; `each` gets every result in order. Returns how many differed.
    @discardableResult
    public func verifyIndex(progress: ((UInt64) -> Void)? = nil, each: (Verified) -> Void) throws -> Int {
        try require(.active, "verify the checkpoint index")
        guard let index = timeline.index else { return 0 }
        let checking = checksDivergence
        checksDivergence = false
        defer { checksDivergence = checking }
        var position = try backend.position()
        if position.icount != 0 { position = try backend.restore(.start) }
        var differing = 0
        var ended = false
        for (i, entry) in index.checkpoints.enumerated() {
            var actual: Fingerprint? = nil
            if !ended {
                let reason = try backend.runToICount(entry.icount, cancellation: cancellation, progress: progress)
                if reason == .interrupted { throw interruptedHere() }
                if reason == .exited {
                    timeline.reset()
                    state = .initialized
                }
                if reason == .stepped { actual = try fingerprint() } else { ended = true }
            }
            let v = Verified(number: i + 1, expected: entry.fingerprint, actual: actual)
            if !v.equal { differing += 1 }
            each(v)
        }
        return differing
    }

    /// Breakpoint at the target's address; continue until `accept` says this stop is it.
    private func runToBreakpoint(_ target: ResolvedLocation, hint: UInt64?, progress: ((UInt64) -> Void)?,
                                 accept: (Landmark) throws -> Bool) throws -> Landmark {
        try backend.insertBreakpoint(at: target.address)
        var vmGone = false
        defer { if !vmGone { try? backend.removeBreakpoint(at: target.address) } }
        while true {
            let reason = try backend.continueUntilStop(hintBrctr: hint, cancellation: cancellation, progress: progress)
            if reason == .ended || reason == .exited {
                var end = (try? backend.position()).map { describe($0) } ?? "its end"
                if let why = backend.endReason { end += " (\(why))" }
                if reason == .exited {
                    vmGone = true
                    timeline.reset()
                    state = .initialized
                }
                throw SessionError.notReached(target: target.text, endedAt: end)
            }
            let here = try backend.landmark()
            if try accept(here) { return here }
            if reason == .interrupted { throw SessionError.interrupted(at: here, signal: cancellation.signal) }
        }
    }

    /// At an iteration of the target's rep string instruction with the target's branch count
    /// and a larger cx: every iteration is one instruction, and none of those up to the target can be
    /// followed by a transfer (the branch count would change), so the target is exactly
    /// cx − target's cx instructions on; QEMU's replay break stops there. (A breakpoint hit
    /// per iteration costs ~2 ms: a `rep stos` of millions of bytes took hours.) Landing
    /// anywhere else means the instruction ended first (a repe/repne condition): passed.
    private func skipRepIterations(to target: ResolvedLocation, cx: UInt64, from here: Landmark,
                                   progress: ((UInt64) -> Void)?) throws -> Landmark {
        guard let icount = try backend.position().icount else { return here }
        let after = try runToICount(icount + (here.cx - cx), progress: progress).landmark
        guard target.matches(after) else { throw SessionError.passed(target: target.text, at: after) }
        return after
    }

    /// The stack pointer (rsp, or esp where the backend names it so).
    private func stackPointer() throws -> UInt64 {
        let registers = try backend.registers()
        guard let sp = registers.first(where: { $0.name == "rsp" || $0.name == "esp" }) else {
            throw SessionError.noReturnAddress(at: try backend.landmark(), why: "the backend reports no stack pointer")
        }
        return guestWordSize == 32 ? sp.value & 0xffff_ffff : sp.value
    }

    /// `eip:brctr:cx (icount N)`, as `tt where` prints it.
    /// A live backend has no branch counter: `0x<ip> (live, cx 0x<cx>; no branch counter)`.
    public func describe(_ position: Position) -> String {
        if backend.capabilities.contains(.live) {
            let l = position.landmark
            return "0x\(String(l.ip, radix: 16)) (live, cx 0x\(String(l.cx, radix: 16)); no branch counter)"
        }
        var s = position.landmark.description
        if let i = position.icount { s += " (icount \(i))" }
        return s
    }
}
