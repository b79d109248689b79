import Foundation
import XCTest
import BTS
import SystemPackage
import XenTT

/// Branch streams from a REAL execution: Fixtures/calltree.c is compiled freestanding,
/// single-stepped under gdb (`starti`, then `stepi` + print $pc until it exits), and every
/// step whose next pc is not the fall-through (pc + the length objdump gives the
/// instruction) is a taken branch. The call tree is checked against facts of the C
/// source; symbolic dumps against gdb's `print/a`.
final class RealExecutionTests: XCTestCase {
    struct Fixture {
        let dir: String
        let binary: String
        let transfers: [(from: UInt64, to: UInt64)]
        let mnemonics: [UInt64: String]
    }

    static var cached: Fixture?
    static var dirs: [String] = []

    override class func tearDown() { for d in dirs { removeTree(d) } }

    func fixture() throws -> Fixture {
        if let f = Self.cached { return f }
        let dir = try makeTempDir()
        Self.dirs.append(dir)
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/calltree.c").path
        let binary = dir + "/calltree"
        let cc = try spawn(["/usr/bin/gcc", "-g", "-O2", "-static", "-nostdlib", "-fno-pie", "-no-pie",
                          "-fcf-protection=none", "-o", binary, source])
        XCTAssertEqual(cc.status, 0, cc.err)

        // Instruction lengths and mnemonics from objdump (one line per instruction with --insn-width=16).
        let dis = try spawn(["/usr/bin/objdump", "-d", "--insn-width=16", binary])
        var lengths: [UInt64: Int] = [:]
        var mnemonics: [UInt64: String] = [:]
        for line in dis.out.split(separator: "\n") {
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard cols.count >= 3, let colon = cols[0].firstIndex(of: ":"),
                  let addr = UInt64(cols[0][..<colon].trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            lengths[addr] = cols[1].split(separator: " ").count
            mnemonics[addr] = String(cols[2].split(separator: " ").first ?? "")
        }

        let script = dir + "/step.gdb"
        try writeFile(script, Array("""
            set pagination off
            set confirm off
            starti
            printf "pc %lx\\n", $pc
            while 1
              stepi
              printf "pc %lx\\n", $pc
            end

            """.utf8))
        let g = try spawn(["/usr/bin/gdb", "-batch", "-nx", "-x", script, binary])
        let pcs = g.out.split(separator: "\n").compactMap { l -> UInt64? in
            l.hasPrefix("pc ") ? UInt64(l.dropFirst(3), radix: 16) : nil
        }
        XCTAssertGreaterThan(pcs.count, 100, g.err)
        var transfers: [(from: UInt64, to: UInt64)] = []
        for (a, b) in zip(pcs, pcs.dropFirst()) {
            let len = try XCTUnwrap(lengths[a], "objdump has no instruction at \(String(a, radix: 16))")
            if b != a + UInt64(len) { transfers.append((a, b)) }
        }
        let f = Fixture(dir: dir, binary: binary, transfers: transfers, mnemonics: mnemonics)
        Self.cached = f
        return f
    }

    func writeStream(_ f: Fixture, extended: Bool) throws -> String {
        let path = f.dir + (extended ? "/stream.xbts" : "/stream.bts")
        var bytes: [UInt8] = extended ? record(.max, .max, .max) : []
        for (i, t) in f.transfers.enumerated() { bytes += record(t.from, t.to, extended ? 1000 + UInt64(i) : 0) }
        try writeFile(path, bytes)
        return path
    }

    func testCallTreeMatchesTheSource() throws {
        let f = try fixture()
        let path = try writeStream(f, extended: false)
        let r = try spawn([productsDirectory + "/bts-trace", "--symbols", f.binary, path])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        func indent(_ l: String) -> Int { l.prefix { $0 == " " }.count / 2 }
        let text = lines.map { $0.trimmingCharacters(in: .whitespaces) }

        // fib(5): 15 calls, each returned from; recursion at most 5 deep below _start.
        XCTAssertEqual(text.filter { $0 == "Call to fib" }.count, 15)
        XCTAssertEqual(text.filter { $0 == "Return from fib" }.count, 15)
        XCTAssertEqual(lines.filter { $0.hasSuffix("Call to fib") }.map(indent).max(), 5)
        XCTAssertEqual(lines.filter { $0.hasSuffix("Call to fib") }.map(indent).min(), 1)
        // Every return is the ret of the frame that was entered (balanced per depth).
        var open: [String] = []
        for l in text {
            if l.hasPrefix("Call to ") { open.append(String(l.dropFirst(8))) }
            else if l.hasPrefix("Return from ") { XCTAssertEqual(open.popLast(), String(l.dropFirst(12)), l) }
        }
        XCTAssertEqual(open, [], "frames left open")
        // No branch of this program leaves a function other than by call/return/tail jump.
        XCTAssertFalse(r.out.contains("***"), r.out)
        XCTAssertFalse(r.out.contains("(inlined)"), "no inline frames without -I")

        // The tail call: tail jumps to leaf, leaf's ret pops both at once.
        let tailAt = try XCTUnwrap(text.firstIndex(of: "Call to tail"))
        XCTAssertEqual(Array(text[tailAt..<tailAt + 4]), ["Call to tail", "Call to leaf", "Return from leaf", "Return from tail"])
        XCTAssertEqual(indent(lines[tailAt]), 1)
        XCTAssertEqual(indent(lines[tailAt + 1]), 2)
        // call *%rax (2 bytes) and call *table(,%rbx,8) (7 bytes): returns recognised exactly.
        for caller in ["via_pointer", "via_table"] {
            let at = try XCTUnwrap(text.firstIndex(of: "Call to \(caller)"))
            XCTAssertEqual(Array(text[at..<at + 4]), ["Call to \(caller)", "Call to leaf", "Return from leaf", "Return from \(caller)"])
        }
        // Returns printed = frames popped; every popping branch is a `ret` per objdump.
        let rets = f.transfers.filter { f.mnemonics[$0.from] == "ret" }.count
        XCTAssertEqual(rets, 15 + 3 + 1 + 1 + 1) // fib, leaf ×3, via_pointer, via_table, outer (tail's frame has no ret)
        XCTAssertEqual(text.filter { $0.hasPrefix("Return from") }.count, rets + 1)
    }

    func testExtendedTraceShowsCounters() throws {
        let f = try fixture()
        let path = try writeStream(f, extended: true)
        let r = try spawn([productsDirectory + "/bts-trace", "--symbols", f.binary, path])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        // The first call is fib(5) from _start: the first transfer in the stream.
        XCTAssertEqual(f.transfers.first?.to, f.transfers.first.map { _ in lines.isEmpty ? 0 : f.transfers[0].to })
        XCTAssertEqual(lines.first, "  Call to fib (bctr=1000)")
        for l in lines { XCTAssertTrue(l.range(of: #" \(bctr=\d+\)$"#, options: .regularExpression) != nil, l) }
    }

    func testSymbolicDumpAgreesWithGDB() throws {
        let f = try fixture()
        let path = try writeStream(f, extended: false)
        let r = try spawn([productsDirectory + "/bts-dump", "-G", "--symbols", f.binary, path])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, f.transfers.count)
        // Oracle: gdb's print/a of every address, in one batch.
        var addresses: [UInt64] = []
        for t in f.transfers { addresses += [t.from, t.to] }
        var args = ["/usr/bin/gdb", "-batch", "-nx"]
        for a in addresses { args += ["-ex", "print/a 0x" + String(a, radix: 16)] }
        args.append(f.binary)
        let g = try spawn(args)
        let oracle = g.out.split(separator: "\n").map { l -> String in
            // "$12 = 0x401030 <fib+4>" → "0x00401030 <fib+4>" (we print at least 8 digits).
            let v = l.split(separator: "=", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            let parts = v.split(separator: " ", maxSplits: 1)
            let n = UInt64(parts[0].dropFirst(2), radix: 16)!
            var hex = String(n, radix: 16)
            while hex.count < 8 { hex = "0" + hex }
            return "0x" + hex + (parts.count > 1 ? " " + parts[1] : "")
        }
        XCTAssertEqual(oracle.count, addresses.count, g.err)
        for (i, line) in lines.enumerated() where 2 * i + 1 < oracle.count {
            XCTAssertEqual(line, "\(i): \(oracle[2 * i]) -> \(oracle[2 * i + 1])")
        }
    }

    func testExportsAreWellFormedAndBalanced() throws {
        let f = try fixture()
        let path = try writeStream(f, extended: false)
        let tt = productsDirectory + "/tt"
        let chrome = try spawn([tt, "bts", "export", "--format", "chrome", "--symbols", f.binary, path])
        XCTAssertEqual(chrome.status, 0, chrome.err)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(chrome.out.utf8)) as? [String: Any])
        let events = try XCTUnwrap(json["traceEvents"] as? [[String: Any]])
        var open: [String] = []
        var lastTs = -1
        var fibSlices = 0
        for e in events where (e["ph"] as? String) != "M" {
            let ts = try XCTUnwrap(e["ts"] as? Int)
            XCTAssertGreaterThanOrEqual(ts, lastTs, "timestamps go back")
            lastTs = ts
            let name = try XCTUnwrap(e["name"] as? String)
            switch e["ph"] as? String {
            case "B": open.append(name); if name == "fib" { fibSlices += 1 }
            case "E": XCTAssertEqual(open.popLast(), name)
            default: XCTFail("unexpected event \(e)")
            }
        }
        XCTAssertEqual(open, [])
        XCTAssertEqual(fibSlices, 15)

        let folded = try spawn([tt, "bts", "export", "--format", "folded", "--symbols", f.binary, path])
        XCTAssertEqual(folded.status, 0, folded.err)
        var total = 0
        var deepest = 0
        for line in folded.out.split(separator: "\n") {
            let parts = line.split(separator: " ")
            XCTAssertEqual(parts.count, 2, String(line))
            total += Int(parts[1]) ?? -1_000_000
            XCTAssertTrue(parts[0].hasPrefix("_start"), String(line))
            deepest = max(deepest, parts[0].split(separator: ";").filter { $0 == "fib" }.count)
        }
        XCTAssertEqual(total, f.transfers.count, "every branch counted once")
        XCTAssertEqual(deepest, 5)

        let jsonl = try spawn([tt, "bts", "export", "--format", "jsonl", "--symbols", f.binary, path])
        let rows = jsonl.out.split(separator: "\n")
        XCTAssertEqual(rows.count, f.transfers.count)
        let first = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(rows[0].utf8)) as? [String: Any])
        XCTAssertEqual(first["to"] as? String, "0x" + String(f.transfers[0].to, radix: 16))
        XCTAssertEqual(first["to_sym"] as? String, "fib")
    }

