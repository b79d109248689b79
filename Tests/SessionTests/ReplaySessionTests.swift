import XCTest
@testable import XenTT
import TTSystem

/// A scripted stand-in for a hypervisor: a fixed instruction stream (addresses, with a
/// branch wherever the next address is not the fall-through), so the session's policy
/// — run-until, occurrence counting, going back, state checks — is tested without a VM.
final class ScriptedBackend: ReplayBackend {
    let name = "scripted"
    var capabilities: BackendCapabilities
    /// (ip, cx) of each instruction, in execution order; each is `size` bytes.
    let stream: [(ip: UInt64, cx: UInt64)]
    let size: UInt64 = 2
    var index = 0
    var live = false
    var breakpoints: Set<UInt64> = []
    var seeks = 0
    var calls: [String] = []

    init(stream: [(UInt64, UInt64)], seeking: Bool = true) {
        self.stream = stream.map { (ip: $0.0, cx: $0.1) }
        capabilities = seeking ? [.seeking] : []
    }

    var isLive: Bool { live }
    var vmDescription: String? { live ? "scripted VM" : nil }
    func cleanUpAfterDeadOwners() {}
    func followConsole(until cancellation: Cancellation) throws {}
    func boot(outlivesCommand: Bool) throws { calls.append("boot"); live = true; index = 0 }
    func attach() throws { calls.append("attach"); live = true }
    func detach() { calls.append("detach") }
    func kill() throws { calls.append("kill"); live = false }

    /// Transfers taken up to and including the arrival at stream[i].
    func brctr(at i: Int) -> UInt64 {
        var n: UInt64 = 0
        var k = 1
        while k <= i {
            let prev = stream[k - 1], cur = stream[k]
            let repIteration = prev.ip == cur.ip && prev.cx != cur.cx
            if cur.ip != prev.ip + size && !repIteration { n += 1 }
            k += 1
        }
        return n
    }

    func position() throws -> Position {
        let s = stream[min(index, stream.count - 1)]
        return Position(landmark: Landmark(ip: s.ip, brctr: brctr(at: min(index, stream.count - 1)), cx: s.cx), icount: UInt64(index))
    }
    func registers() throws -> [RegisterValue] { [RegisterValue(name: "rip", value: stream[index].ip)] }
    func readMemory(at address: UInt64, count: Int) throws -> [UInt8] { [] }
    func insertBreakpoint(at address: UInt64) throws { breakpoints.insert(address) }
    func removeBreakpoint(at address: UInt64) throws { breakpoints.remove(address) }
    func step() throws -> StopReason {
        guard index + 1 < stream.count else { live = false; return .ended }
        index += 1
        return .stepped
    }
    func continueUntilStop(hintBrctr: UInt64?, cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> StopReason {
        repeat {
            if try step() == .ended { return .ended }
        } while !breakpoints.contains(stream[index].ip)
        return .breakpoint
    }
    func resumeDetached() throws { calls.append("resume") }
    func pause() throws { calls.append("pause") }
    /// Whether this fake keeps checkpoints (its "snapshot" is the stream index).
    var checkpointing = false
    func saveCheckpoint(at position: Position) throws -> Checkpoint? {
        guard checkpointing, let i = position.icount else { return nil }
        return Checkpoint(icount: i, brctr: position.landmark.brctr, backendState: [])
    }
    func restore(_ checkpoint: Checkpoint) throws -> Position {
        seeks += 1
        index = Int(checkpoint.icount)
        return try position()
    }
    func setTracing(_ sink: BranchSink?) throws {}
}

final class ReplaySessionTests: XCTestCase {
    // 0x10 → 0x12 → 0x14 (call) → 0x40 → 0x42 (ret) → 0x16 → 0x18 (jmp back) → 0x10 → 0x12 → 0x14 → 0x40 → 0x42 → 0x16
    // then a jump to a rep instruction at 0x50 iterating with cx 3, 2, 1, and 0x52 (6 transfers in all).
    static let stream: [(UInt64, UInt64)] = [
        (0x10, 0), (0x12, 0), (0x14, 0), (0x40, 0), (0x42, 0), (0x16, 0), (0x18, 0),
        (0x10, 0), (0x12, 0), (0x14, 0), (0x40, 0), (0x42, 0), (0x16, 0),
        (0x50, 3), (0x50, 2), (0x50, 1), (0x52, 0),
    ]

    func makeSession(seeking: Bool = true) throws -> (ReplaySession, ScriptedBackend) {
        let b = ScriptedBackend(stream: Self.stream, seeking: seeking)
        let s = ReplaySession(name: "t", backend: b)
        try s.start(paused: true)
        return (s, b)
    }

    func at(_ text: String) throws -> ResolvedLocation { try Location(parsing: text).resolved { _ in 0 } }

    func testStatesAndWrongStateErrors() throws {
        let b = ScriptedBackend(stream: Self.stream)
        let s = ReplaySession(name: "t", backend: b)
        XCTAssertEqual(s.state, .initialized)
        XCTAssertThrowsError(try s.position()) { XCTAssertEqual(String(describing: $0), "cannot read the position: the session is initialized") }
        XCTAssertThrowsError(try s.runUntil(at("0x40")))
        XCTAssertThrowsError(try s.pause())
        try s.start()
        XCTAssertEqual(s.state, .active)
        XCTAssertThrowsError(try s.start()) { XCTAssertEqual(String(describing: $0), "cannot start: the session is active") }
        try s.stop()
        XCTAssertEqual(s.state, .initialized)
        XCTAssertFalse(b.isLive)
        try s.start() // restartable from the beginning
        XCTAssertEqual(try s.position().icount, 0)
        try s.destroy()
        XCTAssertEqual(s.state, .invalid)
        XCTAssertThrowsError(try s.start())
        XCTAssertThrowsError(try s.stop())
        XCTAssertThrowsError(try s.destroy())
        XCTAssertEqual(b.calls, ["boot", "kill", "boot", "kill"])
    }

