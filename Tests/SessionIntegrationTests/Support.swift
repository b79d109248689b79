import Foundation
import TestProcesses
import XCTest

/// Running tt, gdb and objdump for the integration tests (real QEMU, bundled guest).
enum IT {
    typealias Result = TestProcesses.Result

    static var buildDirectory: URL { TestProcesses.buildDirectory }
    static var tt: String { TestProcesses.tt }
    static var packageRoot: URL { TestProcesses.packageRoot }
    static func guest(_ file: String) -> String { TestProcesses.guest(file) }
    static func start(_ argv: [String]) throws -> (pid: pid_t, out: String, err: String) { try TestProcesses.start(argv) }

    /// Run a program and wait for it (a time-out fails the test).
    @discardableResult
    static func run(_ argv: [String], timeout: TimeInterval = 120) throws -> Result {
        let r = TestProcesses.collect(try TestProcesses.start(argv), timeout: timeout)
        if r.status == TestProcesses.timedOut { XCTFail("timed out: \(argv.joined(separator: " "))") }
        return r
    }

    /// Wait for a child; a time-out kills it and fails the test. Exit status, or 128 + signal.
    static func wait(_ pid: pid_t, timeout: TimeInterval = 120, what: String = "") -> Int32 {
        let status = TestProcesses.wait(pid, timeout: timeout)
        if status == TestProcesses.timedOut { XCTFail("timed out: \(what)") }
        return status
    }

    /// tt with a state directory; fails the test on a non-zero status unless `expect` says otherwise.
    @discardableResult
    static func tt(_ args: [String], state: String, expect: Int32? = 0, file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let r = try run([tt, args[0], "-s", state] + args.dropFirst())
        if let expect, r.status != expect {
            XCTFail("tt \(args.joined(separator: " ")) exited \(r.status), expected \(expect): \(r.err)\(r.out)", file: file, line: line)
        }
        return r
    }

    /// A landmark line "0x<ip>:<brctr>:0x<cx> (icount N)" split into numbers.
    struct Where: Equatable {
        var ip: UInt64, brctr: UInt64, cx: UInt64, icount: UInt64
        var location: String { "0x\(String(ip, radix: 16)):\(brctr):0x\(String(cx, radix: 16))" }
    }

    static func parseWhere(_ line: String) -> Where? {
        let parts = line.split(separator: " ")
        guard parts.count >= 3 else { return nil }
        let l = parts[0].split(separator: ":")
        guard l.count == 3, l[0].hasPrefix("0x"), l[2].hasPrefix("0x"),
              let ip = UInt64(l[0].dropFirst(2), radix: 16), let b = UInt64(l[1]), let cx = UInt64(l[2].dropFirst(2), radix: 16),
              let ic = UInt64(parts[2].dropLast()) else { return nil }
        return Where(ip: ip, brctr: b, cx: cx, icount: ic)
    }

    // MARK: independent oracles

    /// Instruction sizes and rep-string flags from objdump -d (the oracle for what a fall-through is).
    struct Instruction {
        var size: UInt64
        /// A rep-prefixed string instruction.
        var rep: Bool
        /// Transfers control itself (jumps, calls, returns, int, loops).
        var transfers: Bool
        /// Always transfers when it completes, also to the next instruction (jmp, call, ret,
        /// far forms, iret, int, syscall/sysret...): objdump's mnemonic says so.
        var unconditional: Bool = false
        /// objdump's text of it ("ret", "jne    100380 <...>").
        var mnemonic: String = ""
    }

