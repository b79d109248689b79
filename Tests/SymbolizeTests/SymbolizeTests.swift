import Foundation
import SystemPackage
import TestProcesses
import TTSystem
import XCTest
@testable import Symbolize

final class GDBStyleTests: XCTestCase {
    /// The `<...>` part of our GDB style against gdb's `print/a`, for every instruction.
    private func compareEveryInstruction(_ file: String, minimumNamed: Int = 20) throws {
        let symbols = try SymbolFile(path: FilePath(file))
        let symbolizer = Symbolizer(symbols: symbols)
        let addresses = try objdumpInstructions(file).map(\.address)
        XCTAssertGreaterThan(addresses.count, 50, "objdump found too few instructions in \(file)")
        let expected = try gdbNames(file, addresses)
        XCTAssertEqual(expected.count, addresses.count, "gdb answered \(expected.count) of \(addresses.count) queries")
        var mismatches: [String] = []
        for (a, want) in zip(addresses, expected) {
            let got = symbolizer.describe(a, style: .gdb)
            let hex = "0x" + String(repeating: "0", count: max(0, 8 - String(a, radix: 16).count)) + String(a, radix: 16)
            let wantText = want.isEmpty ? hex : "\(hex) <\(want)>"
            if got != wantText { mismatches.append("\(hex): gdb <\(want)>, ours \(got)") }
        }
        XCTAssertEqual(mismatches, [], "\(mismatches.count) of \(addresses.count) differ in \(file)")
        XCTAssertGreaterThanOrEqual(expected.filter { !$0.isEmpty }.count, minimumNamed)
        // The fixture has what the comparison is meant to cover.
        XCTAssertTrue(expected.contains { $0.contains(".cold") }, "no cold part in \(file)")
        XCTAssertTrue(expected.contains { $0.contains("-") }, "no negative offset in \(file)")
    }

    func testEveryInstruction64() throws { try compareEveryInstruction(try Fixtures.binary(bits: 64)) }
    func testEveryInstruction32() throws { try compareEveryInstruction(try Fixtures.binary(bits: 32)) }

    /// PLT entries are `foo@plt` in gdb (BFD synthetic symbols), in the classic, IBT
    /// (.plt.sec) and non-PIE layouts.
    func testUserProgramWithPLT() throws {
        for (name, flags) in [("user", []), ("user-ibt", ["-fcf-protection=full", "-Wl,-z,ibtplt"]),
                              ("user-nopie", ["-no-pie", "-fno-pie"])] {
            let file = try Fixtures.userProgram(name, flags: flags)
            let symbols = try SymbolFile(path: FilePath(file))
            let addresses = try objdumpInstructions(file).map(\.address)
            let expected = try gdbNames(file, addresses)
            XCTAssertTrue(expected.contains { $0.hasPrefix("printf@plt") }, "gdb shows no printf@plt in \(name)")
            let sym = Symbolizer(symbols: symbols)
            for (a, want) in zip(addresses, expected) {
                XCTAssertEqual(sym.symbolicName(a, style: .gdb) ?? "", want, "\(name) 0x\(String(a, radix: 16))")
            }
        }
    }

    func testCXXNames() throws {
        let file = Fixtures.buildDir.appendingPathComponent("cxx_names").path
        _ = try runTool(["g++", "-g", "-O2", Fixtures.sourceDir.appendingPathComponent("cxx_names.cc").path, "-o", file])
        let symbols = try SymbolFile(path: FilePath(file))
        let addresses = try objdumpInstructions(file).map(\.address)
        let expected = try gdbNames(file, addresses)
        XCTAssertTrue(expected.contains { $0.hasPrefix("_Z") }, "no mangled names from gdb")
        XCTAssertTrue(expected.contains { $0.hasPrefix("ns::hidden(") }, "no qualified name from gdb")
        let sym = Symbolizer(symbols: symbols)
        var mismatches: [String] = []
        for (a, want) in zip(addresses, expected) where (sym.symbolicName(a, style: .gdb) ?? "") != want {
            mismatches.append("0x\(String(a, radix: 16)): gdb <\(want)> ours <\(sym.symbolicName(a, style: .gdb) ?? "")>")
        }
        XCTAssertEqual(mismatches, [])
    }

