import SystemPackage
import TTSystem
import XCTest
@testable import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Writes placed in a file (OutputBuffer(file:at:direct:)) and a log written in regions
/// by several writers at once, checked against bytes built here in memory and against one
/// writer writing the same entries in order, then read back by the log's reader.
final class PlacedWritesTests: XCTestCase {
    private func bytes(_ path: FilePath) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        let size = Int(try fd.seek(offset: 0, from: .end))
        var out = [UInt8](repeating: 0, count: size)
        _ = try out.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }
        return out
    }

    /// Three writers fill three parts of one file at once, from unaligned offsets, with and
    /// without O_DIRECT, in pieces of every size (one larger than the buffer), flushing in
    /// the middle of a block and writing on after it: the file is exactly the bytes meant.
    func testPlacedWritersFillTheirPartsExactly() throws {
        let dir = TempDir()
        for useDirect in [true, false] {
            let path = dir.file("placed-\(useDirect)")
            let fd = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusiveCreate], permissions: [.ownerReadWrite])
            defer { try? fd.close() }
            let direct = useDirect ? SafeFiles.reopenDirect(fd) : nil
            if useDirect { XCTAssertNotNil(direct, "O_DIRECT refused on \(path)") }
            defer { try? direct?.close() }
            // Parts: [0, 5000), [5000, 5000 + 70001), [75001, 75001 + 300007).
            let sizes = [5000, 70001, 300_007]
            var starts = [0]
            for s in sizes.dropLast() { starts.append(starts.last! + s) }
            let expected = (0..<(starts.last! + sizes.last!)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 4096) }
            let threads = (0..<3).map { k in
                BackgroundThread<Void> {
                    let out = OutputBuffer(file: fd.rawValue, at: UInt64(starts[k]), direct: direct?.rawValue, capacity: 16384)
                    var at = starts[k]
                    let end = starts[k] + sizes[k]
                    var piece = 1
                    while at < end {
                        let n = min(piece, end - at)
                        try expected[at..<(at + n)].withUnsafeBytes { try out.append(bytes: $0) }
                        at += n
                        piece = piece * 3 + 1  // 1, 4, 13, … 29524, 88573 (> capacity)
                        if piece > 40 && piece < 130 { try out.flush() }  // a partial block written, then continued
                    }
                    try out.flush()
                }
            }
            for t in threads { try t.result().get() }
            XCTAssertEqual(try bytes(path), expected, "direct: \(useDirect)")
        }
    }

    private func header() -> ReplayLogHeader { ReplayLogHeader(producer: "placed test", guestWordSize: 64, vcpuCount: 1) }

    private func transfers(_ range: ClosedRange<UInt64>) -> [BranchTransfer] {
        range.map { BranchTransfer(from: 0x1000 + $0 * 3, to: 0x2000 + $0 * 5, brctr: $0) }
    }

    /// A log written in three regions at once (the later ones first) and adopted in order
    /// is byte-identical to one writer writing the same records in order through sinks
    /// cut at the same seams, and reads back whole; `layout` says where each region goes.
    func testRegionsAdoptedInOrderMakeTheSameLog() throws {
        let dir = TempDir()
        let seams: [UInt64] = [100, 100 + 4096 + 17, 100 + 4096 + 17 + 1, 100 + 4096 + 18 + 12_000]
        func prefix(_ w: ReplayLogWriter) throws {
            var text = Array("session".utf8)
            try text.withUnsafeMutableBytes { try w.append(type: .sessionStart, info: 1, domid: 0, vcpu: 0, cpu: CPUState(ip: 1, brctr: 100), payload: UnsafeRawBufferPointer($0)) }
        }
        func suffix(_ w: ReplayLogWriter) throws {
            try w.append(type: .traceOff, info: 0, domid: 0, vcpu: 0, cpu: CPUState(ip: 2, brctr: seams.last!), payload: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        func feed(_ sink: ReplayLogBranchSink, _ records: [BranchTransfer]) throws {
            var i = 0, n = 1
            while i < records.count {  // batches of 1, 2, 3, … records
                let m = min(n, records.count - i)
                try records[i..<(i + m)].withUnsafeBufferPointer { try sink.receive($0) }
                i += m
                n += 1
            }
            try sink.finish()
        }

        // One writer, in order.
        let one = try ReplayLogWriter(creating: dir.file("one.ttlog"), header: header())
        try prefix(one)
        for k in 0..<(seams.count - 1) {
            try feed(ReplayLogBranchSink(writer: one, after: seams[k]), transfers((seams[k] + 1)...seams[k + 1]).filter { _ in seams[k] < seams[k + 1] })
        }
        try suffix(one)
        try one.close()

        // Regions, placed by `layout`, written last first, then adopted.
        let log = try ReplayLogWriter(creating: dir.file("regions.ttlog"), header: header())
        try prefix(log)
        var offset = log.byteCount, index = log.entryCount
        var regions: [(ReplayLogWriter, ReplayLogBranchSink)] = []
        var starts: [UInt64] = []
        for k in 0..<(seams.count - 1) {
            starts.append(offset)
            let w = k == 0 ? log : try log.region(at: offset, entryIndex: index, after: seams[k])
            regions.append((w, ReplayLogBranchSink(writer: w, after: seams[k])))
            let size = ReplayLogBranchSink.layout(records: seams[k + 1] - seams[k], slotSize: Int(header().slotSize))
            offset += size.bytes
            index += size.entries
        }
        for k in (0..<(seams.count - 1)).reversed() {
            try feed(regions[k].1, transfers((seams[k] + 1)...seams[k + 1]).filter { _ in seams[k] < seams[k + 1] })
            if k == 0 { XCTAssertEqual(log.byteCount, starts[1], "segment 0 ends where the layout put segment 1") }
        }
        XCTAssertEqual(regions.last!.0.byteCount, offset, "layout")
        XCTAssertEqual(regions.last!.0.entryCount, index, "layout")
        for (w, _) in regions.dropFirst() { try log.adopt(w) }
        try suffix(log)
        try log.close()

        XCTAssertEqual(try bytes(dir.file("regions.ttlog")), try bytes(dir.file("one.ttlog")))
        let reader = try ReplayLogReader(path: dir.file("regions.ttlog"))
        var next = seams[0] + 1, entries = 0
        while let e = try reader.next() {
            try e.forEachBranch { from, to, _, brctr in
                XCTAssertEqual(brctr, next)
                XCTAssertEqual(from, 0x1000 + brctr * 3)
                XCTAssertEqual(to, 0x2000 + brctr * 5)
                next += 1
            }
            entries += 1
        }
        XCTAssertEqual(next, seams.last! + 1)
        XCTAssertEqual(UInt64(entries), index + 1)
    }

    /// A region that does not begin where the log ends is refused; what regions wrote
    /// beyond the log's end is cut off by discardBeyond, and the log reads back whole.
    func testAdoptRefusesAGapAndDiscardBeyondCutsWhatWasNotAdopted() throws {
        let dir = TempDir()
        let path = dir.file("gap.ttlog")
        let log = try ReplayLogWriter(creating: path, header: header())
        let first = ReplayLogBranchSink(writer: log, after: 0)
        try transfers(1...10).withUnsafeBufferPointer { try first.receive($0) }
        try first.finish()
        let size = ReplayLogBranchSink.layout(records: 10, slotSize: Int(header().slotSize))
        XCTAssertEqual(log.byteCount, UInt64(header().slotSize) + size.bytes)
        // A region one entry too far on.
        let far = try log.region(at: log.byteCount + size.bytes, entryIndex: log.entryCount + 1, after: 20)
        let farSink = ReplayLogBranchSink(writer: far, after: 20)
        try transfers(21...30).withUnsafeBufferPointer { try farSink.receive($0) }
        try farSink.finish()
        XCTAssertThrowsError(try log.adopt(far)) { XCTAssert("\($0)".contains("must begin here"), "\($0)") }
        // A region whose records do not follow its seam.
        let next = try log.region(at: log.byteCount, entryIndex: log.entryCount, after: 10)
        XCTAssertThrowsError(try ReplayLogBranchSink(writer: next, after: 10).receive(transfers(12...12).withUnsafeBufferPointer { $0 })) {
            XCTAssert("\($0)".contains("expected brctr 11, got 12"), "\($0)")
        }
        try far.flush()
        try log.discardBeyond()
        try log.append(type: .sessionEnd, info: 2, domid: 0, vcpu: 0, cpu: CPUState(ip: 0, brctr: 10), payload: UnsafeRawBufferPointer(start: nil, count: 0))
        try log.close()
        let reader = try ReplayLogReader(path: path)
        var types: [ReplayEventType] = []
        while let e = try reader.next() { types.append(e.type) }
        XCTAssertEqual(types, [.hardwareBranches64, .sessionEnd])
        XCTAssertEqual(reader.fileSize, log.byteCount)
    }
}
