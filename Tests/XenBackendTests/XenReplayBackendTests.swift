import XCTest
import SystemPackage
@testable import XenBackend
import XenTT

/// The session logic (XenTT's ReplaySession) over the Xen backend over a FAKE of the
/// C boundary. Expected landmarks are computed here from the fake's program (which
/// instruction is the N-th visit, how many branch arrivals precede it), not by the
/// code under test.
final class XenReplayBackendTests: XCTestCase {
    static let f: UInt64 = 0x2000       // a function entry (a call target)
    static let rep: UInt64 = 0x2006     // a rep movs: three iterations at one address
    static let loopTop: UInt64 = 0x1004

    /// main: 0x1000; five times { 0x1004; call f }; f: 0x2000, 0x2003, rep x3, ret;
    /// back at 0x100c; jmp to 0x1004. Then 0x1100 and the end of the run.
    static func program() -> [FakeXenToolstack.Instruction] {
        typealias I = FakeXenToolstack.Instruction
        var p = [I(ip: 0x1000, arrivedByBranch: false)]
        for iteration in 0..<5 {
            p.append(I(ip: loopTop, arrivedByBranch: iteration > 0))
            p.append(I(ip: 0x1008, arrivedByBranch: false))                // call f
            p.append(I(ip: f, cx: 3, arrivedByBranch: true))
            p.append(I(ip: 0x2003, cx: 3, arrivedByBranch: false))
            for cx: UInt64 in [3, 2, 1] { p.append(I(ip: rep, cx: cx, arrivedByBranch: false)) }
            p.append(I(ip: 0x2008, arrivedByBranch: false))                // ret
            p.append(I(ip: 0x100c, arrivedByBranch: true))
            p.append(I(ip: 0x1010, arrivedByBranch: false))                // jmp 0x1004 (or fall out)
        }
        p.append(I(ip: 0x1100, arrivedByBranch: false))
        return p
    }

    /// (ip, brctr, cx) of the n-th (1-based) visit to `ip`, computed from the program.
    static func landmark(ofVisit n: Int, to ip: UInt64) -> Landmark {
        let p = program()
        var seen = 0
        var branches: UInt64 = 0
        for (i, instruction) in p.enumerated() {
            if i > 0 && instruction.arrivedByBranch { branches += 1 }
            if instruction.ip == ip {
                seen += 1
                if seen == n { return Landmark(ip: ip, brctr: branches, cx: instruction.cx) }
            }
        }
        fatalError("no visit \(n) to \(ip)")
    }

    var root: FakeRoot!
    var state: StateDirectory!

    override func setUpWithError() throws {
        root = try FakeRoot()
        state = try StateDirectory(name: "rec1", explicit: root.path.string, base: "/unused")
        try state.write("replay.json", "")
    }

    func makeSession(hvm: Bool, timeTravel: Bool = true) throws -> (ReplaySession, XenReplayBackend, FakeXenToolstack) {
        let fake = FakeXenToolstack(program: Self.program())
        fake.hasTimeTravel = timeTravel
        var p = XenDomainParameters(name: "rec1")
        p.type = hvm ? .hvm : .pv
        p.kernel = "/boot/guest"
        p.stateDirectory = state.path
        let template = try XenDomainTemplate.load(from: XenDomainConfigTests.repository.appending("etc/xentt/\(XenDomainTemplate.fileName)"))
        let config = try template.render(p, role: .replay)
        let backend = XenReplayBackend(toolstack: fake, state: state, domainName: "rec1", configJSON: config.json, clock: FakeClock())
        return (ReplaySession(name: "rec1", backend: backend), backend, fake)
    }