    /// A Swift program (tt itself): GDB prints DW_AT_linkage_name (mangled) for functions
    /// that have one, whatever the language. Every 500th instruction.
    func testSwiftLinkageNames() throws {
        let file = TestProcesses.tt
        guard FileManager.default.isExecutableFile(atPath: file) else { throw XCTSkip("no \(file)") }
        let copy = Fixtures.buildDir.appendingPathComponent("tt-copy").path
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: file, toPath: copy) // a snapshot: builds may replace it
        let all = try objdumpInstructions(copy).map(\.address)
        let addresses = stride(from: 0, to: all.count, by: 500).map { all[$0] }
        let expected = try gdbNames(copy, addresses)
        XCTAssertTrue(expected.contains { $0.hasPrefix("$s") }, "no Swift mangled names from gdb")
        let sym = Symbolizer(symbols: try SymbolFile(path: FilePath(copy)))
        var mismatches: [String] = []
        for (a, want) in zip(addresses, expected) where (sym.symbolicName(a, style: .gdb) ?? "") != want {
            mismatches.append("0x\(String(a, radix: 16)): gdb <\(want)> ours <\(sym.symbolicName(a, style: .gdb) ?? "")>")
        }
        XCTAssertEqual(mismatches, [])
    }

    /// Weak/global aliases, same-address locals, a shorter global inside a longer local and
    /// zero-sized symbols: every instruction against gdb, with DWARF (gas describes each
    /// assembler function symbol as a subprogram) and without (minimal symbols only).
    func testAliasesAndSameAddressSymbols() throws {
        for stripped in [false, true] {
            let file = try Fixtures.aliases(stripped: stripped)
            let symbols = try SymbolFile(path: FilePath(file))
            XCTAssertEqual(symbols.hasDebugInfo, !stripped)
            let addresses = try objdumpInstructions(file).map(\.address)
            let expected = try gdbNames(file, addresses)
            XCTAssertEqual(expected.count, addresses.count)
            // What the fixture is for, as gdb sees it: at one address, the first of two
            // subprograms in a unit with an address map, the last in a unit without, and
            // among minimal symbols the last name of the preferred type.
            let seen = Set(expected.map { $0.split(separator: "+").first.map(String.init) ?? "" })
            let wanted: Set<String> = stripped ? ["mm_weak", "cp_weak", "aa_global", "loc_b", "plain_label", "no_size", "weak_work"]
                                               : ["__mm_global", "cp_weak", "aa_global", "loc_b", "plain_label", "no_size", "real_work"]
            XCTAssertTrue(wanted.isSubset(of: seen), "gdb names \(seen.sorted()) lack \(wanted.subtracting(seen).sorted())")
            let sym = Symbolizer(symbols: symbols)
            var mismatches: [String] = []
            for (a, want) in zip(addresses, expected) where (sym.symbolicName(a, style: .gdb) ?? "") != want {
                mismatches.append("0x\(String(a, radix: 16)): gdb <\(want)> ours <\(sym.symbolicName(a, style: .gdb) ?? "")>")
            }
            XCTAssertEqual(mismatches, [], stripped ? "without DWARF" : "with DWARF")
        }
    }

    func testSymbolTableOnly() throws {
        for bits in [64, 32] {
            let file = try Fixtures.withoutDWARF(bits: bits)
            let symbols = try SymbolFile(path: FilePath(file))
            XCTAssertFalse(symbols.hasDebugInfo)
            let addresses = try objdumpInstructions(file).map(\.address)
            let expected = try gdbNames(file, addresses)
            let sym = Symbolizer(symbols: symbols)
            for (a, want) in zip(addresses, expected) {
                XCTAssertEqual(sym.symbolicName(a, style: .gdb) ?? "", want, "0x\(String(a, radix: 16)) in \(file)")
            }
        }
    }

    func testSeparateDebugFileThroughDebugLink() throws {
        let file = try Fixtures.withDebugLink(bits: 64)
        let symbols = try SymbolFile(path: FilePath(file))
        XCTAssertTrue(symbols.hasDebugInfo)
        XCTAssertNotNil(symbols.debugPath)
        let addresses = try objdumpInstructions(file).map(\.address)
        let expected = try gdbNames(file, addresses)
        XCTAssertTrue(expected.contains { !$0.isEmpty }, "gdb found no symbols through the debug link")
        let sym = Symbolizer(symbols: symbols)
        for (a, want) in zip(addresses, expected) {
            XCTAssertEqual(sym.symbolicName(a, style: .gdb) ?? "", want, "0x\(String(a, radix: 16))")
        }
        XCTAssertTrue(addresses.contains { !symbols.inlineChain(at: $0).isEmpty }, "no inline instances from the debug file")
    }

    func testSeparateDebugFileThroughBuildID() throws {
        let (file, root) = try Fixtures.withBuildID(bits: 64)
        XCTAssertFalse(try SymbolFile(path: FilePath(file), debugDirectories: []).hasDebugInfo)
        let symbols = try SymbolFile(path: FilePath(file), debugDirectories: [FilePath(root)])
        XCTAssertTrue(symbols.hasDebugInfo)
        XCTAssertTrue(symbols.debugPath?.string.hasPrefix(root) ?? false)
        let addresses = try objdumpInstructions(file).map(\.address)
        // gdb given the same debug directory is the oracle.
        let cmds = Fixtures.buildDir.appendingPathComponent("cmds-buildid")
        try (["set debug-file-directory \(root)", "file \(file)"] + addresses.map { "print/a 0x\(String($0, radix: 16))" })
            .joined(separator: "\n").appending("\n").write(to: cmds, atomically: true, encoding: .utf8)
        let out = try runTool(["gdb", "-batch", "-nx", "-x", cmds.path])
        let expected = out.split(separator: "\n").filter { $0.hasPrefix("$") }.map { line -> String in
            guard let open = line.firstIndex(of: "<"), line.hasSuffix(">") else { return "" }
            return String(line[line.index(after: open)..<line.index(before: line.endIndex)])
        }
        XCTAssertEqual(expected.count, addresses.count)
        let sym = Symbolizer(symbols: symbols)
        for (a, want) in zip(addresses, expected) {
            XCTAssertEqual(sym.symbolicName(a, style: .gdb) ?? "", want, "0x\(String(a, radix: 16))")
        }
        XCTAssertTrue(addresses.contains { !symbols.inlineChain(at: $0).isEmpty }, "no inline instances from the debug file")
    }

    func testIs64Bit() throws {
        XCTAssertTrue(try SymbolFile(path: FilePath(try Fixtures.binary(bits: 64))).is64Bit)
        XCTAssertFalse(try SymbolFile(path: FilePath(try Fixtures.binary(bits: 32))).is64Bit)
    }

    func testCodeBytesMatchObjdump() throws {
        for bits in [64, 32] {
            let file = try Fixtures.binary(bits: bits)
            let symbols = try SymbolFile(path: FilePath(file))
            for insn in try objdumpInstructions(file) where !insn.bytes.isEmpty {
                XCTAssertEqual(symbols.code(at: insn.address, count: insn.bytes.count), insn.bytes, "0x\(String(insn.address, radix: 16))")
            }
            XCTAssertNil(symbols.code(at: 0x10, count: 4))
        }
    }
}

