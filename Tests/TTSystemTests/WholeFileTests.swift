import SystemPackage
import TTSystem
import Foundation
import XCTest

final class WholeFileTests: XCTestCase {
    private func temporaryPath() -> FilePath {
        FilePath(NSTemporaryDirectory() + "tt-smallfile-\(UUID().uuidString)")
    }

    func testReadsPastOneChunkExactly() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path.string) }
        // Larger than the 64 KiB read chunk, with a byte pattern that shows any loss or reorder.
        let bytes = (0..<200_003).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        XCTAssertTrue(FileManager.default.createFile(atPath: path.string, contents: Data(bytes)))
        XCTAssertEqual(try readSmallFile(path, limit: 1 << 20), bytes)
    }

    func testMissingFileIsNil() throws {
        XCTAssertNil(try readSmallFile(temporaryPath(), limit: 10))
    }

    func testLargerThanTheLimitIsAnErrorNamingTheFile() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path.string) }
        XCTAssertTrue(FileManager.default.createFile(atPath: path.string, contents: Data(count: 100)))
        XCTAssertThrowsError(try readSmallFile(path, limit: 99)) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains(path.string) && text.contains("larger than 99 bytes"), text)
        }
        XCTAssertEqual(try readSmallFile(path, limit: 100)?.count, 100)
    }
}
