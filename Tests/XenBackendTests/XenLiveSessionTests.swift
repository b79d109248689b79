import XCTest
import SystemPackage
@testable import XenBackend
import XenTT

/// Live sessions (stock Xen: no time travel) over the FAKE: created paused, debugging on
/// only while tt runs the guest, no branch counter, no going back; the guest's own int3
/// passed back; a crash reported every time; and the refusal without CONFIG_GDBSX.
final class XenLiveSessionTests: XCTestCase {
    typealias I = FakeXenToolstack.Instruction
    static let target: UInt64 = 0x3000

    /// 0x1000, an int3 of the guest's own at 0x1001 (trap: ip after it 0x1002), then the
    /// target four times, then the end.
    static func program(guestInt3: Bool = true) -> [I] {
        var p = [I(ip: 0x1000, arrivedByBranch: false),
                 I(ip: 0x1001, arrivedByBranch: false, guestInt3: guestInt3),
                 I(ip: 0x1002, arrivedByBranch: false)]
        for _ in 0..<4 {
            p.append(I(ip: target, cx: UInt64(p.count), arrivedByBranch: true))
            p.append(I(ip: 0x3001, arrivedByBranch: false))
        }
        p.append(I(ip: 0x1100, arrivedByBranch: true))
        return p
    }

    var root: FakeRoot!
    var state: StateDirectory!

    override func setUpWithError() throws {
        root = try FakeRoot()
        state = try StateDirectory(name: "live1", explicit: root.path.string, base: "/unused")
    }

    func make(_ program: [I], type: XenGuestType = .pv) throws -> (ReplaySession, XenReplayBackend, FakeXenToolstack) {
        let fake = FakeXenToolstack(program: program)
        fake.hasTimeTravel = false
        var p = XenDomainParameters(name: "live1")
        p.type = type
        p.kernel = "/boot/guest"
        p.stateDirectory = state.path
        let template = try XenDomainTemplate.load(from: XenDomainConfigTests.repository.appending("etc/xentt/\(XenDomainTemplate.fileName)"))
        let config = try template.render(p, role: .replay)
        let backend = XenReplayBackend(toolstack: fake, state: state, domainName: "live1", configJSON: config.json,
                                       clock: FakeClock(), live: true)
        return (ReplaySession(name: "live1", backend: backend), backend, fake)
    }

    func testCreatedPausedWithoutDebuggingAndDescribedAsLive() throws {
        let (session, backend, fake) = try make(Self.program())
        XCTAssertEqual(backend.capabilities, [.live])
        let start = try session.start(paused: true)
        let d = try XCTUnwrap(fake.liveDomains.first)
        XCTAssertEqual(d.pauseCount, 1)
        XCTAssertFalse(d.debugging, "debugging is switched on only when tt runs the guest")
        XCTAssertEqual(session.describe(start), "0x1000 (live, cx 0x0; no branch counter)")
        try session.destroy()
        XCTAssertEqual(fake.liveDomains.count, 0)
        XCTAssertEqual(fake.violations, [])
    }

    func testBranchCountConditionsAreRefusedAndNthHitCountsFromHere() throws {
        let (session, backend, fake) = try make(Self.program(guestInt3: false))
        try session.start(paused: true)
        XCTAssertThrowsError(try session.runUntil(ResolvedLocation(address: Self.target, condition: .exact(brctr: 1, cx: nil)))) {
            guard case SessionError.needsBranchCounter = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(($0 as? SessionError)?.exitStatus, 69)
        }
        let first = try session.runUntil(ResolvedLocation(address: Self.target, condition: .next))
        XCTAssertEqual(first.landmark.cx, 3)
        // From the first hit, #2 is the third hit of the run.
        let third = try session.runUntil(ResolvedLocation(address: Self.target, condition: .occurrence(2)))
        XCTAssertEqual(third.landmark.cx, 7)
        XCTAssertThrowsError(try session.setTracing(nil))
        try session.detach()
        XCTAssertFalse(try XCTUnwrap(fake.liveDomains.first).debugging, "debugging off once tt lets go")
        try backend.kill()
        XCTAssertEqual(fake.violations, [])
    }

    func testGuestOwnInt3IsPassedBack() throws {
        let (session, _, fake) = try make(Self.program())
        fake.freeRunLimit = 1
        try session.start(paused: true)
        let landed = try session.runUntil(ResolvedLocation(address: Self.target, condition: .next))
        XCTAssertEqual(landed.landmark.ip, Self.target)
        let d = try XCTUnwrap(fake.liveDomains.first)
        XCTAssertFalse(d.swallowedInt3)
        XCTAssertNil(d.shutdown, "the guest handled its own int3 and lives")
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }

    func testCrashEndsEveryRunWithAClearReason() throws {
        let (session, backend, fake) = try make(Self.program(guestInt3: false))
        fake.endReason = .crash
        try session.start(paused: true)
        for _ in 0..<3 {
            XCTAssertThrowsError(try session.runUntil(ResolvedLocation(address: 0x9999, condition: .next))) {
                guard case SessionError.notReached(_, let end) = $0 else { return XCTFail("\($0)") }
                XCTAssertTrue(end.contains("crashed"), end)
            }
            XCTAssertEqual(try backend.step(), .ended)
        }
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }

    func testPVWithoutGDBSXIsRefusedNamingIt() throws {
        let (session, _, fake) = try make(Self.program())
        fake.pvDebuggingAvailable = false
        try session.start(paused: true)
        XCTAssertThrowsError(try session.runUntil(ResolvedLocation(address: Self.target, condition: .next))) {
            XCTAssertTrue("\($0)".contains("CONFIG_GDBSX"), "\($0)")
            XCTAssertEqual(($0 as? XenError)?.exitStatus, 69)
        }
        XCTAssertFalse(try XCTUnwrap(fake.liveDomains.first).debugging)
        try session.destroy()
        XCTAssertEqual(fake.violations, [])
    }

    func testLinearIPIncludesTheCSBaseOutside64BitCode() {
        // Real mode at the reset vector: F000:FFF0 with base 0xffff0000.
        XCTAssertEqual(XenAddressing.linearIP(rip: 0xfff0, csBase: 0xffff_0000, csAttributes: 0x9b, efer: 0), 0xffff_fff0)
        XCTAssertEqual(XenAddressing.linearIP(rip: 0x7c00, csBase: 0, csAttributes: 0x9b, efer: 0), 0x7c00)
        // 64-bit code (EFER.LMA, CS.L): the base is ignored.
        XCTAssertEqual(XenAddressing.linearIP(rip: 0xffff_ffff_8100_0000, csBase: 0x1000, csAttributes: 0x29b, efer: 0x500),
                       0xffff_ffff_8100_0000)
    }
}
