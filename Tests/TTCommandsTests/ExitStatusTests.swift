import XCTest
import TestProcesses
@testable import TTCommands

final class ExitStatusTests: XCTestCase {
    struct DataProblem: Error, ExitStatusProviding, CustomStringConvertible {
        var exitStatus: Int32 { ExitStatus.dataError }
        var description: String { "log.bin: byte 48, entry 2: bad" }
    }

    func testReportUsesTheErrorsStatus() {
        XCTAssertEqual(reportAndExit(DataProblem()).rawValue, ExitStatus.dataError)
        struct Plain: Error {}
        XCTAssertEqual(reportAndExit(Plain()).rawValue, ExitStatus.failure)
    }

    /// Help, asked either way, is the command's help on stdout with status 0 (it was a
    /// "tt: CommandError(...)" line and status 1): checked on the built executables.
    func testHelpIsPrintedForEveryWayOfAsking() throws {
        for argv in [[TestProcesses.tt, "--help"], [TestProcesses.tt, "record", "--help"], [TestProcesses.tt, "help", "record"],
                     [TestProcesses.tt, "record", "-h"], [TestProcesses.buildDirectory.appendingPathComponent("bts-dump").path, "--help"]] {
            let r = try TestProcesses.run(argv)
            XCTAssertEqual(r.status, 0, "\(argv.dropFirst()): \(r.err)")
            XCTAssertTrue(r.out.contains("USAGE:"), "\(argv.dropFirst()): \(r.out)")
            XCTAssertFalse(r.err.contains("CommandError"), r.err)
        }
        let record = try TestProcesses.run([TestProcesses.tt, "record", "--help"])
        XCTAssertTrue(record.out.contains("--kernel"), record.out)
        // A wrong option is still a usage error, not help.
        let wrong = try TestProcesses.run([TestProcesses.tt, "record", "--no-such-option"])
        XCTAssertEqual(wrong.status, ExitStatus.usage, wrong.err)
    }
}
