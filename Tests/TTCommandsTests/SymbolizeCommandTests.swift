import Foundation
import SystemPackage
import TestProcesses
import TTSystem
import XCTest
@testable import TTCommands

final class SymbolizeCommandParsingTests: XCTestCase {
    func testMapSpec() throws {
        let m = try MapSpec(parsing: "c0000000-ffffffff=/boot/vmlinux,prefix=Xen:,bias=-1000")
        XCTAssertEqual(m.range, 0xc000_0000...0xffff_ffff)
        XCTAssertEqual(m.file, "/boot/vmlinux")
        XCTAssertEqual(m.prefix, "Xen:")
        XCTAssertEqual(m.bias, -0x1000)
        let plain = try MapSpec(parsing: "0x400000-0x4fffff=a.out")
        XCTAssertEqual(plain.prefix, "")
        XCTAssertEqual(plain.bias, 0)
        for bad in ["400000=a.out", "5-4=a.out", "1-2=", "1-2=f,color=red", "1-2=f,bias=zz", "x-2=f", "1-2=f,prefix=<a>"] {
            XCTAssertThrowsError(try MapSpec(parsing: bad), bad) { error in
                XCTAssertFalse(String(describing: error).contains("\n"))
            }
        }
    }

    func testParseAddress() {
        XCTAssertEqual(parseAddress("0xffffffff81000000"), 0xffff_ffff_8100_0000)
        XCTAssertEqual(parseAddress("401000"), 0x401000)
        XCTAssertEqual(parseAddress("  0X1aB \r"), 0x1ab)
        XCTAssertNil(parseAddress("0x"))
        XCTAssertNil(parseAddress("12345678901234567"))
        XCTAssertNil(parseAddress("main"))
    }
}

/// The built `tt` as a pipe filter, against a gcc-built fixture and gdb's answers.
final class SymbolizeCommandProcessTests: XCTestCase {
    private var root: URL { TestProcesses.packageRoot }
    private var tt: String { TestProcesses.tt }

    private func fixture() throws -> String {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("tt-symcmd-\(getpid())").path
        let fx = root.appendingPathComponent("Tests/SymbolizeTests/Fixtures")
        let gcc = try TestProcesses.run(["gcc", "-g", "-O2", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie",
                                         fx.appendingPathComponent("unit_a.c").path, fx.appendingPathComponent("unit_b.c").path, "-o", out])
        XCTAssertEqual(gcc.status, 0)
        return out
    }

    private func gdbPrintA(_ file: String, _ address: String) throws -> String {
        let text = try TestProcesses.run(["gdb", "-batch", "-nx", "-ex", "print/a \(address)", file]).out
        guard let open = text.firstIndex(of: "<"), let close = text.lastIndex(of: ">") else { return "" }
        return String(text[open...close])
    }

    func testAnswersEachLineBeforeInputEnds() throws {
        guard FileManager.default.isExecutableFile(atPath: tt) else { throw XCTSkip("tt not built at \(tt)") }
        let file = try fixture()
        // tt reads a pipe we write and writes a pipe we read.
        let input = try FileDescriptor.pipe(options: .closeOnExec), output = try FileDescriptor.pipe(options: .closeOnExec)
        var configuration = Subprocess.Configuration(executable: tt, arguments: ["symbolize", "--symbols", file])
        configuration.input = .fileDescriptor(input.readEnd)
        configuration.output = .fileDescriptor(output.writeEnd)
        let p = try Subprocess.spawn(configuration)
        try input.readEnd.close()
        try output.writeEnd.close()
        defer { try? output.readEnd.close() }
        for address in ["0x401100", "0x401110"] {
            _ = try input.writeEnd.writeAll((address + "\n").utf8)
            // One line back while stdin stays open: the command flushes per line on a pipe.
            var line: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while !line.contains(0x0a) {
                let n = try chunk.withUnsafeMutableBytes { try output.readEnd.read(into: $0) }
                if n == 0 { break }
                line += chunk[0..<n]
            }
            let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .newlines)
            let name = try gdbPrintA(file, address)
            let hex = "0x00" + address.dropFirst(2)
            XCTAssertEqual(text, name.isEmpty ? hex : "\(hex) \(name)")
        }
        try input.writeEnd.close()
        XCTAssertEqual(p.wait().shellStatus, 0)
    }

    /// JSON lines: the inline chain and the function against addr2line -f -i.
    func testJSONInlineChain() throws {
        guard FileManager.default.isExecutableFile(atPath: tt) else { throw XCTSkip("tt not built at \(tt)") }
        let file = try fixture()
        // _start inlines work, which inlines square_sum and square: a deep chain.
        let nm = try output(["nm", file])
        guard let start = nm.split(separator: "\n").first(where: { $0.hasSuffix(" T _start") })?.split(separator: " ").first,
              let base = UInt64(start, radix: 16) else { return XCTFail("no _start in nm output") }
        let addresses = (0..<96).map { "0x" + String(base + UInt64($0), radix: 16) }
        let lines = try output([tt, "symbolize", "--symbols", file, "--json"] + addresses).split(separator: "\n")
        XCTAssertEqual(lines.count, addresses.count)
        // addr2line -a: an address line, then name/location pairs.
        var chains: [[String]] = []
        let a2l = try output(["addr2line", "-a", "-f", "-i", "-e", file] + addresses).split(separator: "\n").map(String.init)
        var i = 0
        while i < a2l.count {
            i += 1
            var names: [String] = []
            while i + 1 < a2l.count && !a2l[i].hasPrefix("0x") {
                names.append(a2l[i])
                i += 2
            }
            chains.append(names)
        }
        XCTAssertEqual(chains.count, addresses.count)
        var checked = 0
        for (line, theirs) in zip(lines, chains) {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let function = object?["function"] as? String else { continue }
            let inlined = (object?["inlined"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            XCTAssertEqual(inlined + [function], theirs, String(line))
            if !inlined.isEmpty { checked += 1 }
        }
        XCTAssertGreaterThan(checked, 0, "no inlined address near _start")
    }

    private func output(_ argv: [String]) throws -> String {
        try TestProcesses.run(argv).out
    }

    func testNameErrors() throws {
        guard FileManager.default.isExecutableFile(atPath: tt) else { throw XCTSkip("tt not built at \(tt)") }
        let file = try fixture()
        for (name, needle) in [("helper", "unit_b.c"), ("recurze", "recurse")] {
            let p = try TestProcesses.run([tt, "symbolize", "--symbols", file, "--name", name])
            let text = p.err
            XCTAssertEqual(p.status, 65, name)
            XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, text)
            XCTAssertTrue(text.contains(needle), text)
        }
    }
}
