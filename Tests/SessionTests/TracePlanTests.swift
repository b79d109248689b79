import XCTest
@testable import XenTT
import TTSystem

/// The trace plan's file format (docs/sessions.md, "tt trace-task --plan DIR"), with a plan
/// written by hand: what it says, that it reads back as written, and what is refused.
final class TracePlanTests: XCTestCase {
    let text = """
        tt-trace-plan 1
        recording g32 /var/lib/tt/a dir/g32
        identity 79032 0x10f1b206
        start 0xe9dc7:137074:0x1dc1d icount 1000000
        end 0x100420:1250303:0xb03c003d icount 7194698
        seam 3000000 515290 0xe9dbf 0x6fa8 0x4d5ffe27 515289
        seam 5000000 916196 0xe9dc7 0x3f46f 0xf939838d 916196

        """

    func testReadsWhatTheFormatSays() throws {
        let p = try TracePlan(parsing: text, file: "plan")
        XCTAssertEqual(p.name, "g32")
        XCTAssertEqual(p.statePath, "/var/lib/tt/a dir/g32")
        XCTAssertEqual(p.identity, TracePlan.Identity(recordingBytes: 79032, indexCRC: 0x10f1_b206))
        XCTAssertEqual(p.start, Position(landmark: Landmark(ip: 0xe9dc7, brctr: 137_074, cx: 0x1dc1d), icount: 1_000_000))
        XCTAssertEqual(p.end, Position(landmark: Landmark(ip: 0x100420, brctr: 1_250_303, cx: 0xb03c_003d), icount: 7_194_698))
        XCTAssertEqual(p.segmentCount, 3)
        XCTAssertEqual(p.seams.map(\.icount), [3_000_000, 5_000_000])
        XCTAssertEqual(p.seams.map(\.fingerprint.registerHash), [0x4d5f_fe27, 0xf939_838d])
        // Segment k: the records after boundary k up to boundary k+1.
        XCTAssertEqual((0...3).map(p.boundaryCount), [137_074, 515_289, 916_196, 1_250_303])
        XCTAssertEqual(p.boundaryText(1), "0xe9dbf:515290:0x6fa8 icount 3000000")
        XCTAssertEqual(p.text, text)
    }

    func testRefusesAnotherVersionAndMalformedLines() {
        func refusal(_ t: String) -> String? {
            do { _ = try TracePlan(parsing: t, file: "plan"); return nil } catch {
                XCTAssertEqual((error as? ExitStatusProviding)?.exitStatus, 65)
                return String(describing: error)
            }
        }
        XCTAssertEqual(refusal(text.replacingOccurrences(of: "tt-trace-plan 1", with: "tt-trace-plan 2")),
                       "plan: line 1: trace plan format 2; this tt reads format 1 (make the plan again)")
        XCTAssertEqual(refusal(text.replacingOccurrences(of: " icount 1000000", with: " icount x")),
                       "plan: line 4: expected 'start 0xIP:BRCTR:0xCX icount N'")
        XCTAssertNotNil(refusal(text.replacingOccurrences(of: "recording g32 /var", with: "recording ../g32 /var")))
        XCTAssertNotNil(refusal(text.replacingOccurrences(of: "recording g32 /var", with: "recording g32 var")))
        // Seams out of order (the second before the first).
        XCTAssertEqual(refusal(text.replacingOccurrences(of: "seam 5000000 916196", with: "seam 2000000 916196")),
                       "plan: line 7: a seam out of order (icount and raw count must rise from the start to the end)")
    }
}
