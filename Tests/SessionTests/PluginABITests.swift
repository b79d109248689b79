import Foundation
import SystemPackage
import XCTest
import CTTPluginABI
@testable import QEMUBackend
import XenTT

/// The plugin's control-file layout is defined once, in the C header both sides import.
/// These tests hold that header to the documented table (docs/qemu-plugin-shm.md) and the
/// ring's records to the Swift type the controller reads them as.
final class PluginABITests: XCTestCase {
    /// The documented table, parsed from the doc: field name → byte offset.
    private func documentedOffsets() throws -> [String: Int] {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../docs/qemu-plugin-shm.md").standardized
        let text = try String(contentsOf: doc, encoding: .utf8)
        var table: [String: Int] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2, let offset = Int(cells[0]) else { continue }
            let field = cells[1].split(separator: " ").first.map(String.init) ?? ""
            table[field] = offset
        }
        return table
    }

    func testHeaderOffsetsMatchTheDocumentedTable() throws {
        let doc = try documentedOffsets()
        let header: [String: Int32] = [
            "magic": TT_SHM_OFF_MAGIC, "version": TT_SHM_OFF_VERSION, "ring_capacity": TT_SHM_OFF_RING_CAPACITY,
            "brctr": TT_SHM_OFF_BRCTR, "insns": TT_SHM_OFF_INSNS, "last_pc": TT_SHM_OFF_LAST_PC,
            "last_size": TT_SHM_OFF_LAST_SIZE, "last_flags": TT_SHM_OFF_LAST_FLAGS, "tracing": TT_SHM_OFF_TRACING,
            "trace_after": TT_SHM_OFF_TRACE_AFTER, "ring_waits": TT_SHM_OFF_RING_WAITS,
            "plugin_pid": TT_SHM_OFF_PLUGIN_PID, "last_target": TT_SHM_OFF_LAST_TARGET,
            "unexplained": TT_SHM_OFF_UNEXPLAINED, "handlers": TT_SHM_OFF_HANDLERS, "ring_head": TT_SHM_OFF_RING_HEAD, "ring_tail": TT_SHM_OFF_RING_TAIL,
            "last_info": TT_SHM_OFF_LAST_INFO, "expected": TT_SHM_OFF_EXPECTED, "delta": TT_SHM_OFF_DELTA,
            "branch_target": TT_SHM_OFF_BRANCH_TARGET,
        ]
        for (field, offset) in header {
            XCTAssertEqual(doc[field], Int(offset), "\(field): the doc's offset differs from ttplugin.h")
        }
        XCTAssertEqual(doc["ring"], Int(TT_SHM_HEADER_BYTES), "the ring starts after the header")
        XCTAssertEqual(Set(doc.keys), Set(header.keys).union(["ring"]), "a documented field the header lacks, or the reverse")
    }

    func testRingRecordIsTheBranchTransferTheControllerReads() {
        // The controller hands the ring's memory to sinks as BranchTransfer values.
        XCTAssertEqual(MemoryLayout<tt_shm_record>.size, 24)
        XCTAssertEqual(MemoryLayout<tt_shm_record>.stride, MemoryLayout<BranchTransfer>.stride)
        XCTAssertEqual(MemoryLayout<tt_shm_record>.offset(of: \.from), MemoryLayout<BranchTransfer>.offset(of: \.from))
        XCTAssertEqual(MemoryLayout<tt_shm_record>.offset(of: \.to), MemoryLayout<BranchTransfer>.offset(of: \.to))
        XCTAssertEqual(MemoryLayout<tt_shm_record>.offset(of: \.brctr), MemoryLayout<BranchTransfer>.offset(of: \.brctr))
        XCTAssertEqual(PluginControlBlock.recordBytes, 24)
    }

    /// An interrupt that came right after a `ret` (P, an indirect transfer) is two
    /// transfers (docs/bts.md): the ret's, to where it returned (the frame's saved address),
    /// then the interrupt's from there into the handler — when the handler entry is known;
    /// unknown, it reads as the ret's own transfer into the handler. A checkpoint restores the
    /// table it saved (replacing whatever the block had learned since), so a run from it
    /// classifies as the run that learned the handlers did.
    func testRestoredHandlerTableClassifiesAsTheRunThatLearnedIt() throws {
        let path = NSTemporaryDirectory() + "tt-shm-\(UUID().uuidString)"
        defer { unlink(path) }
        let block = try PluginControlBlock.create(at: FilePath(path), ringCapacity: 64)
        let ret: UInt64 = 0x1000, returnedTo: UInt64 = 0x2000, handler: UInt64 = 0x8000
        let indirect = UInt64(TT_SHM_FLAG_VALID) | UInt64(TT_KIND_INDIRECT.rawValue) << UInt64(TT_SHM_KIND_SHIFT)
        // A 64-bit frame at a stack pointer ≡ 8 (mod 16): rip, cs, rflags.
        var frame = [UInt8](repeating: 0, count: 48)
        for (i, v) in [returnedTo, 0x10, 0x202].enumerated() { withUnsafeBytes(of: v.littleEndian) { frame.replaceSubrange(8 * i..<8 * i + 8, with: $0) } }
        let reader: PluginControlBlock.FrameReader = { (frame, 64, 0x7ff8) }
        func arrivals() -> [[UInt64]] { block.pendingArrivals(at: handler, readFrame: reader).map { [$0.from, $0.to] } }
        func restore(_ handlers: [UInt64]) {
            block.restore(brctr: 10, instructions: 100, lastPC: ret, lastSize: 1, lastFlags: indirect, lastTarget: 0, handlers: handlers)
        }

        restore([0x9000, handler])
        XCTAssertEqual(block.handlers, [handler, 0x9000])
        XCTAssertEqual(arrivals(), [[ret, returnedTo], [returnedTo, handler]])
        restore([])
        XCTAssertEqual(block.handlers, [], "a restore replaces the table")
        XCTAssertEqual(arrivals(), [[ret, handler]])
    }

    func testMagicIsTheDocumentedString() {
        var magic = TT_SHM_MAGIC.littleEndian
        let text = withUnsafeBytes(of: &magic) { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(text, "TTSHM001")
    }
}
