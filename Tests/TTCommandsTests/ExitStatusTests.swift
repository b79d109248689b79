import XCTest
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
}