    func testStartPausedCreatesOneDomainFromTheReplayConfig() throws {
        for hvm in [true, false] {
            let (session, _, fake) = try makeSession(hvm: hvm)
            let start = try session.start(paused: true)
            XCTAssertEqual(start.landmark, Landmark(ip: 0x1000, brctr: 0, cx: 0))
            XCTAssertEqual(fake.liveDomains.count, 1)
            let domain = try XCTUnwrap(fake.liveDomains.first)
            XCTAssertEqual(domain.hvm, hvm)
            XCTAssertEqual(domain.pauseCount, 1, "created paused, never paused twice")
            XCTAssertEqual(hvm ? domain.monitorOpen : domain.debugging, true)
            XCTAssertTrue(fake.createdConfigs[0].contains("\"tt_replay_flag\": 1"))
            XCTAssertEqual(try state.read("domid"), "\(domain.id.rawValue)\n")
            try session.destroy()
            XCTAssertEqual(fake.violations, [])
        }
    }

    func testRunUntilNthOccurrence() throws {
        for hvm in [true, false] {
            let (session, _, fake) = try makeSession(hvm: hvm)
            try session.start(paused: true)
            let landed = try session.runUntil(ResolvedLocation(address: Self.f, condition: .occurrence(3), text: "f#3"))
            XCTAssertEqual(landed.landmark, Self.landmark(ofVisit: 3, to: Self.f), hvm ? "HVM" : "PV")
            // Every breakpoint is gone again, from memory (HVM) or debug registers (PV), and the probes.
            let d = try XCTUnwrap(fake.liveDomains.first)
            XCTAssertFalse(d.memory.values.contains(0xCC))
            XCTAssertEqual(d.debugRegisters[7] & 0xff, 0)
            XCTAssertEqual(d.probes, [])
            try session.destroy()
            XCTAssertEqual(fake.violations, [])
        }
    }

    func testRunUntilExactRepIterationThenBackwardsByRestart() throws {
        for hvm in [true, false] {
            let (session, _, fake) = try makeSession(hvm: hvm)
            try session.start(paused: true)
            // The second iteration (cx = 2) of the rep instruction in the 4th call of f.
            let target = Self.landmark(ofVisit: 4 * 3 - 1, to: Self.rep)
            XCTAssertEqual(target.cx, 2)
            let exact = ResolvedLocation(address: Self.rep, condition: .exact(brctr: target.brctr, cx: 2))
            XCTAssertEqual(try session.runUntil(exact).landmark, target)
            let firstDomain = try XCTUnwrap(fake.liveDomains.first).id

            // Behind us: the replay restarts from the beginning and runs forward to it.
            let early = Self.landmark(ofVisit: 1, to: Self.f)
            let back = ResolvedLocation(address: Self.f, condition: .exact(brctr: early.brctr, cx: nil))
            XCTAssertEqual(try session.runUntil(back).landmark, early)
            XCTAssertEqual(fake.destroyed, [firstDomain])
            XCTAssertEqual(fake.liveDomains.count, 1)
            try session.destroy()
            XCTAssertEqual(fake.violations, [])
        }
    }

