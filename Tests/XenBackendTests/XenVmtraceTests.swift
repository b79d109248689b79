import XCTest
import CIpt
@testable import XenBackend
import XenTT

/// Branch tracing of an HVM guest through vmtrace, over the FAKE toolstack: the fake
/// guest executes a hand-assembled program (the listing is objdump-checked in
/// IntelPTTests) and its trace buffer holds the PT packets of that execution, built
/// with libipt's encoder. Expected transfers come from the listing.
final class XenVmtraceTests: XCTestCase {
    //   1000: mov $3,%ecx / 1005: call 1020 / 100a: dec %ecx / 100c: jne 1005 / 100e: jmp 1030
    //   1020: nop / 1021: ret / 1030: hlt
    static let code: [UInt64: [UInt8]] = [
        0x1000: [0xb9, 0x03, 0x00, 0x00, 0x00], 0x1005: [0xe8, 0x16, 0x00, 0x00, 0x00],
        0x100a: [0xff, 0xc9], 0x100c: [0x75, 0xf7], 0x100e: [0xeb, 0x20],
        0x1020: [0x90], 0x1021: [0xc3], 0x1030: [0xf4],
    ]
    static let expected: [[UInt64]] = [
        [0x1005, 0x1020], [0x1021, 0x100a], [0x100c, 0x1005],
        [0x1005, 0x1020], [0x1021, 0x100a], [0x100c, 0x1005],
        [0x1005, 0x1020], [0x1021, 0x100a], [0x100e, 0x1030],
    ]

    /// The same execution, instruction by instruction, for the fake's replay.
    static func program(extraBranch: Bool = false) -> [FakeXenToolstack.Instruction] {
        typealias I = FakeXenToolstack.Instruction
        var p = [I(ip: 0x1000, arrivedByBranch: false)]
        for round in 0..<3 {
            p.append(I(ip: 0x1005, arrivedByBranch: round > 0))
            p.append(I(ip: 0x1020, arrivedByBranch: true))
            p.append(I(ip: 0x1021, arrivedByBranch: extraBranch && round == 1))
            p.append(I(ip: 0x100a, arrivedByBranch: true))
            p.append(I(ip: 0x100c, arrivedByBranch: false))
        }
        p.append(I(ip: 0x100e, arrivedByBranch: false))
        p.append(I(ip: 0x1030, arrivedByBranch: true))
        p.append(I(ip: 0x1031, arrivedByBranch: false))
        return p
    }

    static func stream() -> [UInt8] {
        var packets = [tt_pt_packet(ppt_psb), tt_pt_packet(ppt_psbend), tt_pt_packet_mode_exec64(),
                       tt_pt_packet_ip(ppt_tip_pge, pt_ipc_sext_48, 0x1000)]
        for taken in [1, 1, 0] as [UInt64] {
            packets.append(tt_pt_packet_ip(ppt_tip, pt_ipc_sext_48, 0x100a))
            packets.append(tt_pt_packet_tnt8(1, taken))
        }
        packets.append(tt_pt_packet_ip(ppt_tip_pgd, pt_ipc_sext_48, 0x1030))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let used: Int = buffer.withUnsafeMutableBytes { raw in
            var config = pt_config()
            pt_config_init(&config)
            config.begin = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            config.end = config.begin + raw.count
            let encoder = pt_alloc_encoder(&config)!
            defer { pt_free_encoder(encoder) }
            for var p in packets { precondition(pt_enc_next(encoder, &p) > 0) }
            var offset: UInt64 = 0
            pt_enc_get_offset(encoder, &offset)
            return Int(offset)
        }
        return Array(buffer[0..<used])
    }

    final class CollectingSink: BranchSink {
        var transfers: [BranchTransfer] = []
        func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws { transfers.append(contentsOf: batch) }
    }

    func makeSession(program: [FakeXenToolstack.Instruction]) throws -> (ReplaySession, FakeXenToolstack, FakeRoot) {
        let root = try FakeRoot()
        let state = try StateDirectory(name: "pt1", explicit: root.path.string, base: "/unused")
        let fake = FakeXenToolstack(program: program)
        fake.vmtraceStream = Self.stream()
        let json = #"{"c_info": {"name": "pt1", "type": "hvm"}, "b_info": {"vmtrace_buf_kb": 64}}"#
        let backend = XenReplayBackend(toolstack: fake, state: state, domainName: "pt1", configJSON: json, clock: FakeClock())
        return (ReplaySession(name: "pt1", backend: backend), fake, root)
    }