    func testInlinedFramesWithDashI() throws {
        let f = try fixture()
        let path = try writeStream(f, extended: false)
        // Oracle: addr2line -i says which branch sources lie in sum_to inlined into outer.
        let sources = Array(Set(f.transfers.map { $0.from })).sorted()
        var args = ["/usr/bin/addr2line", "-i", "-f", "-e", f.binary]
        args += sources.map { "0x" + String($0, radix: 16) }
        let a2l = try spawn(args)
        XCTAssertEqual(a2l.status, 0, a2l.err)
        // Output per address: pairs of lines (function, file:line), innermost first, one pair per
        // inline level; count the sources whose innermost is sum_to (needs at least one).
        let inSumTo = a2l.out.split(separator: "\n").enumerated().filter { $0.offset % 2 == 0 && $0.element == "sum_to" }.count
        XCTAssertGreaterThan(inSumTo, 0, "the fixture's loop branches should be in the inlined sum_to")

        let r = try spawn([productsDirectory + "/bts-trace", "-I", "--symbols", f.binary, path])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        let text = lines.map { $0.trimmingCharacters(in: .whitespaces) }
        let at = try XCTUnwrap(text.firstIndex(of: "Call to outer"))
        XCTAssertEqual(Array(text[at..<at + 4]), ["Call to outer", "Call to sum_to (inlined)", "Return from sum_to (inlined)", "Return from outer"])
        XCTAssertEqual(lines[at + 1].prefix { $0 == " " }.count, 4, "the inlined frame is one level below outer")
        XCTAssertEqual(text.filter { $0.hasSuffix("(inlined)") }.count, 2, r.out)
    }

