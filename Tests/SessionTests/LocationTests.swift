import XCTest
@testable import XenTT
import TTSystem

final class LocationTests: XCTestCase {
    func testForms() throws {
        XCTAssertEqual(try Location(parsing: "0x100390"), Location(place: .address(0x100390), condition: .next))
        XCTAssertEqual(try Location(parsing: "1049488"), Location(place: .address(1_049_488), condition: .next))
        XCTAssertEqual(try Location(parsing: "fib"), Location(place: .symbol("fib", offset: 0), condition: .next))
        XCTAssertEqual(try Location(parsing: "fib+0x10:42"), Location(place: .symbol("fib", offset: 16), condition: .exact(brctr: 42, cx: nil)))
        XCTAssertEqual(try Location(parsing: "0x100407:1175444:0x10"),
                       Location(place: .address(0x100407), condition: .exact(brctr: 1_175_444, cx: 16)))
        XCTAssertEqual(try Location(parsing: "copy_block:7:12"), Location(place: .symbol("copy_block", offset: 0), condition: .exact(brctr: 7, cx: 12)))
        XCTAssertEqual(try Location(parsing: "fib#3"), Location(place: .symbol("fib", offset: 0), condition: .occurrence(3)))
        XCTAssertEqual(try Location(parsing: "0x10#0x10"), Location(place: .address(16), condition: .occurrence(16)))
    }

    func testPrintsWhatItParses() throws {
        for text in ["0x100390", "fib", "fib+0x10:42", "0x100407:1175444:0x10", "fib#3", "_start.isra.0:0"] {
            XCTAssertEqual(try Location(parsing: text).description, text)
            XCTAssertEqual(try Location(parsing: Location(parsing: text).description), try Location(parsing: text))
        }
        let l = Landmark(ip: 0x100390, brctr: 1_174_278, cx: 0x3c3c0020)
        XCTAssertEqual(l.description, "0x100390:1174278:0x3c3c0020")
        XCTAssertEqual(try Location(parsing: l.description), Location(l))
    }

    func testErrorsSayWhatIsWrong() {
        let cases: [(String, String)] = [
            ("", "empty"),
            ("fib:", "branch count '' is not a number"),
            ("fib:x", "branch count 'x' is not a number"),
            ("fib:1:zz", "cx 'zz' is not a number"),
            ("fib:1:2:3", "too many ':'"),
            ("fib#0", "must be a number ≥ 1"),
            ("fib#", "must be a number ≥ 1"),
            ("fib:3#2", "either '#N' or ':brctr[:cx]'"),
            ("0xzz", "address '0xzz' is not a number"),
            ("12ab", "address '12ab' is not a number"),
            (":5", "no address or symbol"),
            ("fi b", "spaces or control characters"),
            ("fib\u{1}", "spaces or control characters"),
            ("caf\u{e9}", "contains '\u{e9}' (symbols and numbers are ASCII)"),
            ("fib#99999999999999999999", "is larger than 18446744073709551615"),
            ("fib:0x10000000000000000", "branch count '0x10000000000000000' is larger than"),
            ("f/b", "neither a number nor a symbol name"),
            ("fib+q", "offset 'q' is not a number"),
            ("0x", "address '0x' is not a number"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try Location(parsing: text), text) { error in
                let message = String(describing: error)
                XCTAssertTrue(message.contains(expected), "\(text): \(message)")
                XCTAssertTrue(message.hasPrefix("bad location '\(text)'"), message)
                XCTAssertEqual((error as? ExitStatusProviding)?.exitStatus, ExitStatus.dataError)
            }
        }
    }

    func testResolveAndMatch() throws {
        let r = try Location(parsing: "fib+4:10").resolved { name in
            XCTAssertEqual(name, "fib")
            return 0x1000
        }
        XCTAssertEqual(r.address, 0x1004)
        XCTAssertTrue(r.matches(Landmark(ip: 0x1004, brctr: 10, cx: 99)))
        XCTAssertFalse(r.matches(Landmark(ip: 0x1004, brctr: 11, cx: 99)))
        XCTAssertFalse(r.matches(Landmark(ip: 0x1000, brctr: 10, cx: 99)))
        let withCX = try Location(parsing: "0x1004:10:5").resolved { _ in 0 }
        XCTAssertTrue(withCX.matches(Landmark(ip: 0x1004, brctr: 10, cx: 5)))
        XCTAssertFalse(withCX.matches(Landmark(ip: 0x1004, brctr: 10, cx: 6)))
        struct NoSuch: Error, CustomStringConvertible { var description: String { "no function named 'nope'" } }
        XCTAssertThrowsError(try Location(parsing: "nope").resolved { _ in throw NoSuch() }) { error in
            XCTAssertEqual(String(describing: error), "cannot resolve location 'nope': no function named 'nope'")
        }
    }

    /// `syscall:NAME` names the kernel's entry of a system call; the x86-64 wrapper is
    /// tried first, then the 32-bit compat one, then the older spellings.
    func testSyscallEntries() throws {
        let l = try Location(parsing: "syscall:getdents64#2")
        XCTAssertEqual(l.place, .syscall("getdents64"))
        XCTAssertEqual(l.condition, .occurrence(2))
        XCTAssertEqual(l.description, "syscall:getdents64#2")
        let kernel: [String: UInt64] = ["__ia32_sys_read": 0x2000, "sys_read": 0x3000, "__x64_sys_getdents64": 0x4000]
        struct Missing: Error {}
        let lookup: (String) throws -> UInt64 = { name in guard let a = kernel[name] else { throw Missing() }; return a }
        XCTAssertEqual(try l.resolved(lookup).address, 0x4000)
        XCTAssertEqual(try Location(parsing: "syscall:read").resolved(lookup).address, 0x2000)
        XCTAssertThrowsError(try Location(parsing: "syscall:clone").resolved(lookup)) { error in
            XCTAssertTrue(String(describing: error).hasPrefix("cannot resolve location 'syscall:clone': no entry symbol (__x64_sys_clone, __ia32_sys_clone, __se_sys_clone, sys_clone)"), "\(error)")
        }
        for bad in ["syscall:", "syscall:read:5", "syscall:re-ad", "syscall:#2"] {
            XCTAssertThrowsError(try Location(parsing: bad), bad)
        }
    }

    /// `return` is a place of its own: the return of the call entered where the replay stands.
    func testReturn() throws {
        let l = try Location(parsing: "return")
        XCTAssertEqual(l.place, .callReturn)
        XCTAssertEqual(l.description, "return")
        let r = try l.resolved { _ in XCTFail("return names no symbol"); return 0 }
        XCTAssertEqual(r.condition, .callReturn)
        XCTAssertFalse(r.matches(Landmark(ip: 0, brctr: 0, cx: 0)), "decided by the stack, never by a landmark")
    }
}