final class InlineTests: XCTestCase {
    /// Inline chains and call sites against `addr2line -f -i`.
    func testInlineChainsMatchAddr2line() throws {
        for bits in [64, 32] {
            let file = try Fixtures.binary(bits: bits)
            let symbols = try SymbolFile(path: FilePath(file))
            let addresses = try objdumpInstructions(file).map(\.address)
            let input = addresses.map { "0x" + String($0, radix: 16) }
            let out = try runTool(["addr2line", "-f", "-i", "-a", "-e", file] + input)
            // With -a each answer starts with the address line, then name/location pairs.
            var answers: [[(name: String, location: String)]] = []
            var lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
            var i = 0
            while i < lines.count {
                guard lines[i].hasPrefix("0x") else { XCTFail("unexpected addr2line line \(lines[i])"); return }
                i += 1
                var frames: [(String, String)] = []
                while i + 1 < lines.count && !lines[i].hasPrefix("0x") {
                    frames.append((lines[i], lines[i + 1]))
                    i += 2
                }
                answers.append(frames)
            }
            XCTAssertEqual(answers.count, addresses.count)
            var inlined = 0, nested = 0
            for (a, frames) in zip(addresses, answers) {
                let chain = symbols.inlineChain(at: a)
                let function = symbols.function(containing: a)
                // Padding between functions: addr2line names the function before it (from
                // the line table), gdb names none; gdb is the oracle there (GDBStyleTests).
                if function == nil {
                    XCTAssertTrue(chain.isEmpty)
                    continue
                }
                let ours = chain.map(\.name) + [function.map(\.name) ?? "??"]
                let theirs = frames.map(\.name)
                XCTAssertEqual(ours, theirs, "\(bits)-bit 0x\(String(a, radix: 16))")
                // Frame k+1's location in addr2line is the call site of our frame k.
                for (k, frame) in chain.enumerated() where k + 1 < frames.count {
                    let loc = frames[k + 1].location.split(separator: " ").first.map(String.init) ?? ""
                    let want = loc.split(separator: ":").last.map(String.init) ?? ""
                    XCTAssertEqual(frame.callSite.map { String($0.line) }, want, "call site of \(frame.name) at 0x\(String(a, radix: 16))")
                    XCTAssertEqual(frame.callSite.map { URL(fileURLWithPath: $0.file).lastPathComponent },
                                   loc.split(separator: ":").first.map { URL(fileURLWithPath: String($0)).lastPathComponent })
                }
                if !chain.isEmpty { inlined += 1 }
                if chain.count > 1 { nested += 1 }
                XCTAssertTrue(chain.allSatisfy { $0.range.contains(a) })
            }
            XCTAssertGreaterThan(inlined, 5, "fixture has too few inlined addresses")
            XCTAssertGreaterThan(nested, 0, "fixture has no nested inlining")
        }
    }

