import Foundation
import XCTest
import BTS
import SystemPackage
import TTSystem
import XenTT

/// trace-task's OUT written in place by segments at once, against the same records
/// written in order by BTSWriter (the writer every other BTS output goes through).
final class InPlaceOutputTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDown() { removeTree(dir) }

    func testSegmentsWrittenAtOnceMakeTheFileBTSWriterMakes() throws {
        let first: UInt64 = 1_000_001
        let cuts = [0, 3, 70_000, 70_001, 200_000]  // record indices of the segments' starts, and the end
        let records = (0..<UInt64(cuts.last!)).map { BranchTransfer(from: 0xffff_8000_0000 + $0 * 13, to: 0x40_0000 + $0 * 7, brctr: first + $0) }
        for extended in [false, true] {
            let out = FilePath(dir + "/out-\(extended).bts")
            let inPlace = try TraceTaskOutput.InPlace(out: out, extended: extended)
            let sinks = try (0..<(cuts.count - 1)).map { try inPlace.segmentSink(recordIndex: UInt64(cuts[$0])) }
            let threads = (0..<(cuts.count - 1)).reversed().map { k in
                BackgroundThread<Void> {
                    var i = cuts[k]
                    while i < cuts[k + 1] {
                        let n = min(999, cuts[k + 1] - i)
                        try records[i..<(i + n)].withUnsafeBufferPointer { try sinks[k].receive($0) }
                        i += n
                    }
                    try sinks[k].finish()
                }
            }
            for t in threads { try t.result().get() }
            // A count the file does not hold is refused, and nothing is renamed.
            XCTAssertThrowsError(try inPlace.commit(records: UInt64(records.count - 1)))
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.string))
            let inPlace2 = try TraceTaskOutput.InPlace(out: FilePath(dir + "/again-\(extended).bts"), extended: extended)
            let all = try inPlace2.segmentSink(recordIndex: 0)
            try records.withUnsafeBufferPointer { try all.receive($0) }
            try all.finish()
            XCTAssertEqual(try inPlace2.commit(records: UInt64(records.count)), FilePath(dir + "/again-\(extended).bts"))

            let reference = FilePath(dir + "/reference-\(extended).bts")
            let w = try BTSWriter(creating: reference, extended: extended)
            for r in records { try w.append(BranchRecord(from: r.from, to: r.to, format: extended ? r.brctr : 0)) }
            try w.close()
            let want = try Data(contentsOf: URL(fileURLWithPath: reference.string))
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/again-\(extended).bts")), want)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: TraceTaskOutput.partialPath(for: out).string)), want,
                           "segments written at once, extended: \(extended)")
        }
    }
}