    static func instructionTable(_ elf: String) throws -> [UInt64: Instruction] {
        let r = try run(["objdump", "-d", "-w", elf])
        var table: [UInt64: Instruction] = [:]
        for line in r.out.split(separator: "\n") {
            // "  100407:\tf3 a4                \trep movsb %ds:(%esi),%es:(%edi)"
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard cols.count >= 3, cols[0].hasSuffix(":"),
                  let addr = UInt64(cols[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            let bytes = cols[1].split(separator: " ").count
            let mnemonic = cols[2].trimmingCharacters(in: .whitespaces)
            let rep = mnemonic.hasPrefix("rep") && ["movs", "stos", "lods", "cmps", "scas", "ins", "outs"].contains { mnemonic.contains($0) }
            let op = mnemonic.split(separator: " ").first.map(String.init) ?? ""
            let transfers = op.hasPrefix("j") || op.hasPrefix("call") || op.hasPrefix("ret") || op.hasPrefix("iret")
                || op.hasPrefix("int") || op.hasPrefix("loop") || op.hasPrefix("lcall") || op.hasPrefix("ljmp") || op.hasPrefix("lret")
                || op == "syscall" || op == "sysret" || op == "ud2"
            let unconditional = ["jmp", "ljmp", "call", "lcall", "ret", "lret", "iret", "int", "syscall", "sysret", "sysenter", "sysexit"]
                .contains { op == $0 || (op.hasPrefix($0) && op.count <= $0.count + 1) } || op.hasPrefix("iret") || op.hasPrefix("int")
            table[addr] = Instruction(size: UInt64(bytes), rep: rep, transfers: transfers, unconditional: unconditional && !op.hasPrefix("into"),
                                      mnemonic: mnemonic)
        }
        return table
    }

    /// `nm` address of a symbol.
    static func symbolAddress(_ elf: String, _ name: String) throws -> UInt64 {
        let r = try run(["nm", elf])
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, f[2] == name, let a = UInt64(f[0], radix: 16) { return a }
        }
        throw NSError(domain: "nm", code: 1, userInfo: [NSLocalizedDescriptionKey: "no symbol \(name) in \(elf)"])
    }

    /// Single-step the live replay with gdb itself (not tt's client) `count` times and
    /// return the program counters: the first is where it started. gdb kills QEMU at the end.
    static func gdbStep(socket: String, count: Int, fromICount: UInt64? = nil) throws -> [UInt64] {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("tt-it-step-\(getpid()).py")
        try """
        import gdb
        pcs = [int(gdb.parse_and_eval("$pc"))]
        for i in range(\(count)):
            gdb.execute("stepi", to_string=True)
            pcs.append(int(gdb.parse_and_eval("$pc")))
        print("PCS " + " ".join("%x" % p for p in pcs))
        """.write(to: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: script) }
        // With fromICount, gdb first runs the replay to that instruction count itself
        // (QEMU's monitor command replay_break, then continue).
        let seek = fromICount.map { ["-ex", "monitor replay_break \($0)", "-ex", "continue"] } ?? []
        let r = try run(["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64", "-ex", "target remote \(socket)"]
                        + seek + ["-ex", "source \(script.path)", "-ex", "kill"], timeout: 300)
        guard let line = r.out.split(separator: "\n").first(where: { $0.hasPrefix("PCS ") }) else {
            throw NSError(domain: "gdb", code: 1, userInfo: [NSLocalizedDescriptionKey: "gdb gave no PCS line: \(r.err)"])
        }
        return line.dropFirst(4).split(separator: " ").map { UInt64($0, radix: 16)! }
    }

