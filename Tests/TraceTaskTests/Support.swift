// Running tt, QEMU and nm for the trace-task tests (real QEMU, bundled guests). Programs are
// spawned with argument vectors (posix_spawn), never through a shell.

import ExecLogOracle
import Foundation
import TestProcesses
import XCTest

enum TT {
    typealias Result = TestProcesses.Result

    struct Failure: Error, CustomStringConvertible { let description: String }

    static var buildDirectory: URL { TestProcesses.buildDirectory }
    static var tt: String { TestProcesses.tt }
    static var packageRoot: URL { TestProcesses.packageRoot }
    static func guest(_ file: String) -> String { TestProcesses.guest(file) }
    static func start(_ argv: [String]) throws -> (pid: pid_t, out: String, err: String) { try TestProcesses.start(argv) }
    static func wait(_ pid: pid_t, timeout: TimeInterval = 120) -> Int32 { TestProcesses.wait(pid, timeout: timeout) }
    static func collect(_ started: (pid: pid_t, out: String, err: String), timeout: TimeInterval = 120) -> Result {
        TestProcesses.collect(started, timeout: timeout)
    }
    @discardableResult
    static func run(_ argv: [String], timeout: TimeInterval = 120) throws -> Result { try TestProcesses.run(argv, timeout: timeout) }

    /// Run tt; fail the test on a non-zero status unless `expect` says otherwise.
    @discardableResult
    static func tt(_ args: [String], expect: Int32? = 0, file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let r = try run([tt] + args)
        if let expect, r.status != expect {
            XCTFail("tt \(args.joined(separator: " ")): status \(r.status), expected \(expect)\n\(r.out)\n\(r.err)", file: file, line: line)
            throw Failure(description: "tt failed: \(r.err)")
        }
        return r
    }

