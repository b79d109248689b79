import XCTest
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
        defer { _ = try? StateDirectory(name: "x", explicit: base, base: "/").removeAll() }
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

    func testLockIsExclusiveAndNamesTheHolder() throws {
        let base = NSTemporaryDirectory() + "tt-lock-\(getpid())"
        let d = try StateDirectory(name: "x", explicit: base, base: "/")
        defer { try? d.removeAll() }
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