    /// Addresses of the guest's interrupt and exception entry points (from nm).
    static func handlerEntries(_ elf: String) throws -> Set<UInt64> {
        let r = try run(["nm", elf])
        var out: Set<UInt64> = []
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, f[2].hasPrefix("irq") || f[2].hasPrefix("exception_"), let a = UInt64(f[0], radix: 16) { out.insert(a) }
        }
        return out
    }

    /// From gdb's single-step pcs to the instructions actually executed, by the definition
    /// of a taken transfer (not by tt's code). A step that lands on an interrupt entry
    /// from an instruction that transfers nothing itself delivered an asynchronous
    /// interrupt without executing that instruction (icount does not move): it is dropped.
    /// The last pc is where the window ends (not executed).
    static func executed(_ pcs: [UInt64], table: [UInt64: Instruction], handlers: Set<UInt64>) throws -> [UInt64] {
        var out: [UInt64] = []
        for (p, n) in zip(pcs, pcs.dropFirst()) {
            guard let i = table[p] else {
                throw NSError(domain: "oracle", code: 1, userInfo: [NSLocalizedDescriptionKey: "0x\(String(p, radix: 16)) is not an instruction in objdump's listing"])
            }
            if handlers.contains(n) && !i.transfers && n != p + i.size { continue }
            out.append(p)
        }
        out.append(pcs.last!)
        return out
    }

    /// The branch-trace store's transfers (docs/bts.md) from gdb's single-step pcs, by the
    /// definition, not by tt's code: a step whose next pc is not the fall-through (and not the
    /// same rep string instruction again) is a transfer — the stub stops before it delivers
    /// an interrupt, so an interrupt shows as (interrupted next address → handler), after
    /// the branch that preceded it — and so is a step over an instruction that always
    /// transfers (objdump's mnemonic) that lands on the next instruction.
    static func transfers(steppedPCs pcs: [UInt64], table: [UInt64: Instruction]) throws -> [(from: UInt64, to: UInt64)] {
        var out: [(UInt64, UInt64)] = []
        for (p, n) in zip(pcs, pcs.dropFirst()) {
            guard let i = table[p] else {
                throw NSError(domain: "oracle", code: 1, userInfo: [NSLocalizedDescriptionKey: "0x\(String(p, radix: 16)) is not an instruction in objdump's listing"])
            }
            if n != p + i.size { if !(i.rep && n == p) { out.append((p, n)) } }
            else if i.unconditional { out.append((p, n)) }
        }
        return out
    }

    /// A recording's command line (state directory `state`), made to replay from anywhere
    /// with QEMU alone (no plugin, no tt), its snapshot image copied into a scratch directory.
    static func execLogReplayArguments(state: String, scratchBase: String) throws -> ([String], URL) {
        let record = try String(contentsOfFile: state + "/qemu.argv", encoding: .utf8).split(separator: "\n").map(String.init)
        let scratch = URL(fileURLWithPath: scratchBase).appendingPathComponent("execlog")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: scratch.path + "/snap.qcow2")
        try FileManager.default.copyItem(atPath: state + "/snapshot.qcow2", toPath: scratch.path + "/snap.qcow2")
        var argv: [String] = []
        var skip = false
        for arg in record {
            if skip { skip = false; continue }
            if arg == "-plugin" { skip = true; continue }
            argv.append(arg
                .replacingOccurrences(of: "rr=record", with: "rr=replay")
                .replacingOccurrences(of: "rrfile=recording.rr", with: "rrfile=\(state)/recording.rr")
                .replacingOccurrences(of: "file=snapshot.qcow2", with: "file=\(scratch.path)/snap.qcow2")
                .replacingOccurrences(of: "file:console.record", with: "file:\(scratch.path)/console")
                .replacingOccurrences(of: "kernel", with: arg == "kernel" ? state + "/kernel" : "kernel"))
        }
        return (argv, scratch)
    }

    static func pid(in state: String, _ file: String = "pid") -> Int32? {
        guard let t = try? String(contentsOfFile: state + "/" + file, encoding: .utf8) else { return nil }
        return t.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.flatMap { Int32($0) }
    }

    static func alive(_ pid: Int32) -> Bool {
        // A zombie counts as gone (it has exited; only its parent's wait is missing).
        guard kill(pid, 0) == 0, let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        guard let close = s.lastIndex(of: ")") else { return true }
        let state = s[s.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    static func mode(_ path: String) -> Int {
        var st = stat()
        return lstat(path, &st) == 0 ? Int(st.st_mode & 0o777) : -1
    }
}

/// A class-level setup (a recording every test needs) that failed: each test throws it, so
/// the failure is reported by every test and never passes as a skip.
struct SetupFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