    /// Symbol addresses from binutils' nm (not tt's symbolizer).
    static func symbols(_ elf: String) throws -> [String: UInt64] {
        let r = try run(["nm", elf])
        var out: [String: UInt64] = [:]
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, let a = UInt64(f[0], radix: 16) { out[String(f[2])] = a }
        }
        return out
    }

    /// Processes whose working directory is `dir` (tt runs QEMU there).
    static func processes(in dir: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [Int32] = []
        for e in entries {
            guard let pid = Int32(e), pid != getpid() else { continue }
            if let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(e)/cwd"), cwd == dir {
                out.append(pid)
            }
        }
        return out
    }

    /// A branch record as tt writes it (24 bytes: from, to, format/brctr).
    struct Record: Equatable, CustomStringConvertible {
        var from: UInt64, to: UInt64, format: UInt64
        var description: String { "0x\(String(from, radix: 16)) -> 0x\(String(to, radix: 16)) [\(format)]" }
    }

    /// Parse a BTS file directly (independently of tt's BTS reader).
    static func records(_ path: String) throws -> (extended: Bool, records: [Record]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard data.count % 24 == 0 else { throw Failure(description: "\(path): \(data.count) bytes, not whole records") }
        var recs: [Record] = []
        data.withUnsafeBytes { b in
            for i in stride(from: 0, to: b.count, by: 24) {
                recs.append(Record(from: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self)),
                                   to: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)),
                                   format: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self))))
            }
        }
        if let first = recs.first, first == Record(from: .max, to: .max, format: .max) {
            return (true, Array(recs.dropFirst()))
        }
        return (false, recs)
    }

    /// `0x<ip>:<brctr>:0x<cx>` after "landed at " in trace-task's summary.
    struct Landed: Equatable { var ip: UInt64; var brctr: UInt64; var text: String }

    /// The icount of a landmark line of trace-task's summary ("  start …(icount N)").
    static func landedICount(_ output: String, _ which: String) throws -> Int {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("  \(which) ") }),
              let tail = line.range(of: "(icount "), let n = Int(line[tail.upperBound...].prefix { $0.isNumber })
        else { throw Failure(description: "no '\(which)' icount in: \(output)") }
        return n
    }

    /// QEMU's argument vector for a plain replay of the Linux recording in `state` (no tt
    /// plugin), every host-side file in `scratch`: the snapshot image copied, the console a
    /// file (the interactive console's socket too: a replay takes input from the log only),
    /// and each of `disks` (the images given to --disk, in order) under a fresh overlay
    /// holding the empty `init` snapshot record/replay loads, made with qemu-img.
    static func linuxOracleArguments(state: String, scratch: URL, disks: [String] = []) throws -> [String] {
        let record = try String(contentsOfFile: state + "/qemu.argv", encoding: .utf8).split(separator: "\n").map(String.init)
        try FileManager.default.copyItem(atPath: state + "/snapshot.qcow2", toPath: scratch.path + "/snap.qcow2")
        for (n, image) in disks.enumerated() {
            let overlay = scratch.path + "/disk\(n).qcow2"
            for step in [["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "raw", overlay],
                         ["qemu-img", "snapshot", "-c", "init", overlay]] {
                let r = try run(step)
                guard r.status == 0 else { throw Failure(description: "\(step.joined(separator: " ")): \(r.err)") }
            }
        }
        var argv: [String] = []
        var skip = false, previous = ""
        for arg in record {
            defer { previous = arg }
            if skip { skip = false; continue }
            if arg == "-plugin" { skip = true; continue }
            if previous == "-kernel" || previous == "-initrd" { argv.append(state + "/" + arg); continue }
            var x = arg
                .replacingOccurrences(of: "rr=record", with: "rr=replay")
                .replacingOccurrences(of: "rrfile=recording.rr", with: "rrfile=\(state)/recording.rr")
                .replacingOccurrences(of: "file=snapshot.qcow2", with: "file=\(scratch.path)/snap.qcow2")
                .replacingOccurrences(of: "file:console.record", with: "file:\(scratch.path)/console")
            if x.hasPrefix("socket,id=console,") { x = "file,id=console,path=\(scratch.path)/console" }
            for n in disks.indices { x = x.replacingOccurrences(of: "file=disk\(n).qcow2,", with: "file=\(scratch.path)/disk\(n).qcow2,") }
            argv.append(x)
        }
        return argv
    }

    /// The transfers QEMU's exec and interrupt log shows between two landmarks of a
    /// trace-task run (`output` its summary), from a plain replay (`linuxOracleArguments`):
    /// what the trace between them must hold, record for record. Also the window's start
    /// address, for the caller to check, and the log's interrupt vectors.
    static func execLogTransfers(_ output: String, qemuArguments: [String], scratch: URL) throws
        -> (transfers: [ExecLogOracle.Transfer], start: UInt64, vectors: [UInt64: Int]) {
        let b = try landed(output, "end")
        let window = try ExecLogWindow.capture(qemuArguments: qemuArguments, first: try landedICount(output, "start"),
                                               last: try landedICount(output, "end"), scratch: scratch, keepingInstructions: true)
        var oracle = window.run.transfers
        guard let last = window.run.executed.last else { throw Failure(description: "an empty exec log window") }
        // The arrival at the end landmark, when the window's last instruction does not fall into it.
        if last.fallThrough != b.ip || last.alwaysTransfers { oracle.append(ExecLogOracle.Transfer(from: last.address, to: b.ip)) }
        return (oracle, window.start, window.run.interruptVectors)
    }

    static func landed(_ output: String, _ which: String) throws -> Landed {
        for line in output.split(separator: "\n") where line.hasPrefix("  \(which) ") {
            guard let r = line.range(of: "landed at ") else { continue }
            let token = line[r.upperBound...].split(separator: " ")[0]
            let parts = token.split(separator: ":")
            guard parts.count == 3, parts[0].hasPrefix("0x"), let ip = UInt64(parts[0].dropFirst(2), radix: 16),
                  let b = UInt64(parts[1]) else { break }
            return Landed(ip: ip, brctr: b, text: String(token))
        }
        throw Failure(description: "no '\(which)' landmark in: \(output)")
    }
}

