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
    case interrupted(at: Landmark)
    case landingMismatch(target: String, first: Landmark, second: Landmark)

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
        case .interrupted(let at):
            return "interrupted; the replay is paused at \(at)"
        case .landingMismatch(let target, let first, let second):
            return "internal error: landed on \(target) at \(first) but a second read says \(second)"
        }
    }

    public var exitStatus: Int32 {
        switch self {
        // The signal that interrupted (143 for SIGTERM), not always SIGINT's 130.
        case .interrupted: return SignalWatcher.exitStatus(SignalWatcher.pending != 0 ? SignalWatcher.pending : SIGINT)
        case .notReached, .passed: return 2
        default: return ExitStatus.failure
        }
    }
}

/// A replay of one recorded state directory, driven through a backend.
///
/// States, as in the original tools: `initialized` (created; no VM of ours),
/// `active` (a replay VM exists and this object controls it), `invalid` (destroyed).
/// A call in the wrong state throws `SessionError.wrongState`.
public final class ReplaySession {
    public enum State: String, CustomStringConvertible, Sendable {
        case initialized, active, invalid
        public var description: String { rawValue }
    }

    public let name: String
    public let backend: ReplayBackend
    public private(set) var state: State = .initialized

    /// Create a session object; creates no VM.
    public init(name: String, backend: ReplayBackend) {
        self.name = name
        self.backend = backend
    }

    private func require(_ expected: State, _ operation: String) throws {
        guard state == expected else { throw SessionError.wrongState(operation: operation, state: state) }
    }

    // MARK: starting and ending

    /// Boot the replay VM at the beginning of the recording, stopped; then, if asked,
    /// run until `location` (and stay paused there) or let it run freely (`paused: false`).
    @discardableResult
    public func start(paused: Bool = true, until location: ResolvedLocation? = nil,
                      progress: ((UInt64) -> Void)? = nil) throws -> Position {
        try require(.initialized, "start")
        try backend.boot()
        state = .active
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
    }

    /// Kill the replay VM and keep every recorded file; the session can start again.
    /// From `initialized` it kills a VM left by an earlier command, if any.
    public func stop() throws {
        guard state != .invalid else { throw SessionError.wrongState(operation: "stop", state: state) }
        try backend.kill()
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
        if state == .active { try backend.kill() }
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
    }

    /// Run (forwards, or backwards through a seek when the target lies behind) until the
    /// vCPU is exactly at `target`, and check it after landing. Ends with
    /// `SessionError.notReached` instead of hanging when the replay ends first.
    @discardableResult
    public func runUntil(_ target: ResolvedLocation, progress: ((UInt64) -> Void)? = nil) throws -> Position {
        try require(.active, "run until \(target)")
        var position = try backend.position()
        let landed: Landmark
        switch target.condition {
        case .exact(let brctr, let cx):
            if target.matches(position.landmark) { return position }
            if isBehind(position.landmark, address: target.address, brctr: brctr, cx: cx) {
                position = try seekBack(toAtMost: brctr, target: target, from: position.landmark)
                if target.matches(position.landmark) { return position }
            }
            landed = try runToBreakpoint(target, hint: brctr, progress: progress) { here in
                if target.matches(here) { return true }
                if here.brctr > brctr { throw SessionError.passed(target: target.text, at: here) }
                return false
            }
        case .next:
            landed = try runToBreakpoint(target, hint: nil, progress: progress) { target.matches($0) }
        case .occurrence(let n):
            if !(position.landmark.brctr == 0 && (position.icount ?? 0) == 0) {
                position = try seekBack(toAtMost: 0, target: target, from: position.landmark)
            }
            var seen: UInt64 = position.landmark.ip == target.address ? 1 : 0
            if seen == n { return position }
            landed = try runToBreakpoint(target, hint: nil, progress: progress) { here in
                guard here.ip == target.address else { return false }
                seen += 1
                return seen == n
            }
        }
        // Landing check: a second, independent read must agree.
        let again = try backend.position()
        guard again.landmark == landed, target.matches(again.landmark) else {
            throw SessionError.landingMismatch(target: target.text, first: landed, second: again.landmark)
        }
        backend.landed(at: again)
        return again
    }

    /// Whether `here` lies after the exact point (address, brctr, cx): then only going
    /// back can reach it. Within one branch count, straight-line code only moves up, and
    /// a `rep` instruction's count register only goes down.
    private func isBehind(_ here: Landmark, address: UInt64, brctr: UInt64, cx: UInt64?) -> Bool {
        if here.brctr != brctr { return here.brctr > brctr }
        if here.ip != address { return here.ip > address }
        if let cx { return here.cx < cx }
        return false
    }

    private func seekBack(toAtMost brctr: UInt64, target: ResolvedLocation, from: Landmark) throws -> Position {
        guard backend.capabilities.contains(.seeking) else {
            throw SessionError.needsSeeking(target: target.text, at: from, backend: backend.name)
        }
        return try backend.seek(toAtMost: brctr)
    }

    /// Breakpoint at the target's address; continue until `accept` says this stop is it.
    private func runToBreakpoint(_ target: ResolvedLocation, hint: UInt64?, progress: ((UInt64) -> Void)?,
                                 accept: (Landmark) throws -> Bool) throws -> Landmark {
        try backend.insertBreakpoint(at: target.address)
        defer { if backend.isLive { try? backend.removeBreakpoint(at: target.address) } }
        while true {
            let reason = try backend.continueUntilStop(hintBrctr: hint, progress: progress)
            if reason == .ended {
                let end = (try? backend.position()).map { describe($0) } ?? "its end"
                if !backend.isLive { state = .initialized }
                throw SessionError.notReached(target: target.text, endedAt: end)
            }
            let here = try backend.landmark()
            if try accept(here) { return here }
            if reason == .interrupted { throw SessionError.interrupted(at: here) }
        }
    }

    /// `eip:brctr:cx (icount N)`, as `tt where` prints it.
    public func describe(_ position: Position) -> String {
        var s = position.landmark.description
        if let i = position.icount { s += " (icount \(i))" }
        return s
    }
}
