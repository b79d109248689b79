import Foundation
import XCTest
import BTS
import SystemPackage
import XenTT

/// A log built with the replay-log writer; expected BTS bytes written by hand from the stamp
/// rule (record k of n in an entry stamped brctr has counter brctr − (n−1−k)).
final class ExtractTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDown() { removeTree(dir) }

    /// vCPU 0: counters 10, 11, 12 (entry stamped 12), then 19, 20 (stamped 20);
    /// vCPU 1: counters 10, 11 (stamped 11); an interrupt entry between them.
    func makeLog() throws -> String {
        let path = dir + "/run.log"
        let w = try ReplayLogWriter(creating: FilePath(path), header: ReplayLogHeader(producer: "test", guestWordSize: 64, vcpuCount: 2))
        func put(_ vcpu: UInt16, _ brctr: UInt64, _ recs: [(UInt64, UInt64)]) throws {
            let bytes = recs.flatMap { record($0.0, $0.1, 0x77) }
            try bytes.withUnsafeBytes { try w.appendBranches(vcpu: vcpu, cpu: CPUState(ip: 0x1000, brctr: brctr), records: $0) }
        }
        try put(0, 12, [(0xa10, 0xb10), (0xa11, 0xb11), (0xa12, 0xb12)])
        try [UInt8]().withUnsafeBytes {
            try w.append(type: .interrupt, info: 0, domid: 1, vcpu: 0, cpu: CPUState(ip: 0x2000, brctr: 12), payload: $0)
        }
        try put(1, 11, [(0xc10, 0xd10), (0xc11, 0xd11)])
        try put(0, 20, [(0xa19, 0xb19), (0xa20, 0xb20)])
        try w.close()
        return path
    }

    func extract(_ log: String, _ ex: BranchExtractor) throws -> ([UInt8], BranchExtractor.Summary) {
        let out = dir + "/out.bts"
        let w = try BTSWriter(creating: FilePath(out), extended: ex.extended)
        let s = try ex.extract(from: ReplayLogReader(path: FilePath(log)), logPath: FilePath(log), to: w)
        try w.close()
        return (try readAll(out), s)
    }

    func testExactPerRecordRangeOverAllVCPUs() throws {
        let log = try makeLog()
        let (bytes, s) = try extract(log, BranchExtractor(lower: 11, upper: 19))
        XCTAssertEqual(bytes, record(0xa11, 0xb11, 0x77) + record(0xa12, 0xb12, 0x77)
                       + record(0xc11, 0xd11, 0x77) + record(0xa19, 0xb19, 0x77))
        XCTAssertEqual(s.records, 4)
        XCTAssertEqual(s.branchEntriesUsed, 3)
        XCTAssertEqual(s.counterRange[0], 11...19)
        XCTAssertEqual(s.counterRange[1], 11...11)
    }

    func testExtendedOneVCPUWithRadius() throws {
        let log = try makeLog()
        let range = try XCTUnwrap(BranchExtractor.bounds(start: 12, startRadius: 1, end: 19, endRadius: 0))
        XCTAssertEqual(range, 11...19)
        let (bytes, s) = try extract(log, BranchExtractor(lower: range.lowerBound, upper: range.upperBound, vcpu: 0, extended: true))
        XCTAssertEqual(bytes, record(.max, .max, .max) + record(0xa11, 0xb11, 11) + record(0xa12, 0xb12, 12) + record(0xa19, 0xb19, 19))
        XCTAssertEqual(s.records, 3)
        XCTAssertEqual(s.counterRangeSeen[0], 10...20)
        XCTAssertNil(s.counterRangeSeen[1])
    }

    func testBoundsClampWithoutOverflow() {
        XCTAssertEqual(BranchExtractor.bounds(start: 5, startRadius: 100, end: .max - 1, endRadius: 5), 0...UInt64.max)
        XCTAssertEqual(BranchExtractor.bounds(start: nil, startRadius: 0, end: nil, endRadius: 0), 0...UInt64.max)
        XCTAssertNil(BranchExtractor.bounds(start: 10, startRadius: 0, end: 5, endRadius: 0))
    }

    func testSidecarIndexGivesTheSameRecords() throws {
        let log = try makeLog()
        let (plain, s0) = try extract(log, BranchExtractor(lower: 19, upper: 30))
        XCTAssertFalse(s0.usedIndex)
        try ReplayLogIndex.build(logAt: FilePath(log), spacing: 128).write(to: ReplayLogIndex.sidecarPath(for: FilePath(log)))
        let (indexed, s1) = try extract(log, BranchExtractor(lower: 19, upper: 30))
        XCTAssertTrue(s1.usedIndex)
        XCTAssertEqual(indexed, plain)
        XCTAssertEqual(indexed, record(0xa19, 0xb19, 0x77) + record(0xa20, 0xb20, 0x77))
        XCTAssertLessThan(s1.branchEntriesRead, s0.branchEntriesRead, "the index skipped entries")
    }

    func testCommandLineExtractAndDump() throws {
        let log = try makeLog()
        let out = dir + "/cli.bts"
        let r = try spawn([productsDirectory + "/bts-extract", "-d", "-x", "-S", "12:1", "-E", "0x13", "--vcpu", "0", "-o", out, log])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("3 records written"), r.err)
        let d = try spawn([productsDirectory + "/bts-dump", out])
        XCTAssertEqual(d.out, """
            000000000011: 0x00000a11 -> 0x00000b11
            000000000012: 0x00000a12 -> 0x00000b12
            000000000019: 0x00000a19 -> 0x00000b19

            """)
        let bad = try spawn([productsDirectory + "/bts-extract", "-o", out, dir + "/missing.log"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("missing.log"), bad.err)
        XCTAssertEqual(bad.err.split(separator: "\n").count, 1, bad.err)
    }
}

