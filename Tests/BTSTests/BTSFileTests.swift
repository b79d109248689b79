import XCTest
import BTS
import SystemPackage
import TTSystem

/// Files are built byte by byte from the format definition (24 bytes LE: from, to, format);
/// expected text is written by hand from the output definition.
final class BTSFileTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDown() { removeTree(dir) }

    func testRawFileRecordsAndDump() throws {
        let path = dir + "/raw.bts"
        try writeFile(path, record(0x1000, 0x2000, 0x11) + record(0xffff_ffff_8100_0010, 0x0, 0))
        let f = try BTSFile(path: FilePath(path))
        XCTAssertFalse(f.isExtended)
        XCTAssertEqual(f.count, 2)
        XCTAssertNil(f.warning)
        XCTAssertEqual(f[0], BranchRecord(from: 0x1000, to: 0x2000, format: 0x11))
        XCTAssertEqual(f[1].from, 0xffff_ffff_8100_0010)
        let text = try captured { out in
            try BranchDump().dump(f, to: out)
        }
        XCTAssertEqual(text, """
            0: 0x00001000 -> 0x00002000
            1: 0xffffffff81000010 -> 0x00000000

            """)
    }

    func testExtendedFileShowsCounterAsTwelveDigits() throws {
        let path = dir + "/ext.bts"
        let ones = UInt64.max
        try writeFile(path, record(ones, ones, ones) + record(0xc0100000, 0xc0100020, 42) + record(0xc0100030, 0xc0100000, 1_000_000_000_001))
        let f = try BTSFile(path: FilePath(path))
        XCTAssertTrue(f.isExtended)
        XCTAssertEqual(f.count, 2)
        let text = try captured { out in
            try BranchDump().dump(f, to: out)
        }
        XCTAssertEqual(text, """
            000000000042: 0xc0100000 -> 0xc0100020
            1000000000001: 0xc0100030 -> 0xc0100000

            """)
    }

    func testPartialTrailingRecordIsIgnoredWithWarning() throws {
        let path = dir + "/partial.bts"
        try writeFile(path, record(1, 2, 3) + [0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        let f = try BTSFile(path: FilePath(path))
        XCTAssertEqual(f.count, 1)
        XCTAssertEqual(f.leftoverBytes, 5)
        let w = try XCTUnwrap(f.warning)
        XCTAssertTrue(w.contains("5 bytes"), w)
        XCTAssertTrue(w.contains("offset 24"), w)
    }

    func testEmptyAndMissingFiles() throws {
        let path = dir + "/empty.bts"
        try writeFile(path, [])
        let f = try BTSFile(path: FilePath(path))
        XCTAssertEqual(f.count, 0)
        XCTAssertFalse(f.isExtended)
        XCTAssertThrowsError(try BTSFile(path: FilePath(dir + "/nope"))) { e in
            XCTAssertEqual((e as? ExitStatusProviding)?.exitStatus, ExitStatus.noInput)
            XCTAssertTrue("\(e)".contains("nope"))
        }
    }

    func testWriterProducesTheDefinedBytes() throws {
        let path = dir + "/w.bts"
        let w = try BTSWriter(creating: FilePath(path), extended: true)
        try w.append(BranchRecord(from: 0x0102030405060708, to: 9, format: 10))
        try w.close()
        let ones = UInt64.max
        XCTAssertEqual(try readAll(path), record(ones, ones, ones) + [8, 7, 6, 5, 4, 3, 2, 1] + le64(9) + le64(10))
    }

    func testJSONLines() throws {
        let path = dir + "/j.bts"
        try writeFile(path, record(0xabc, 0x10, 7))
        let f = try BTSFile(path: FilePath(path))
        let text = try captured { out in
            try BranchDump().dumpJSONLines(f, symbol: { $0 == 0xabc ? "f\"x" : nil }, to: out)
        }
        XCTAssertEqual(text, #"{"n":0,"from":"0xabc","to":"0x10","format":7,"from_sym":"f\"x"}"# + "\n")
    }
}
