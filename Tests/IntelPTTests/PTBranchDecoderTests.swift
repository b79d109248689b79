import XCTest
import Foundation
import TestProcesses
import CIpt
import IntelPT
import XenTT

/// PT streams built here with libipt's encoder (pt_encoder) from a known execution of a
/// hand-assembled program; the expected transfers are written down from the program's
/// listing (checked against objdump), not taken from the decoder.
final class PTBranchDecoderTests: XCTestCase {
    /// x86-64 code at 0x1000:
    ///   1000: b9 03 00 00 00   mov    $3,%ecx
    ///   1005: e8 16 00 00 00   call   1020
    ///   100a: ff c9            dec    %ecx
    ///   100c: 75 f7            jne    1005
    ///   100e: eb 20            jmp    1030
    ///   1020: 90               nop
    ///   1021: c3               ret
    ///   1030: f4               hlt
    static let base: UInt64 = 0x1000
    static let code: [UInt8] = {
        var c = [UInt8](repeating: 0xcc, count: 0x40)
        let put: (Int, [UInt8]) -> Void = { at, bytes in c.replaceSubrange(at..<at + bytes.count, with: bytes) }
        put(0x00, [0xb9, 0x03, 0x00, 0x00, 0x00])
        put(0x05, [0xe8, 0x16, 0x00, 0x00, 0x00])
        put(0x0a, [0xff, 0xc9])
        put(0x0c, [0x75, 0xf7])
        put(0x0e, [0xeb, 0x20])
        put(0x20, [0x90, 0xc3])
        put(0x30, [0xf4])
        return c
    }()

    /// The run: three calls of 0x1020 (ecx 3, 2, 1); jne taken twice, then not; jmp out.
    static let expected: [(UInt64, UInt64)] = [
        (0x1005, 0x1020), (0x1021, 0x100a), (0x100c, 0x1005),
        (0x1005, 0x1020), (0x1021, 0x100a), (0x100c, 0x1005),
        (0x1005, 0x1020), (0x1021, 0x100a),
        (0x100e, 0x1030),
    ]

    func readCode(_ address: UInt64, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard address >= Self.base, address < Self.base + UInt64(Self.code.count) else { return 0 }
        let start = Int(address - Self.base)
        let n = min(buffer.count, Self.code.count - start)
        Self.code.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + start, byteCount: n) }
        return n
    }

    /// Encode packets with libipt's encoder into a fresh buffer.
    func encode(_ packets: [pt_packet]) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let used: Int = try buffer.withUnsafeMutableBytes { raw in
            var config = pt_config()
            pt_config_init(&config)
            config.begin = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            config.end = config.begin + raw.count
            let encoder = try XCTUnwrap(pt_alloc_encoder(&config))
            defer { pt_free_encoder(encoder) }
            for var packet in packets {
                let n = pt_enc_next(encoder, &packet)
                XCTAssertGreaterThan(n, 0, "packet \(packet.type)")
            }
            var offset: UInt64 = 0
            pt_enc_get_offset(encoder, &offset)
            return Int(offset)
        }
        return Array(buffer[0..<used])
    }

    func sext48(_ type: pt_packet_type, _ ip: UInt64) -> pt_packet { tt_pt_packet_ip(type, pt_ipc_sext_48, ip) }

    /// Returns as TIPs (return compression off, DIS_RETC), conditional branches as TNT bits.
    func streamOfTheRun() throws -> [UInt8] {
        try encode([
            tt_pt_packet(ppt_psb), tt_pt_packet(ppt_psbend),
            tt_pt_packet_mode_exec64(),
            sext48(ppt_tip_pge, 0x1000),
            sext48(ppt_tip, 0x100a), tt_pt_packet_tnt8(1, 1),
            sext48(ppt_tip, 0x100a), tt_pt_packet_tnt8(1, 1),
            sext48(ppt_tip, 0x100a), tt_pt_packet_tnt8(1, 0),
            sext48(ppt_tip_pgd, 0x1030),
        ])
    }

    func testDecodesTheKnownBranchSequence() throws {
        let stream = try streamOfTheRun()
        var got: [BranchTransfer] = []
        let count = try stream.withUnsafeBytes { raw in
            try PTBranchDecoder(trace: raw, readMemory: readCode).decode(startBrctr: 100) { got.append($0) }
        }
        XCTAssertEqual(count, UInt64(Self.expected.count))
        XCTAssertEqual(got.map { [$0.from, $0.to] }, Self.expected.map { [$0.0, $0.1] })
        XCTAssertEqual(got.map(\.brctr), Array(101...109))
    }

    func testAnInterruptIsATransfer() throws {
        // The second `dec` at 0x100a is interrupted: FUP 0x100a, TIP 0x1030 (handler).
        let stream = try encode([
            tt_pt_packet(ppt_psb), tt_pt_packet(ppt_psbend),
            tt_pt_packet_mode_exec64(),
            sext48(ppt_tip_pge, 0x1000),
            sext48(ppt_tip, 0x100a), tt_pt_packet_tnt8(1, 1),
            sext48(ppt_tip, 0x100a),
            sext48(ppt_fup, 0x100a), sext48(ppt_tip, 0x1030),
            tt_pt_packet_ip(ppt_tip_pgd, pt_ipc_suppressed, 0),
        ])
        var got: [[UInt64]] = []
        try stream.withUnsafeBytes { raw in
            try PTBranchDecoder(trace: raw, readMemory: readCode).decode { got.append([$0.from, $0.to]) }
        }
        XCTAssertEqual(got, [[0x1005, 0x1020], [0x1021, 0x100a], [0x100c, 0x1005],
                             [0x1005, 0x1020], [0x1021, 0x100a], [0x100a, 0x1030]])
    }

    func testUnreadableCodeIsAnErrorNotAGuess() throws {
        let stream = try streamOfTheRun()
        XCTAssertThrowsError(try stream.withUnsafeBytes { raw in
            try PTBranchDecoder(trace: raw, readMemory: { _, _ in 0 }).decode { _ in }
        }) { error in
            XCTAssertTrue("\(error)".hasPrefix("Intel PT trace, byte offset "), "\(error)")
        }
    }

    func testEmptyAndUnsynchronisedBuffersHoldNoBranches() throws {
        XCTAssertEqual(try [UInt8]().withUnsafeBytes { try PTBranchDecoder(trace: $0, readMemory: readCode).decode { _ in } }, 0)
        let padding = [UInt8](repeating: 0, count: 64)  // PAD packets, no PSB
        XCTAssertEqual(try padding.withUnsafeBytes { try PTBranchDecoder(trace: $0, readMemory: readCode).decode { _ in } }, 0)
    }

    /// The hand assembly above, checked by objdump.
    func testTheListingMatchesObjdump() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tt-pt-code-\(getpid()).bin")
        try Data(Self.code).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let text = try TestProcesses.run(["/usr/bin/objdump", "-D", "-b", "binary", "-m", "i386:x86-64", "--adjust-vma=0x1000", file.path]).out
        for line in ["1000:\tb9 03 00 00 00       \tmov    $0x3,%ecx",
                     "1005:\te8 16 00 00 00       \tcall   0x1020",
                     "100a:\tff c9                \tdec    %ecx",
                     "100c:\t75 f7                \tjne    0x1005",
                     "100e:\teb 20                \tjmp    0x1030",
                     "1020:\t90                   \tnop",
                     "1021:\tc3                   \tret",
                     "1030:\tf4                   \thlt"] {
            XCTAssertTrue(text.contains(line), "objdump lacks '\(line)':\n\(text)")
        }
    }
}
