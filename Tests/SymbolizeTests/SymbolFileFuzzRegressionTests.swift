import Foundation
import SystemPackage
import XCTest
@testable import Symbolize

/// Inputs fuzz/SymbolFileFuzz crashed on, rebuilt from a gcc fixture.
final class SymbolFileFuzzRegressionTests: XCTestCase {
    /// A code section whose file offset is near 2^64: code(at:count:) added it to the
    /// offset in the section and trapped on the overflow.
    func testCodeSectionOffsetNearTheTopIsNoCode() throws {
        let fixture = try Fixtures.withoutDWARF(bits: 64)
        var elf = try XCTUnwrap(FileManager.default.contents(atPath: fixture))
        func u16(_ o: Int) -> Int { Int(elf[o]) | Int(elf[o + 1]) << 8 }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(elf[o + $1]) << (8 * UInt64($1)) } }
        let shoff = Int(u64(0x28)), shentsize = u16(0x3a), shnum = u16(0x3c)
        // The first PROGBITS section with SHF_ALLOC|SHF_EXECINSTR (.init or .text).
        let text = try XCTUnwrap((0..<shnum).map { shoff + $0 * shentsize }.first { elf[$0 + 4] == 1 && u64($0 + 8) & 6 == 6 })
        let address = u64(text + 16)
        XCTAssertNotNil(try SymbolFile(path: FilePath(fixture), debugDirectories: []).code(at: address, count: 4))
        for i in 0..<8 { elf[text + 24 + i] = 0xff }  // sh_offset = 2^64 - 1
        let path = NSTemporaryDirectory() + "tt-top-offset-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try elf.write(to: URL(fileURLWithPath: path))
        let file = try SymbolFile(path: FilePath(path), debugDirectories: [])
        XCTAssertNil(file.code(at: address, count: 4))
        XCTAssertNil(file.code(at: address &+ 1, count: 16))
    }

    /// A text symbol at the very top of the address space: function(startingAt:) made the
    /// range addr..<(addr + size) with a wrapped upper bound and trapped.
    func testSymbolAtTheTopOfTheAddressSpace() throws {
        let fixture = try Fixtures.withoutDWARF(bits: 64)
        var elf = try XCTUnwrap(FileManager.default.contents(atPath: fixture))
        func u16(_ o: Int) -> Int { Int(elf[o]) | Int(elf[o + 1]) << 8 }
        func u64(_ o: Int) -> Int { (0..<8).reduce(0) { $0 | Int(elf[o + $1]) << (8 * $1) } }
        func put64(_ o: Int, _ v: UInt64) { for i in 0..<8 { elf[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        // ELF64 section headers: find .symtab (type 2) and its string table (sh_link).
        let shoff = u64(0x28), shentsize = u16(0x3a), shnum = u16(0x3c)
        let sections = (0..<shnum).map { shoff + $0 * shentsize }
        let symtab = try XCTUnwrap(sections.first { elf[$0 + 4] == 2 })
        let strtab = sections[Int(elf[symtab + 40])]
        let (symOffset, symSize, strOffset) = (u64(symtab + 24), u64(symtab + 32), u64(strtab + 24))
        var patched: String?
        for entry in stride(from: symOffset, to: symOffset + symSize, by: 24) where elf[entry + 4] & 0xf == 2 /* STT_FUNC */ {
            let nameStart = strOffset + Int(UInt32(elf[entry]) | UInt32(elf[entry + 1]) << 8 | UInt32(elf[entry + 2]) << 16)
            patched = String(decoding: elf[nameStart...].prefix { $0 != 0 }, as: UTF8.self)
            put64(entry + 8, UInt64.max)   // st_value
            put64(entry + 16, 16)          // st_size
            break
        }
        XCTAssertNotNil(patched, "no function symbol to move")
        let path = NSTemporaryDirectory() + "tt-top-symbol-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try elf.write(to: URL(fileURLWithPath: path))
        let file = try SymbolFile(path: FilePath(path), debugDirectories: [])
        let f = try XCTUnwrap(file.function(startingAt: UInt64.max))
        XCTAssertEqual(f.name, patched)
        XCTAssertEqual(f.entry, UInt64.max)
        XCTAssertEqual(f.range, UInt64.max..<UInt64.max)
        _ = Symbolizer(symbols: file).describe(UInt64.max, style: .gdb)
    }
}