    func load(_ fake: FakeXenToolstack) throws {
        let d = try XCTUnwrap(fake.liveDomains.first)
        for (address, bytes) in Self.code {
            for (i, b) in bytes.enumerated() { d.memory[address + UInt64(i)] = b }
        }
    }

    func testTraceBetweenTwoPointsIsDecodedAndNumbered() throws {
        let (session, fake, root) = try makeSession(program: Self.program())
        try session.start(paused: true)
        try load(fake)
        XCTAssertTrue(session.backend.capabilities.contains(.branchTracing))
        let sink = CollectingSink()
        try session.setTracing(sink)
        XCTAssertEqual(fake.vmtraceControl, XenVmtraceTracer.control)
        let end = try session.runUntil(ResolvedLocation(address: 0x1030, condition: .next))
        XCTAssertEqual(end.landmark.brctr, 9)
        try session.setTracing(nil)
        XCTAssertEqual(sink.transfers.map { [$0.from, $0.to] }, Self.expected)
        XCTAssertEqual(sink.transfers.map(\.brctr), Array(1...9))
        try session.destroy()
        withExtendedLifetime(root) {}
        XCTAssertEqual(fake.violations, [])
    }

    /// A breakpoint of tt's still in the traced code when tracing ends: the decoder must
    /// read the guest's instruction, not tt's int3 (on the jne: an int3 there would not
    /// match the TNT bits; on the ret it would, by coincidence, as a far call).
    func testTTsOwnInt3IsNotDecodedAsGuestCode() throws {
        let (session, fake, root) = try makeSession(program: Self.program())
        try session.start(paused: true)
        try load(fake)
        let sink = CollectingSink()
        try session.setTracing(sink)
        try session.runUntil(ResolvedLocation(address: 0x1030, condition: .next))
        try session.backend.insertBreakpoint(at: 0x100c)
        XCTAssertEqual(try XCTUnwrap(fake.liveDomains.first).memory[0x100c], 0xCC)
        try session.setTracing(nil)
        XCTAssertEqual(sink.transfers.map { [$0.from, $0.to] }, Self.expected)
        try session.destroy()
        withExtendedLifetime(root) {}
        XCTAssertEqual(fake.violations, [])
    }

    func testACountThatDisagreesWithTheBranchCounterIsAnError() throws {
        let (session, fake, root) = try makeSession(program: Self.program(extraBranch: true))
        try session.start(paused: true)
        try load(fake)
        let sink = CollectingSink()
        try session.setTracing(sink)
        try session.runUntil(ResolvedLocation(address: 0x1030, condition: .next))
        XCTAssertThrowsError(try session.setTracing(nil)) { error in
            XCTAssertEqual("\(error)", "Intel PT decoding found 9 taken branches but the branch counter advanced by 10; the trace is not delivered")
        }
        XCTAssertEqual(sink.transfers.count, 0)
        try session.destroy()
        withExtendedLifetime(root) {}
    }

    /// The buffer is a ring: what lies between two stops is copied in order, across the wrap.
    func testTheRingIsCopiedInOrderAcrossTheWrap() throws {
        let fake = FakeXenToolstack(program: Self.program())
        fake.vmtraceStream = Array(0..<16)
        fake.vmtraceBufferSize = 16
        let id = try fake.createDomain(configJSON: #"{"c_info": {"name": "ring", "type": "hvm"}}"#)
        fake.scriptedVmtracePositions = [10, 14, 3, 3, 17]
        let tracer = try XenVmtraceTracer(toolstack: fake, domid: id, vcpu: 0)  // starts at 10
        try tracer.collect()  // 10..<14
        try tracer.collect()  // 14..<16, then 0..<3
        try tracer.collect()  // nothing new
        XCTAssertEqual(tracer.collected, [10, 11, 12, 13, 14, 15, 0, 1, 2])
        XCTAssertThrowsError(try tracer.collect()) { error in
            XCTAssertEqual("\(error)", "vmtrace output position 17 lies beyond the 16-byte buffer")
        }
        XCTAssertEqual(fake.violations, [])
    }
}