    func testNotReachedEndsWithTheEndOfTheReplay() throws {
        let (session, _, fake) = try makeSession(hvm: true)
        try session.start(paused: true)
        XCTAssertThrowsError(try session.runUntil(ResolvedLocation(address: 0x9999, condition: .next, text: "nowhere"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("nowhere not reached; replay ended at 0x1100:"), "\(error)")
        }
        try session.destroy()
        XCTAssertEqual(fake.liveDomains.count, 0)
        XCTAssertEqual(fake.violations, [])
    }

    func testStopKeepsStateAndCanStartAgain() throws {
        let (session, _, fake) = try makeSession(hvm: false)
        try session.start(paused: true)
        try session.runUntil(ResolvedLocation(address: Self.f, condition: .occurrence(2)))
        try session.stop()
        XCTAssertEqual(fake.liveDomains.count, 0)
        XCTAssertFalse(state.fileExists("domid"))
        XCTAssertTrue(state.fileExists("replay.json"), "stop keeps the recorded state")
        XCTAssertEqual(session.state, .initialized)
        let again = try session.start(paused: true)
        XCTAssertEqual(again.landmark.brctr, 0)
        try session.destroy()
        XCTAssertEqual(session.state, .invalid)
        XCTAssertThrowsError(try session.position())
        XCTAssertEqual(fake.liveDomains.count, 0)
        XCTAssertEqual(fake.violations, [])
    }

    /// A signal (here: the session's cancellation, what SIGINT cancels) while the guest runs:
    /// the domain is paused, the session reports where, and destroying it leaves nothing.
    func testInterruptPausesAndCleanupLeavesNoDomain() throws {
        for hvm in [true, false] {
            let (session, _, fake) = try makeSession(hvm: hvm)
            try session.start(paused: true)
            fake.stalled = true
            var polls = 0
            fake.onPoll = {
                polls += 1
                if polls == 5 { session.cancellation.cancel() }
            }
            XCTAssertThrowsError(try session.runUntil(ResolvedLocation(address: Self.f, condition: .next))) { error in
                guard case SessionError.interrupted = error else { return XCTFail("\(error)") }
            }
            XCTAssertEqual(try XCTUnwrap(fake.liveDomains.first).pauseCount, 1)
            try session.destroy()
            XCTAssertEqual(fake.liveDomains.count, 0)
            XCTAssertFalse(state.fileExists("domid"))
            XCTAssertEqual(fake.violations, [])
        }
    }

    func testStockXenIsRefusedBeforeCreatingAnything() throws {
        let (session, _, fake) = try makeSession(hvm: true, timeTravel: false)
        XCTAssertThrowsError(try session.start(paused: true)) { error in
            XCTAssertEqual((error as? XenError)?.exitStatus, 69)
            XCTAssertTrue("\(error)".contains("the hypervisor has no time travel"), "\(error)")
            XCTAssertTrue("\(error)".hasSuffix("use --backend qemu"), "\(error)")
        }
        XCTAssertEqual(fake.createdConfigs, [])
        XCTAssertEqual(fake.violations, [])
    }

    func testCrashWhileRunningFreelyIsReported() throws {
        let (session, _, fake) = try makeSession(hvm: true)
        fake.endReason = .crash
        try session.start(paused: true)
        XCTAssertThrowsError(try session.resume()) { error in
            XCTAssertEqual("\(error)", "domain 1 crashed")
        }
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }

    func testARunningDomainOfTheSameNameIsNotReplaced() throws {
        let (session, _, fake) = try makeSession(hvm: true)
        _ = try fake.createDomain(configJSON: #"{"c_info": {"name": "rec1", "type": "hvm"}}"#)
        XCTAssertThrowsError(try session.start(paused: true)) { error in
            XCTAssertEqual("\(error)", "a Xen domain named 'rec1' is already running (domain 1)")
        }
        XCTAssertEqual(fake.liveDomains.count, 1)
    }

    func testPVHasFourHardwareBreakpoints() throws {
        let (session, backend, fake) = try makeSession(hvm: false)
        try session.start(paused: true)
        for address: UInt64 in [0x1000, 0x1004, 0x1008, 0x100c] { try backend.insertBreakpoint(at: address) }
        XCTAssertThrowsError(try backend.insertBreakpoint(at: 0x1010)) { error in
            XCTAssertTrue("\(error)".contains("four hardware breakpoints"))
        }
        let d = try XCTUnwrap(fake.liveDomains.first)
        XCTAssertEqual(Array(d.debugRegisters[0..<4]).sorted(), [0x1000, 0x1004, 0x1008, 0x100c])
        XCTAssertEqual(d.debugRegisters[7], 0b01010101)
        XCTAssertEqual(d.probes.count, 4, "each breakpoint is a time-travel probe too")
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }

    func testDetachedReplayRunsWithoutStops() throws {
        let (session, _, fake) = try makeSession(hvm: true)
        fake.stalled = true  // a long replay, still running when tt looks
        try session.start(paused: false)
        let d = try XCTUnwrap(fake.liveDomains.first)
        XCTAssertEqual(d.pauseCount, 0)
        XCTAssertFalse(d.monitorOpen, "no controller is left to answer events")
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }
}
