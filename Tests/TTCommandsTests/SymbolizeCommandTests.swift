import Foundation
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
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    private var tt: String { root.appendingPathComponent(".build/debug/tt").path }

    private func fixture() throws -> String {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("tt-symcmd-\(getpid())").path
        let fx = root.appendingPathComponent("Tests/SymbolizeTests/Fixtures")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gcc", "-g", "-O2", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie",
                       fx.appendingPathComponent("unit_a.c").path, fx.appendingPathComponent("unit_b.c").path, "-o", out]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return out
    }

    private func gdbPrintA(_ file: String, _ address: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gdb", "-batch", "-nx", "-ex", "print/a \(address)", file]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let open = text.firstIndex(of: "<"), let close = text.lastIndex(of: ">") else { return "" }
        return String(text[open...close])
    }

    func testAnswersEachLineBeforeInputEnds() throws {
        guard FileManager.default.isExecutableFile(atPath: tt) else { throw XCTSkip("tt not built at \(tt)") }
        let file = try fixture()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tt)
        p.arguments = ["symbolize", "--symbols", file]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        let reader = output.fileHandleForReading
        for address in ["0x401100", "0x401110"] {
            input.fileHandleForWriting.write((address + "\n").data(using: .utf8)!)
            // One line back while stdin stays open: the command flushes per line on a pipe.
            var line = Data()
            while !line.contains(0x0a) {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                line.append(chunk)
            }
            let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .newlines)
            let name = try gdbPrintA(file, address)
            let hex = "0x00" + address.dropFirst(2)
            XCTAssertEqual(text, name.isEmpty ? hex : "\(hex) \(name)")
        }
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
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
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
        p.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    func testNameErrors() throws {
        guard FileManager.default.isExecutableFile(atPath: tt) else { throw XCTSkip("tt not built at \(tt)") }
        let file = try fixture()
        for (name, needle) in [("helper", "unit_b.c"), ("recurze", "recurse")] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tt)
            p.arguments = ["symbolize", "--symbols", file, "--name", name]
            let err = Pipe()
            p.standardError = err
            p.standardOutput = Pipe()
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 65, name)
            XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, text)
            XCTAssertTrue(text.contains(needle), text)
        }
    }
}