final class ExtractMoreTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDown() { removeTree(dir) }

    /// 32-bit entries (12-byte records: from u32, to u32, flags u32) widen to 24-byte records.
    func testThirtyTwoBitEntriesWiden() throws {
        let log = dir + "/32.log"
        let w = try ReplayLogWriter(creating: FilePath(log), header: ReplayLogHeader(producer: "test", guestWordSize: 32, vcpuCount: 1))
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
        let payload = le32(0xc010_0000) + le32(0xc020_0000) + le32(5) + le32(0xc010_0010) + le32(0xc030_0000) + le32(6)
        try payload.withUnsafeBytes {
            try w.append(type: .hardwareBranches32, info: 0, domid: 1, vcpu: 0, cpu: CPUState(ip: 0, brctr: 8), payload: $0)
        }
        try w.close()
        let out = dir + "/o.bts"
        let wr = try BTSWriter(creating: FilePath(out), extended: true)
        let s = try BranchExtractor(extended: true).extract(from: ReplayLogReader(path: FilePath(log)), logPath: FilePath(log), to: wr)
        try wr.close()
        XCTAssertEqual(s.records, 2)
        XCTAssertEqual(try readAll(out), record(.max, .max, .max) + record(0xc010_0000, 0xc020_0000, 7) + record(0xc010_0010, 0xc030_0000, 8))
    }

    func testRefusesToOverwriteTheLog() throws {
        let log = dir + "/x.log"
        let w = try ReplayLogWriter(creating: FilePath(log), header: ReplayLogHeader(producer: "t", guestWordSize: 64, vcpuCount: 1))
        try w.close()
        let before = try readAll(log)
        let r = try spawn([productsDirectory + "/bts-extract", "-o", log, log])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("refusing"), r.err)
        XCTAssertEqual(try readAll(log), before)
    }

    func testStatsOnAHandmadeFile() throws {
        let path = dir + "/s.bts"
        try writeFile(path, record(0x10, 0x20, 0) + record(0x30, 0x20, 0) + record(0x10, 0x20, 0) + record(0x40, 0x50, 0))
        let r = try spawn([productsDirectory + "/tt", "bts", "stats", "-t", "2", path])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, """
            records: 4
            format: raw
            unique targets: 2
            unique edges: 3
            hottest targets:
            3 0x00000020
            1 0x00000050
            hottest edges:
            2 0x00000010 -> 0x00000020
            1 0x00000030 -> 0x00000020

            """)
    }
}