    /// Function bounds from `nm -S` (symbol address and size), independent of DWARF.
    func nmBounds(_ binary: String) throws -> [String: Range<UInt64>] {
        let nm = try spawn(["/usr/bin/nm", "-S", "--defined-only", binary])
        var d: [String: Range<UInt64>] = [:]
        for line in nm.out.split(separator: "\n") {
            let c = line.split(separator: " ")
            guard c.count == 4, let a = UInt64(c[0], radix: 16), let n = UInt64(c[1], radix: 16) else { continue }
            d[String(c[3])] = a..<(a + n)
        }
        return d
    }

    func testBranchOutOfRangeIsReported() throws {
        let f = try fixture()
        let b = try nmBounds(f.binary)
        let fib = try XCTUnwrap(b["fib"]), leaf = try XCTUnwrap(b["leaf"])
        // The real first call (_start → fib), then a made-up jump from inside fib into the
        // middle of leaf: neither a call, nor a return, nor inside fib.
        let path = f.dir + "/oor.bts"
        let call = f.transfers[0]
        XCTAssertEqual(call.to, fib.lowerBound)
        try writeFile(path, record(call.from, call.to, 0) + record(fib.lowerBound + 9, leaf.lowerBound + 4, 0))
        let r = try spawn([productsDirectory + "/bts-trace", "--symbols", f.binary, path])
        XCTAssertEqual(r.status, 0, r.err)
        func hex8(_ v: UInt64) -> String { let h = String(v, radix: 16); return "0x" + String(repeating: "0", count: max(0, 8 - h.count)) + h }
        XCTAssertEqual(r.out, """
              Call to fib
              *** branch from \(hex8(fib.lowerBound + 9)) to \(hex8(leaf.lowerBound + 4)) out of range [\(hex8(fib.lowerBound))-\(hex8(fib.upperBound))]

            """)
    }