/// QEMU's own execution log of a replay of a tt recording: the independent oracle.
/// The replay runs from tt's recorded argument vector (qemu.argv) with only host-side
/// paths changed, plus `-d exec,nochain,in_asm` restricted to the guest image, which the
/// guest never leaves after `_start` (it calls no firmware; its interrupts go to its own
/// IDT), so from `_start` on the log holds every executed instruction.
struct ExecLogRun {
    /// Executed instruction addresses from the first one in the image (`_start`).
    var addresses: [UInt64] = []
    /// transfersBefore[i]: taken transfers from instruction 0 up to and including the one
    /// arriving at instruction i.
    var transfersBefore: [Int] = []
    var transfers: [ExecLogOracle.Transfer] = []

    init(state: String, scratch: String) throws {
        let argv = try String(contentsOfFile: state + "/qemu.argv", encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let image = scratch + "/oracle.qcow2", log = scratch + "/oracle.exec", serial = scratch + "/oracle.serial"
        try? FileManager.default.removeItem(atPath: image)
        try FileManager.default.copyItem(atPath: state + "/snapshot.qcow2", toPath: image)
        var out: [String] = []
        var previous = ""
        var changed = 0
        for a in argv {
            var x = a
            if previous == "-kernel" || previous == "-initrd" { x = state + "/" + a; changed += 1 }
            else if a.hasPrefix("shift=") && a.contains("rr=record") {
                x = a.replacingOccurrences(of: "rr=record", with: "rr=replay")
                    .replacingOccurrences(of: "rrfile=", with: "rrfile=\(state)/"); changed += 1
            } else if a.hasPrefix("file=snapshot.qcow2,") { x = "file=\(image)," + a.dropFirst("file=snapshot.qcow2,".count); changed += 1 }
            else if a.hasPrefix("file:") { x = "file:" + serial; changed += 1 }
            else if let r = a.range(of: ",shm=") { x = String(a[..<r.lowerBound]); changed += 1 }
            out.append(x)
            previous = a
        }
        guard changed >= 5 else { throw TT.Failure(description: "unexpected qemu.argv: \(argv)") }
        out += ["-d", "exec,nochain,in_asm,int", "-dfilter", "0x100000..0x1fffff", "-D", log]
        let r = try TT.run(out, timeout: 120)
        // isa-debug-exit with the guest's success value 0x10: (0x10 << 1) | 1; QEMU 10 ends
        // a replay whose log ran out (after the recording's shutdown) with 0.
        guard r.status == 33 || r.status == 0 else { throw TT.Failure(description: "oracle replay ended with status \(r.status): \(r.err)") }
        var counter = ExecLogOracle.TransferCounter()
        var addresses: [UInt64] = [], before: [Int] = [], transfers: [ExecLogOracle.Transfer] = []
        try ExecLogOracle.walk(logAt: log) { insn in
            transfers += counter.execute(insn)
            addresses.append(insn.address)
            before.append(transfers.count)
        } interrupts: { pc, _ in counter.interrupt(at: pc) }
        self.addresses = addresses
        self.transfersBefore = before
        self.transfers = transfers
        try? FileManager.default.removeItem(atPath: log)
        try? FileManager.default.removeItem(atPath: image)
    }

    /// Index of the n-th (1-based) execution of `address` at or after instruction `from`.
    func index(of address: UInt64, occurrence n: Int = 1, after from: Int = -1) -> Int? {
        var seen = 0
        var i = from + 1
        while i < addresses.count {
            if addresses[i] == address {
                seen += 1
                if seen == n { return i }
            }
            i += 1
        }
        return nil
    }

    /// The transfers between instruction i (excluded: the arrival at it) and instruction j
    /// (included: the arrival at it) — what a trace from i to j must hold.
    func window(_ i: Int, _ j: Int) -> ArraySlice<ExecLogOracle.Transfer> {
        transfers[transfersBefore[i]..<transfersBefore[j]]
    }
}
