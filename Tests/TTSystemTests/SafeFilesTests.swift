import Foundation
import SystemPackage
import TTSystem
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Replacing and removing files whose blocks are freed on a thread of their own
/// (`SafeFiles.commit`, `SafeFiles.removeFreeingLater`): what the names show afterwards, and
/// that a link is never followed.
final class SafeFilesTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "tt-safefiles-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
        super.tearDown()
    }

    private func write(_ name: String, _ bytes: Int, _ byte: UInt8) -> String {
        let path = dir + "/" + name
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(repeating: byte, count: bytes)))
        return path
    }

    /// The new file takes the name; the old one is unlinked (a descriptor opened on it before
    /// sees no link left), the temporary gone.
    func testCommitReplacesTheOldFileAndUnlinksIt() throws {
        let out = write("out", 8 << 20, 1)
        let temporary = write("out.partial", 4096, 2)
        let old = open(out, O_RDONLY)
        XCTAssertGreaterThanOrEqual(old, 0)
        defer { close(old) }
        try SafeFiles.commit(FilePath(temporary), to: FilePath(out))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), Data(repeating: 2, count: 4096))
        XCTAssertFalse(FileManager.default.fileExists(atPath: temporary))
        var st = stat()
        XCTAssertEqual(fstat(old, &st), 0)
        XCTAssertEqual(st.st_nlink, 0, "the replaced file has no name left")
        XCTAssertEqual(st.st_size, 8 << 20, "and is the old one")
    }

    /// Committing to a new name works as a rename.
    func testCommitToANewName() throws {
        let temporary = write("new.partial", 100, 3)
        try SafeFiles.commit(FilePath(temporary), to: FilePath(dir + "/new"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/new")), Data(repeating: 3, count: 100))
    }

    /// A regular file is removed; a symbolic link is removed itself, its target untouched;
    /// nothing there is nothing to do.
    func testRemoveFreeingLaterNeverFollowsALink() throws {
        let file = write("log", 1 << 20, 4)
        SafeFiles.removeFreeingLater(FilePath(file))
        XCTAssertFalse(FileManager.default.fileExists(atPath: file))

        let target = write("target", 10, 5)
        let link = dir + "/link"
        XCTAssertEqual(symlink(target, link), 0)
        SafeFiles.removeFreeingLater(FilePath(link))
        var st = stat()
        XCTAssertNotEqual(lstat(link, &st), 0, "the link is gone")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target)), Data(repeating: 5, count: 10))

        SafeFiles.removeFreeingLater(FilePath(dir + "/nothing"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["target"])
    }
}