    func testMapPrefixAndUserFile() throws {
        let f = try fixture()
        let b = try nmBounds(f.binary)
        let fib = try XCTUnwrap(b["fib"])
        let path = f.dir + "/one.bts"
        try writeFile(path, record(fib.lowerBound + 2, fib.lowerBound, 0))
        let hex = "0x" + String(repeating: "0", count: max(0, 8 - String(fib.lowerBound, radix: 16).count)) + String(fib.lowerBound, radix: 16)
        let hex2 = "0x" + String(repeating: "0", count: max(0, 8 - String(fib.lowerBound + 2, radix: 16).count)) + String(fib.lowerBound + 2, radix: 16)
        let m = try spawn([productsDirectory + "/bts-dump", "--map", "0-ffffffff=\(f.binary),prefix=K:", path])
        XCTAssertEqual(m.out, "0: \(hex2) <K:fib+2> -> \(hex) <K:fib>\n", m.err)
        let u = try spawn([productsDirectory + "/bts-dump", "-U", f.binary, path])
        XCTAssertEqual(u.out, "0: \(hex2) <User:fib+2> -> \(hex) <User:fib>\n", u.err)
        // With a bias the image is moved: the same names at run-time addresses + 0x1000.
        let moved = f.dir + "/moved.bts"
        try writeFile(moved, record(fib.lowerBound + 0x1002, fib.lowerBound + 0x1000, 0))
        let biased = try spawn([productsDirectory + "/bts-dump", "-G", "--map", "0-ffffffff=\(f.binary),bias=0x1000", moved])
        XCTAssertTrue(biased.out.contains("<fib+2> -> "), biased.out + biased.err)
    }

    /// The real stream through the whole pipe: a replay log written in batches of 7 (the k-th
    /// taken branch has counter k), `bts-extract -x` of a middle range, then `bts-trace`.
    func testLogToExtractToTrace() throws {
        let f = try fixture()
        let log = f.dir + "/real.log"
        unlink(log)
        let w = try ReplayLogWriter(creating: FilePath(log), header: ReplayLogHeader(producer: "gdb-stepi", guestWordSize: 64, vcpuCount: 1))
        var k = 0
        while k < f.transfers.count {
            let batch = f.transfers[k..<min(k + 7, f.transfers.count)]
            let bytes = batch.flatMap { record($0.from, $0.to, 0) }
            k += batch.count
            try bytes.withUnsafeBytes { try w.appendBranches(vcpu: 0, cpu: CPUState(ip: 0, brctr: UInt64(k)), records: $0) }
        }
        try w.close()

        let lo = 10, hi = 30
        let out = f.dir + "/mid.xbts"
        let x = try spawn([productsDirectory + "/bts-extract", "-x", "-S", "\(lo)", "-E", "\(hi)", "-o", out, log])
        XCTAssertEqual(x.status, 0, x.err)
        var expected = record(.max, .max, .max)
        for c in lo...hi { expected += record(f.transfers[c - 1].from, f.transfers[c - 1].to, UInt64(c)) }
        XCTAssertEqual(try readAll(out), expected)

        let all = f.dir + "/all.xbts"
        XCTAssertEqual(try spawn([productsDirectory + "/bts-extract", "-x", "-o", all, log]).status, 0)
        let t = try spawn([productsDirectory + "/bts-trace", "--symbols", f.binary, all])
        XCTAssertEqual(t.status, 0, t.err)
        let lines = t.out.split(separator: "\n")
        XCTAssertEqual(lines.first, "  Call to fib (bctr=1)")
        XCTAssertEqual(lines.filter { $0.contains("Call to fib (") }.count, 15)
    }
}
