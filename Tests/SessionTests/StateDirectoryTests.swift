import XCTest
import Foundation
@testable import XenTT
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

final class StateDirectoryTests: XCTestCase {
    func testNamesAreValidated() {
        for good in ["g32", "my-guest_1.2", "A"] {
            XCTAssertNoThrow(try StateDirectory.validate(name: good), good)
        }
        let bad: [(String, String)] = [
            ("", "empty"), ("a/b", "contains '/'"), ("..", "contains '..'"), ("a..b", "contains '..'"),
            ("-x", "starts with '-'"), (".hidden", "starts with '-' or '.'"), ("a\u{7}b", "control characters"),
            ("a b", "only letters"), ("é", "only letters"), (String(repeating: "x", count: 65), "longer than 64"),
        ]
        for (name, why) in bad {
            XCTAssertThrowsError(try StateDirectory.validate(name: name), name) { error in
                XCTAssertTrue(String(describing: error).contains(why), "\(name): \(error)")
                XCTAssertEqual((error as? ExitStatusProviding)?.exitStatus, ExitStatus.dataError)
            }
        }
    }

    func testPathsAndModes() throws {
        let base = NSTemporaryDirectory() + "tt-sd-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let d = try StateDirectory(name: "rec", explicit: nil, base: base + "/deep/er")
        XCTAssertEqual(d.path.string, base + "/deep/er/rec")
        try d.create()
        var st = stat()
        XCTAssertEqual(lstat(d.path.string, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
        try d.writeLines("qemu.argv", ["qemu-system-x86_64", "-append", "console=ttyS0 quiet", ""])
        XCTAssertEqual(try d.readLines("qemu.argv"), ["qemu-system-x86_64", "-append", "console=ttyS0 quiet", ""])
        XCTAssertEqual(lstat(d.file("qemu.argv").string, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertThrowsError(try d.writeLines("qemu.argv", ["a\nb"]))
        // -s names the directory itself; '..' is refused, relative paths become absolute.
        XCTAssertEqual(try StateDirectory(name: "rec", explicit: base + "/s", base: "/nowhere").path.string, base + "/s")
        XCTAssertThrowsError(try StateDirectory(name: "rec", explicit: base + "/../x", base: "/"))
        XCTAssertTrue(try StateDirectory(name: "rec", explicit: "rel/dir", base: "/").path.isAbsolute)
    }

    /// tt takes only directories that are its own, and removes only its own files.
    func testOwnershipRules() throws {
        let base = NSTemporaryDirectory() + "tt-own-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: base) }
        XCTAssertEqual(mkdir(base, 0o755), 0)
        func dir(_ n: String) throws -> StateDirectory { try StateDirectory(name: "x", explicit: base + "/" + n, base: "/") }
        func mode(_ p: String) -> mode_t { var st = stat(); return lstat(p, &st) == 0 ? st.st_mode & 0o7777 : 0 }
        // A regular file, a symlink and a non-empty foreign directory are refused (73), untouched.
        XCTAssertTrue(FileManager.default.createFile(atPath: base + "/f", contents: Data("keep".utf8), attributes: [.posixPermissions: 0o644]))
        XCTAssertEqual(symlink(base + "/f", base + "/l"), 0)
        XCTAssertEqual(mkdir(base + "/v", 0o755), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: base + "/v/keep", contents: nil))
        for (n, why) in [("f", "a regular file, not a directory"), ("l", "a symbolic link"), ("v", "not a tt recording and is not empty")] {
            XCTAssertThrowsError(try dir(n).create(), n) { error in
                XCTAssertTrue("\(error)".contains(why), "\(n): \(error)")
                XCTAssertEqual((error as? ExitStatusProviding)?.exitStatus, ExitStatus.cannotCreate, n)
            }
        }
        XCTAssertEqual(mode(base + "/f"), 0o644)
        XCTAssertEqual(mode(base + "/v"), 0o755)
        XCTAssertThrowsError(try StateOwnership.remove(try dir("v"))) { XCTAssertTrue("\($0)".contains("not a tt recording"), "\($0)") }
        XCTAssertTrue(FileManager.default.fileExists(atPath: base + "/v/keep"))
        // Group- or other-writable, or another owner's: refused with the reason.
        XCTAssertEqual(mkdir(base + "/w", 0o700), 0)
        XCTAssertEqual(chmod(base + "/w", 0o770), 0)
        XCTAssertThrowsError(try dir("w").requireRecording()) { XCTAssertTrue("\($0)".contains("writable by its group"), "\($0)") }
        XCTAssertThrowsError(try dir("w").lock()) { XCTAssertTrue("\($0)".contains("writable by its group"), "\($0)") }
        if geteuid() == 0 {
            XCTAssertEqual(mkdir(base + "/o", 0o700), 0)
            XCTAssertEqual(chown(base + "/o", 1, 1), 0)
            XCTAssertThrowsError(try dir("o").requireRecording()) { XCTAssertTrue("\($0)".contains("owned by uid 1, not by you"), "\($0)") }
        }
        // An empty directory is taken; removal unlinks tt's files only and keeps the rest.
        XCTAssertEqual(mkdir(base + "/e", 0o755), 0)
        let e = try dir("e")
        try e.create()
        XCTAssertEqual(mode(base + "/e"), 0o700)
        try e.write("qemu.argv", "a\n")
        XCTAssertTrue(FileManager.default.createFile(atPath: base + "/e/mine", contents: nil))
        XCTAssertEqual(try StateOwnership.remove(e), ["mine"])
        XCTAssertFalse(e.fileExists("qemu.argv"))
        XCTAssertFalse(e.fileExists(StateOwnership.marker))
        XCTAssertTrue(e.fileExists("mine"))
        // Without other files the directory goes too.
        let g = try dir("g")
        try g.create()
        try g.write("qemu.argv", "a\n")
        XCTAssertEqual(try StateOwnership.remove(g), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/g"))
    }

    func testLockIsExclusiveAndNamesTheHolder() throws {
        let base = NSTemporaryDirectory() + "tt-lock-\(getpid())"
        let d = try StateDirectory(name: "x", explicit: base, base: "/")
        defer { _ = try? StateOwnership.remove(d) }
        try d.create()
        var first: StateLock? = try d.lock()
        XCTAssertNotNil(first)
        XCTAssertThrowsError(try d.lock()) { error in
            XCTAssertTrue(String(describing: error).hasSuffix("in use by pid \(getpid())"), "\(error)")
        }
        first = nil
        XCTAssertNoThrow(try d.lock())
    }
}