    func testStartRunningOrUntilLocation() throws {
        let b = ScriptedBackend(stream: Self.stream)
        let s = ReplaySession(name: "t", backend: b)
        let p = try s.start(until: at("0x16"))
        XCTAssertEqual(p.landmark, Landmark(ip: 0x16, brctr: 2, cx: 0))
        let b2 = ScriptedBackend(stream: Self.stream)
        try ReplaySession(name: "t", backend: b2).start(paused: false)
        XCTAssertEqual(b2.calls, ["boot", "resume"])
    }

    func testRunUntilNextExactAndOccurrence() throws {
        let (s, b) = try makeSession()
        // 0x40 is reached by a call: its arrival is counted.
        XCTAssertEqual(try s.runUntil(at("0x40")).landmark, Landmark(ip: 0x40, brctr: 1, cx: 0))
        XCTAssertEqual(try s.runUntil(at("0x40")).landmark, Landmark(ip: 0x40, brctr: 4, cx: 0))
        XCTAssertEqual(b.seeks, 0)
        // Second arrival at 0x12, counted from the start: needs going back.
        XCTAssertEqual(try s.runUntil(at("0x12#2")).landmark, Landmark(ip: 0x12, brctr: 3, cx: 0))
        XCTAssertEqual(b.seeks, 1)
        XCTAssertEqual(try s.runUntil(at("0x10#1")).landmark, Landmark(ip: 0x10, brctr: 0, cx: 0))
        // Exact landmark forwards, then backwards.
        XCTAssertEqual(try s.runUntil(at("0x16:5")).landmark, Landmark(ip: 0x16, brctr: 5, cx: 0))
        XCTAssertEqual(try s.runUntil(at("0x16:2")).landmark, Landmark(ip: 0x16, brctr: 2, cx: 0))
        XCTAssertEqual(b.seeks, 3)
        XCTAssertTrue(b.breakpoints.isEmpty, "breakpoints are removed after landing")
    }

    func testRepIterationsAreToldApartByCX() throws {
        let (s, _) = try makeSession()
        XCTAssertEqual(try s.runUntil(at("0x50:6:2")).landmark, Landmark(ip: 0x50, brctr: 6, cx: 2))
        XCTAssertEqual(try s.runUntil(at("0x50:6:1")).landmark, Landmark(ip: 0x50, brctr: 6, cx: 1))
        XCTAssertEqual(try s.runUntil(at("0x50:6:3")).landmark, Landmark(ip: 0x50, brctr: 6, cx: 3)) // back
        XCTAssertEqual(try s.runUntil(at("0x52")).landmark, Landmark(ip: 0x52, brctr: 6, cx: 0))
    }

    func testNeverReachedEndsWithAnErrorNotAHang() throws {
        let (s, _) = try makeSession()
        XCTAssertThrowsError(try s.runUntil(at("0x99"))) { error in
            XCTAssertEqual(String(describing: error), "0x99 not reached; replay ended at 0x52:6:0x0 (icount 16)")
            XCTAssertEqual((error as? ExitStatusProviding)?.exitStatus, 2)
        }
        let (s2, _) = try makeSession()
        XCTAssertThrowsError(try s2.runUntil(at("0x40:2"))) { error in
            XCTAssertTrue(String(describing: error).hasPrefix("0x40:2 not reached: the replay passed its branch count"), "\(error)")
        }
        let (s3, _) = try makeSession()
        XCTAssertThrowsError(try s3.runUntil(at("0x40#3"))) { error in
            XCTAssertTrue(String(describing: error).contains("not reached; replay ended"), "\(error)")
        }
    }

    func testGoingBackWithoutSeekingIsRefused() throws {
        let (s, _) = try makeSession(seeking: false)
        try s.runUntil(at("0x16:5"))
        XCTAssertThrowsError(try s.runUntil(at("0x16:2"))) { error in
            XCTAssertEqual(String(describing: error), "0x16:2 lies before the current position 0x16:5:0x0, and the scripted backend cannot go back")
        }
    }

    /// Landings become checkpoints; a later run to an exact point starts from the latest
    /// checkpoint before it — backwards, and forwards past the current position.
    func testCheckpointsAreUsedBackwardsAndForwards() throws {
        let b = ScriptedBackend(stream: Self.stream)
        b.checkpointing = true
        let s = ReplaySession(name: "t", backend: b)
        s.timeline.spacing = 1
        try s.start(paused: true)
        // Land at the 2nd 0x16 (stream index 12, brctr 5): a checkpoint there.
        XCTAssertEqual(try s.runUntil(at("0x16:5")).landmark, Landmark(ip: 0x16, brctr: 5, cx: 0))
        XCTAssertEqual(s.timeline.checkpoints.map(\.icount), [0, 12])
        // Back to the start, then forwards to a point after the checkpoint: from the checkpoint.
        XCTAssertEqual(try s.runUntil(at("0x10:0")).landmark, Landmark(ip: 0x10, brctr: 0, cx: 0))
        XCTAssertEqual(b.seeks, 1)
        XCTAssertEqual(try s.runUntil(at("0x50:6:2")).landmark, Landmark(ip: 0x50, brctr: 6, cx: 2))
        XCTAssertEqual(b.seeks, 2, "jumped forward to the checkpoint at brctr 5")
        // A point before the checkpoint's count is reached from the start, not from it.
        XCTAssertEqual(try s.runUntil(at("0x40:4")).landmark, Landmark(ip: 0x40, brctr: 4, cx: 0))
        XCTAssertEqual(b.seeks, 3)
    }
}