    /// The inline style's two parts: the innermost instance measured from its entry, and
    /// the GDB-style outer name (whose exactness is tested against gdb above).
    func testInlineStyle() throws {
        let file = try Fixtures.binary(bits: 64)
        let symbols = try SymbolFile(path: FilePath(file))
        let sym = Symbolizer(symbols: symbols)
        var checked = 0
        for a in try objdumpInstructions(file).map(\.address) {
            let gdbPart = sym.symbolicName(a, style: .gdb)
            guard let inner = symbols.inlineChain(at: a).first, let gdbPart else {
                XCTAssertEqual(sym.describe(a, style: .inline), sym.describe(a, style: .gdb))
                continue
            }
            let off = Int64(bitPattern: a &- inner.entry)
            let innerText = off == 0 ? inner.name : (off > 0 ? "\(inner.name)+\(off)" : "\(inner.name)\(off)")
            XCTAssertEqual(sym.symbolicName(a, style: .inline), "\(innerText) @ \(gdbPart)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0)
    }
}

final class NameLookupTests: XCTestCase {
    /// gdb's `print &NAME` address for a function, as the oracle.
    private func gdbAddress(_ file: String, _ expression: String) throws -> UInt64? {
        let out = try runTool(["gdb", "-batch", "-nx", "-ex", "print/x (unsigned long)&\(expression)", file])
        guard let eq = out.range(of: "= 0x") else { return nil }
        return UInt64(out[eq.upperBound...].prefix { $0.isHexDigit }, radix: 16)
    }

    func testUniqueNames() throws {
        for bits in [64, 32] {
            let file = try Fixtures.binary(bits: bits)
            let symbols = try SymbolFile(path: FilePath(file))
            for name in ["recurse", "tailer", "tail_target", "b_entry", "_start", "report_failure"] {
                let want = try gdbAddress(file, name)
                XCTAssertNotNil(want)
                XCTAssertEqual(try symbols.address(ofSymbol: name), want, name)
                XCTAssertEqual(symbols.function(startingAt: want!)?.name, name)
            }
        }
    }

    func testSameNamedStatics() throws {
        let file = try Fixtures.binary(bits: 64)
        let symbols = try SymbolFile(path: FilePath(file))
        XCTAssertThrowsError(try symbols.address(ofSymbol: "helper")) { error in
            let e = error as? SymbolizeError
            XCTAssertEqual(e?.exitStatus, ExitStatus.dataError)
            let text = String(describing: error)
            XCTAssertTrue(text.contains("ambiguous") && text.contains("unit_a.c") && text.contains("unit_b.c"), text)
            XCTAssertFalse(text.contains("\n"))
        }
        for unit in ["unit_a.c", "unit_b.c"] {
            let want = try gdbAddress(file, "'\(unit)'::helper")
            XCTAssertNotNil(want)
            XCTAssertEqual(try symbols.address(ofSymbol: "\(unit)::helper"), want)
        }
    }

    func testUnknownNameSuggestsCloseNames() throws {
        let symbols = try SymbolFile(path: FilePath(try Fixtures.binary(bits: 64)))
        XCTAssertThrowsError(try symbols.address(ofSymbol: "recurze")) { error in
            let e = error as? SymbolizeError
            XCTAssertEqual(e?.exitStatus, ExitStatus.dataError)
            XCTAssertTrue(e?.suggestions.contains("recurse") ?? false, String(describing: error))
            XCTAssertTrue(String(describing: error).contains("recurse"))
        }
        XCTAssertThrowsError(try symbols.address(ofSymbol: "no_such_thing_at_all"))
    }

    func testMissingAndNonELFFiles() throws {
        XCTAssertThrowsError(try SymbolFile(path: "/nonexistent/vmlinux")) { error in
            XCTAssertEqual((error as? SymbolizeError)?.exitStatus, ExitStatus.noInput)
        }
        let text = Fixtures.buildDir.appendingPathComponent("not-elf.txt")
        try "hello\n".write(to: text, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try SymbolFile(path: FilePath(text.path))) { error in
            XCTAssertEqual((error as? SymbolizeError)?.exitStatus, ExitStatus.dataError)
        }
    }
}

final class SymbolMapTests: XCTestCase {
    func testMapsWithPrefixAndBias() throws {
        let file64 = try Fixtures.binary(bits: 64)
        let file32 = try Fixtures.binary(bits: 32)
        let kernel = try SymbolFile(path: FilePath(file64))
        let user = try SymbolFile(path: FilePath(file32))
        let insns64 = try objdumpInstructions(file64).map(\.address)
        let insns32 = try objdumpInstructions(file32).map(\.address)
        let gdb64 = try gdbNames(file64, insns64)
        let gdb32 = try gdbNames(file32, insns32)
        let bias: Int64 = 0x7f00_0000_0000
        let sym = Symbolizer(maps: [
            SymbolMapEntry(range: 0x7f00_0000_0000...0x7f00_ffff_ffff, file: kernel, prefix: "Xen:", bias: bias),
            SymbolMapEntry(range: 0x0800_0000...0x0900_0000, file: user, prefix: "User:"),
        ])
        for (a, want) in zip(insns64, gdb64) {
            let runtime = a + UInt64(bias)
            XCTAssertEqual(sym.symbolicName(runtime, style: .gdb), want.isEmpty ? nil : "Xen:" + want)
            XCTAssertEqual(sym.resolve(runtime)?.entry.prefix, "Xen:")
            // Outside every map: bare hex.
            XCTAssertEqual(sym.describe(a, style: .gdb), "0x" + String(repeating: "0", count: max(0, 8 - String(a, radix: 16).count)) + String(a, radix: 16))
        }
        for (a, want) in zip(insns32, gdb32) {
            XCTAssertEqual(sym.symbolicName(a, style: .gdb), want.isEmpty ? nil : "User:" + want)
        }
        XCTAssertNil(sym.resolve(0x1234))
    }

    func testAppendUsesCacheConsistently() throws {
        let file = try Fixtures.binary(bits: 64)
        let sym = Symbolizer(symbols: try SymbolFile(path: FilePath(file)))
        let addresses = try objdumpInstructions(file).map(\.address)
        var pipeFDs: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        let reader = FileHandle(fileDescriptor: pipeFDs[0], closeOnDealloc: true)
        let out = OutputBuffer(fd: pipeFDs[1])
        var expected = ""
        for _ in 0..<2 {
            for a in addresses {
                for style in [SymbolStyle.gdb, .inline] {
                    try sym.append(a, style: style, to: out)
                    try out.endLine()
                    expected += sym.describe(a, style: style) + "\n"
                }
            }
        }
        try out.flush()
        close(pipeFDs[1])
        let got = String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(got, expected)
    }
}
