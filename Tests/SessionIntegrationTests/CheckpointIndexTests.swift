import ExecLogOracle
import Foundation
import XCTest

/// `tt index`, `tt verify` and the divergence checks with the real QEMU and the bundled
/// 32-bit guest, on a recording of their own. Where a run from an indexed checkpoint lands
/// is checked against oracles that share no code with it: QEMU's exec log replayed by QEMU
/// alone from power-on (instruction and transfer counts), and gdb's own registers at that
/// instruction count (QEMU's replay_break through the gdbstub).
final class CheckpointIndexTests: XCTestCase {
    static var base = ""
    static var state = ""
    static let elf32 = IT.guest("guest32.elf")
    static let every: UInt64 = 1_000_000
    static var setupFailure: String?

    override class func setUp() {
        super.setUp()
        base = NSTemporaryDirectory() + "tt-index-\(getpid())"
        try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        state = base + "/g32"
        let r = try? IT.run([IT.tt, "record", "-s", state, "g32"])
        if r?.status != 0 { setupFailure = "tt record failed: \(r?.err ?? "did not run")" }
    }

    override class func tearDown() {
        _ = try? IT.run([IT.tt, "replay", "-K", "-s", state, "g32"])
        try? FileManager.default.removeItem(atPath: base)
        super.tearDown()
    }

    override func setUpWithError() throws {
        if let e = Self.setupFailure { throw SetupFailure(message: e) }
    }

    override func tearDown() {
        _ = try? IT.tt(["replay", "-K", "g32"], state: Self.state, expect: nil)
        super.tearDown()
    }

    var indexPath: String { Self.state + "/index.checkpoints" }

    /// The index, made once for the class (every 1,000,000 instructions).
    func ensureIndex() throws -> [String] {
        if !FileManager.default.fileExists(atPath: indexPath) {
            let r = try IT.tt(["index", "--every", String(Self.every), "g32"], state: Self.state)
            XCTAssertTrue(r.out.contains("tt: indexed g32: "), r.out)
        }
        let lines = try String(contentsOfFile: indexPath, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "tt-checkpoint-index 2")
        XCTAssertEqual(lines.dropFirst().first, "spacing \(Self.every)")
        XCTAssertEqual(lines.filter { $0.hasPrefix("end ") }.count, 1, "the pass reached the end")
        return lines.filter { $0.hasPrefix("checkpoint ") }
    }

    /// Replace one checkpoint line's field (1-based checkpoint, 0-based field) for the body's
    /// duration; the file is put back afterwards.
    func withEditedIndex(checkpoint: Int, field: Int, to value: String, _ body: () throws -> Void) throws {
        let original = try String(contentsOfFile: indexPath, encoding: .utf8)
        var lines = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var f = lines[checkpoint + 1].split(separator: " ").map(String.init)
        f[field] = value
        lines[checkpoint + 1] = f.joined(separator: " ")
        try lines.joined(separator: "\n").write(toFile: indexPath, atomically: false, encoding: .utf8)
        defer { try? original.write(toFile: indexPath, atomically: false, encoding: .utf8) }
        try body()
    }

    func landing(_ r: IT.Result, file: StaticString = #filePath, line: UInt = #line) -> IT.Where {
        guard let first = r.out.split(separator: "\n").first, let w = IT.parseWhere(String(first)) else {
            XCTFail("no location in: \(r.out) \(r.err)", file: file, line: line)
            return IT.Where(ip: 0, brctr: 0, cx: 0, icount: 0)
        }
        return w
    }

    /// gdb's registers (its own names and values) after QEMU's replay_break at `icount` on
    /// a replay standing at its start; gdb kills QEMU at the end.
    static func gdbRegisters(socket: String, atICount icount: UInt64) throws -> [String: UInt64] {
        let names = ["rip", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "eflags"]
        let r = try IT.run(["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64", "-ex", "target remote \(socket)",
                            "-ex", "monitor replay_break \(icount)", "-ex", "continue",
                            "-ex", "info registers \(names.joined(separator: " "))", "-ex", "kill"], timeout: 300)
        var out: [String: UInt64] = [:]
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count >= 2, names.contains(String(f[0])), f[1].hasPrefix("0x"), let v = UInt64(f[1].dropFirst(2), radix: 16) {
                out[String(f[0])] = v
            }
        }
        guard out.count == names.count else {
            throw SetupFailure(message: "gdb gave registers \(out.keys.sorted()) only: \(r.out) \(r.err)")
        }
        return out
    }

    /// tt's `--registers` lines into a dictionary.
    func registers(_ out: String) -> [String: UInt64] {
        var d: [String: UInt64] = [:]
        for line in out.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            if f.count == 2, f[1].hasPrefix("0x"), let v = UInt64(f[1].dropFirst(2), radix: 16) { d[String(f[0])] = v }
        }
        return d
    }

    /// index, then run-until a late exact landmark: the run starts from an indexed checkpoint
    /// (not from the start) and lands exactly where a run from the start lands; that place is
    /// what QEMU's exec log (QEMU alone, from power-on) and gdb say it is.
    func testIndexedRunUntilLandsWhereTheRecordingIs() throws {
        let s = Self.state
        // The baseline without any index (another test may have made one).
        for f in ["index.checkpoints", "index.qcow2"] { try? FileManager.default.removeItem(atPath: s + "/" + f) }
        // Late in the run: copy_block's 30th execution is at ~99% of the recording.
        try IT.tt(["replay", "-p", "g32"], state: s)
        let fromStartResult = try IT.tt(["run-until", "--registers", "g32", "copy_block#30"], state: s)
        let fromStart = landing(fromStartResult)
        try IT.tt(["replay", "-K", "g32"], state: s)

        let checkpoints = try ensureIndex()
        XCTAssertGreaterThanOrEqual(checkpoints.count, 5, checkpoints.joined(separator: "\n"))
        for f in ["index.checkpoints", "index.qcow2"] { XCTAssertEqual(IT.mode(s + "/" + f), 0o600, f) }
        let listed = try IT.tt(["index", "--list", "g32"], state: s)
        XCTAssertTrue(listed.out.contains("checkpoint 1 icount \(Self.every) brctr "), listed.out)

        // A new replay VM boots with the index's snapshots and starts from the latest indexed
        // checkpoint before the target's branch count.
        try IT.tt(["replay", "-p", "g32"], state: s)
        let timeline = try IT.tt(["where", "--timeline", "g32"], state: s).out
        XCTAssertTrue(timeline.contains("checkpoint icount \(Self.every) brctr "), timeline)
        XCTAssertTrue(timeline.contains("(index 1)"), timeline)
        let indexedResult = try IT.tt(["run-until", "-d", "--registers", "g32", fromStart.location], state: s)
        let seek = indexedResult.err.split(separator: "\n").first { $0.contains("restore icount ") }
        let seekICount = seek.flatMap { $0.split(separator: " ").drop { $0 != "icount" }.dropFirst().first }.flatMap { UInt64($0) }
        XCTAssertNotNil(seekICount, indexedResult.err)
        if let seekICount {
            XCTAssertGreaterThan(seekICount, 0, "started from an indexed checkpoint, not the start")
            XCTAssertEqual(seekICount % Self.every, 0)
            XCTAssertLessThanOrEqual(seekICount, fromStart.icount)
        }
        XCTAssertEqual(indexedResult.out, fromStartResult.out, "same landmark, icount and registers as from the start: \(indexedResult.err)")
        let ttRegisters = registers(indexedResult.out)
        try IT.tt(["replay", "-K", "g32"], state: s)

        // Oracle 1: QEMU alone replays from power-on with its exec log to that icount: the
        // instructions are the icount, and the transfers plus the call into copy_block the brctr.
        let (argv, scratch) = try IT.execLogReplayArguments(state: s, scratchBase: Self.base)
        let window = try ExecLogWindow.capture(qemuArguments: argv, first: 0, last: Int(fromStart.icount),
                                               scratch: scratch, keepingInstructions: false)
        XCTAssertEqual(UInt64(window.run.instructionCount), fromStart.icount)
        XCTAssertEqual(UInt64(window.run.transfers.count) + 1, fromStart.brctr)
        XCTAssertEqual(fromStart.ip, try IT.symbolAddress(Self.elf32, "copy_block"))

        // Oracle 2: gdb's registers at that icount in a fresh replay.
        try IT.tt(["replay", "-p", "g32"], state: s)
        let gdb = try Self.gdbRegisters(socket: s + "/gdb.sock", atICount: fromStart.icount)
        XCTAssertEqual(gdb["rip"], fromStart.ip)
        for name in ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "eflags"] {
            XCTAssertEqual(ttRegisters[name].map { $0 & 0xffff_ffff }, gdb[name].map { $0 & 0xffff_ffff }, name)
        }
    }

    /// A timer interrupt that comes right after a `ret` is two transfers (the ret's, then the
    /// interrupt's from where it returned: docs/bts.md), which the plugin tells by the
    /// handler entries it has learned. A run from a checkpoint taken between the interrupt
    /// before it and this one must count it as the run from the start does, so the
    /// checkpoint holds the learned handlers; without them the run counted one transfer
    /// less and the landmark after it was "not reached" (measured with the table emptied at
    /// restore). The event is found in the recording's own trace from the start (objdump
    /// says which source is a `ret`, nm which targets are the handlers); a recording with
    /// none is skipped.
    func testACheckpointBeforeAnInterruptAfterARetCountsAsFromTheStart() throws {
        let s = Self.state
        let out = Self.base + "/whole.bts"
        func removeIndex() { for f in ["index.checkpoints", "index.qcow2", "index.hits"] { try? FileManager.default.removeItem(atPath: s + "/" + f) } }
        removeIndex()
        // The other tests make the index they expect.
        defer {
            removeIndex()
            try? FileManager.default.removeItem(atPath: out)
        }
        try IT.tt(["replay", "-p", "g32"], state: s)
        let end = landing(try IT.tt(["run-until", "g32", "copy_block#30"], state: s))
        try IT.tt(["trace-task", "--start", "0xfffffff0:0", "--end", end.location, "-o", out, "--print-limit", "0", "g32"], state: s)
        let records: [(from: UInt64, to: UInt64)] = try IT.run([IT.tt, "bts", "dump", out]).out.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 4, let from = UInt64(f[1].dropFirst(2), radix: 16), let to = UInt64(f[3].dropFirst(2), radix: 16) else { return nil }
            return (from, to)
        }
        XCTAssertEqual(UInt64(records.count), end.brctr, "the trace from the start holds every transfer")
        let handlers: Set<UInt64> = [try IT.symbolAddress(Self.elf32, "irq0_entry"), try IT.symbolAddress(Self.elf32, "irq_ignore_entry")]
        let rets = Set(try IT.instructionTable(Self.elf32).filter { $0.value.mnemonic.hasPrefix("ret") }.keys)
        // Record k has brctr k + 1. The event: k - 1 is a ret's transfer to r, k is r -> a
        // handler that an earlier arrival (`before`, the last) has made known.
        let arrivals = records.indices.filter { handlers.contains(records[$0].to) }
        func lastBefore(_ k: Int) -> Int? { arrivals.last { $0 < k && records[$0].to == records[k].to } }
        guard let event = arrivals.first(where: { k in
            k + 2 < records.count && rets.contains(records[k - 1].from) && records[k - 1].to == records[k].from && lastBefore(k) != nil
        }), let before = lastBefore(event) else {
            try IT.tt(["replay", "-K", "g32"], state: s)
            throw XCTSkip("this recording has no interrupt right after a ret into a handler entered before")
        }
        let previous = landing(try IT.tt(["run-until", "g32", "0x\(String(records[before].to, radix: 16)):\(before + 1)"], state: s))
        let arrival = landing(try IT.tt(["run-until", "g32", "0x\(String(records[event].to, radix: 16)):\(event + 1)"], state: s))
        let target = try IT.tt(["run-until", "--registers", "g32", "0x\(String(records[event + 2].to, radix: 16)):\(event + 3)"], state: s)
        try IT.tt(["replay", "-K", "g32"], state: s)
        // One checkpoint between the two arrivals; the next multiple lies past the target.
        let every = previous.icount + (arrival.icount - previous.icount) / 2
        XCTAssertGreaterThan(2 * every, landing(target).icount)
        try IT.tt(["index", "--every", String(every), "g32"], state: s)
        try IT.tt(["replay", "-p", "g32"], state: s)
        let fromCheckpoint = try IT.tt(["run-until", "-d", "--registers", "g32", landing(target).location], state: s)
        try IT.tt(["replay", "-K", "g32"], state: s)
        XCTAssertTrue(fromCheckpoint.err.contains("restore icount \(every) "), fromCheckpoint.err)
        XCTAssertEqual(fromCheckpoint.out, target.out, "from the checkpoint as from the start: \(fromCheckpoint.err)")
    }

    /// verify on the untouched recording: every checkpoint equal, exit 0.
    func testVerifyReportsEveryCheckpointEqual() throws {
        let checkpoints = try ensureIndex()
        let r = try IT.tt(["verify", "g32"], state: Self.state)
        let lines = r.out.split(separator: "\n").filter { $0.hasPrefix("checkpoint ") }
        XCTAssertEqual(lines.count, checkpoints.count, r.out)
        XCTAssertTrue(lines.allSatisfy { $0.contains(": equal ") }, r.out)
        XCTAssertTrue(r.out.contains("all \(checkpoints.count) checkpoints equal"), r.out)
    }

    /// A divergence made on purpose — the stored register hash of one checkpoint changed —
    /// is reported at that checkpoint, and only there: by verify (exit 3), by a run passing
    /// it (abort: exit 3; warn: a warning, and the run lands as usual), and by a run that
    /// starts from it (the check after restoring its snapshot).
    func testADeliberateDivergenceIsReportedAtItsCheckpoint() throws {
        let s = Self.state
        let checkpoints = try ensureIndex()
        XCTAssertGreaterThanOrEqual(checkpoints.count, 5)
        let third = checkpoints[2].split(separator: " ")
        let hash = UInt32(third[5].dropFirst(2), radix: 16)!
        let icount3 = third[1]
        try withEditedIndex(checkpoint: 3, field: 5, to: "0x" + String(hash ^ 1, radix: 16)) {
            let v = try IT.tt(["verify", "g32"], state: s, expect: 3)
            let lines = v.out.split(separator: "\n").filter { $0.hasPrefix("checkpoint ") }
            XCTAssertEqual(lines.count, checkpoints.count, v.out)
            for (i, line) in lines.enumerated() {
                if i == 2 {
                    XCTAssertTrue(line.hasPrefix("checkpoint 3 icount \(icount3): DIVERGENT (registers): expected "), String(line))
                    XCTAssertTrue(line.contains("registers 0x\(String(hash ^ 1, radix: 16)), actual "), String(line))
                    XCTAssertTrue(line.hasSuffix("registers 0x\(String(hash, radix: 16))"), String(line))
                } else {
                    XCTAssertTrue(line.contains(": equal "), String(line))
                }
            }
            XCTAssertTrue(v.err.contains("1 of \(checkpoints.count) checkpoints differ"), v.err)

            // A run from the start passes checkpoint 3.
            try IT.tt(["replay", "-p", "g32"], state: s)
            let abort = try IT.tt(["run-until", "g32", "copy_block#30"], state: s, expect: 3)
            XCTAssertTrue(abort.err.contains("divergence at checkpoint 3 (icount \(icount3)): registers differ"), abort.err)
            try IT.tt(["replay", "-K", "g32"], state: s)
            try IT.tt(["replay", "-p", "g32"], state: s)
            let warn = try IT.tt(["run-until", "--on-divergence", "warn", "g32", "copy_block#30"], state: s)
            XCTAssertTrue(warn.err.contains("tt: warning: divergence at checkpoint 3 (icount \(icount3))"), warn.err)
            XCTAssertEqual(warn.err.components(separatedBy: "divergence at checkpoint").count, 2, "only checkpoint 3: \(warn.err)")
            XCTAssertNotNil(IT.parseWhere(String(warn.out.split(separator: "\n").first ?? "")), warn.out)
            try IT.tt(["replay", "-K", "g32"], state: s)
        }
        // A run that starts from checkpoint 4 (restored from its snapshot) finds it divergent.
        let fourth = checkpoints[3].split(separator: " ")
        let hash4 = UInt32(fourth[5].dropFirst(2), radix: 16)!
        let fifthBrctr = UInt64(checkpoints[4].split(separator: " ")[2])!
        try withEditedIndex(checkpoint: 4, field: 5, to: "0x" + String(hash4 ^ 0x80, radix: 16)) {
            try IT.tt(["replay", "-p", "g32"], state: s)
            // An exact landmark at checkpoint 5's count (whether fib is there or not): the run
            // starts by restoring checkpoint 4, the latest before that count.
            let target = "0x\(String(try IT.symbolAddress(Self.elf32, "fib"), radix: 16)):\(fifthBrctr)"
            let r = try IT.tt(["run-until", "-d", "g32", target], state: s, expect: nil)
            XCTAssertTrue(r.err.contains("restore icount \(fourth[1])"), r.err)
            XCTAssertEqual(r.status, 3, r.err)
            XCTAssertTrue(r.err.contains("divergence at checkpoint 4 (icount \(fourth[1])): registers differ"), r.err)
        }
        // Put back: equal again.
        try IT.tt(["replay", "-K", "g32"], state: s)
        XCTAssertEqual(try IT.tt(["verify", "g32"], state: s).status, 0)
    }

    /// trace-task over a window that spans indexed checkpoints, from a new replay: the start
    /// (an exact landmark) is reached from an indexed checkpoint, the checkpoints inside the
    /// window are passed with tracing on; the BTS output is byte-identical to the one made
    /// without the index.
    func testTraceTaskWithTheIndexIsByteIdentical() throws {
        let s = Self.state
        let checkpoints = try ensureIndex()
        XCTAssertGreaterThanOrEqual(checkpoints.count, 6)
        // From checkpoint 4's landmark (restored itself) to fib's entry after checkpoint 6.
        let f4 = checkpoints[3].split(separator: " ")
        let start = "\(f4[3]):\(f4[2]):\(f4[4])"
        let sixth = UInt64(checkpoints[5].split(separator: " ")[2])!
        try IT.tt(["replay", "-p", "g32"], state: s)
        let fib = try IT.symbolAddress(Self.elf32, "fib")
        let endLanding = try IT.tt(["run-until", "g32", "0x\(String(fib, radix: 16))#400"], state: s)
        let end = landing(endLanding)
        try IT.tt(["replay", "-K", "g32"], state: s)
        XCTAssertGreaterThan(end.brctr, sixth, "the window passes checkpoints 5 and 6")
        let withIndex = Self.base + "/with.bts", without = Self.base + "/without.bts"
        let a = try IT.tt(["trace-task", "-d", "--start", start, "--end", end.location, "-o", withIndex, "--print-limit", "0", "g32"], state: s)
        // The start is checkpoint 4's own landmark: that checkpoint is restored itself.
        XCTAssertTrue(a.err.contains("restore icount \(checkpoints[3].split(separator: " ")[1])"), a.err)
        XCTAssertTrue(a.err.contains("passing checkpoint icount \(checkpoints[4].split(separator: " ")[1])"), a.err)
        try FileManager.default.moveItem(atPath: indexPath, toPath: Self.base + "/index.aside")
        defer { try? FileManager.default.moveItem(atPath: Self.base + "/index.aside", toPath: indexPath) }
        let b = try IT.tt(["trace-task", "-d", "--start", start, "--end", end.location, "-o", without, "--print-limit", "0", "g32"], state: s)
        XCTAssertFalse(b.err.contains("passing checkpoint"), b.err)
        XCTAssertEqual(a.out.replacingOccurrences(of: withIndex, with: "OUT"), b.out.replacingOccurrences(of: without, with: "OUT"))
        let bytesA = try Data(contentsOf: URL(fileURLWithPath: withIndex)), bytesB = try Data(contentsOf: URL(fileURLWithPath: without))
        XCTAssertGreaterThan(bytesA.count, 24 * 100_000)
        XCTAssertEqual(bytesA, bytesB)
    }

    /// --budget stops after the checkpoint that reaches it; --seconds sets gaps by time; an
    /// index is refused while a replay is live; verify without an index is one line (65);
    /// tt record -f removes the index with the recording. On a recording of its own.
    func testIndexOptionsAndRefusals() throws {
        let s = Self.base + "/opts"
        try IT.tt(["record", "g32"], state: s)
        let v = try IT.tt(["verify", "g32"], state: s, expect: 65)
        XCTAssertTrue(v.err.hasPrefix("tt: \(s)/index.checkpoints: no checkpoint index (make one with tt index)"), v.err)
        XCTAssertEqual(v.err.split(separator: "\n").count, 1, v.err)
        let budget = try IT.tt(["index", "--every", "1000000", "--budget", "1", "g32"], state: s)
        XCTAssertTrue(budget.out.contains("indexed g32: 1 checkpoints"), budget.out)
        XCTAssertTrue(budget.out.contains("stopped at the budget of 1 MB"), budget.out)
        let timed = try IT.tt(["index", "--seconds", "0.05", "g32"], state: s)
        XCTAssertTrue(timed.out.contains("about 0.05 s of replay apart"), timed.out)
        let text = try String(contentsOfFile: s + "/index.checkpoints", encoding: .utf8)
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines.prefix(2), ["tt-checkpoint-index 2", "seconds 0.05"], text)
        // The replay is paused 0.05 s after each checkpoint wherever it is: more than one
        // checkpoint in 7.3 M instructions, each after at least 45 ms of replay (the 7th
        // field), not evenly spaced by instructions, and the end kept.
        let checkpoints = lines.filter { $0.hasPrefix("checkpoint ") }.map { $0.split(separator: " ") }
        XCTAssertGreaterThanOrEqual(checkpoints.count, 2, text)
        for c in checkpoints { XCTAssertGreaterThanOrEqual(Int(c[6]) ?? 0, 45, text) }
        let icounts = checkpoints.compactMap { UInt64($0[1]) }
        XCTAssertNotEqual(Set(zip(icounts, [0] + icounts).map { $0 - $1 }).count, 1, text)
        let end = lines.filter { $0.hasPrefix("end ") }.map { $0.split(separator: " ") }
        XCTAssertEqual(end.count, 1, text)
        // The end is where a replay of the recording ends, as run-until reports it — within
        // a few instructions: QEMU stops a replay at the guest's shutdown request from its
        // main loop, and the vCPU may run on a little first (11 instructions apart measured).
        try IT.tt(["replay", "-p", "g32"], state: s)
        let never = try IT.tt(["run-until", "g32", "0x1:999999999"], state: s, expect: 2)
        let ended = never.err.split(separator: "(icount ").last.flatMap { UInt64($0.prefix { $0.isNumber }) }
        let kept = end.first.flatMap { UInt64($0[1]) }
        XCTAssertNotNil(ended, never.err)
        XCTAssertLessThanOrEqual(max(ended ?? 0, kept ?? 0) - min(ended ?? 0, kept ?? 0), 100, never.err + text)
        try IT.tt(["replay", "-K", "g32"], state: s)
        try IT.tt(["replay", "-p", "g32"], state: s)
        let live = try IT.tt(["index", "--every", "1000000", "g32"], state: s, expect: nil)
        XCTAssertNotEqual(live.status, 0)
        XCTAssertTrue(live.err.contains("a VM of this state directory is running"), live.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: s + "/index.checkpoints"), "the old index stays when refused")
        try IT.tt(["replay", "-K", "g32"], state: s)
        try IT.tt(["record", "-f", "g32"], state: s)
        for f in ["index.checkpoints", "index.qcow2"] { XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/" + f), f) }
    }

    /// A recording with a --disk: the index keeps each disk overlay's snapshots too
    /// (index-disk0.qcow2), a replay restores one, verify is all equal, -D removes it all.
    func testIndexWithADisk() throws {
        let s = Self.base + "/disk"
        let image = Self.base + "/disk.img"
        XCTAssertTrue(FileManager.default.createFile(atPath: image, contents: Data(count: 4 << 20)))
        try IT.tt(["record", "--disk", image, "g32"], state: s)
        try IT.tt(["replay", "-p", "g32"], state: s)
        let fromStart = try IT.tt(["run-until", "--registers", "g32", "copy_block#30"], state: s)
        let target = landing(fromStart)
        try IT.tt(["replay", "-K", "g32"], state: s)
        // Checkpoints at 3 M and 6 M instructions: copy_block's late executions (from about
        // 6.6 M on) are far enough from them for a landing there to be a checkpoint of its own.
        try IT.tt(["index", "--every", "3000000", "g32"], state: s)
        for f in ["index.checkpoints", "index.qcow2", "index-disk0.qcow2"] { XCTAssertEqual(IT.mode(s + "/" + f), 0o600, f) }
        XCTAssertTrue(try IT.tt(["verify", "g32"], state: s).out.contains("checkpoints equal"))
        let indexFiles = ["index.qcow2", "index-disk0.qcow2"]
        let before = try indexFiles.map { try Data(contentsOf: URL(fileURLWithPath: s + "/" + $0)) }
        try IT.tt(["replay", "-p", "g32"], state: s)
        let indexed = try IT.tt(["run-until", "-d", "--registers", "g32", target.location], state: s)
        XCTAssertTrue(indexed.err.contains("restore icount 6000000 "), indexed.err)
        XCTAssertEqual(indexed.out, fromStart.out)
        // The replay reads the index's images through layers of its own, not copies; what it
        // saves (a landing's snapshot) goes into them, and a later run starts from it.
        for (replay, index) in [("replay.qcow2", "index.qcow2"), ("replay-disk0.qcow2", "index-disk0.qcow2")] {
            let info = try IT.run(["qemu-img", "info", "-U", "--output=json", s + "/" + replay])
            let json = try JSONSerialization.jsonObject(with: Data(info.out.utf8)) as? [String: Any]
            XCTAssertEqual(json?["backing-filename"] as? String, index, "\(replay) is a layer over \(index): \(info.out)")
            XCTAssertEqual(json?["backing-filename-format"] as? String, "raw", info.out)
        }
        let middle = landing(try IT.tt(["run-until", "g32", "copy_block#24"], state: s))
        XCTAssertGreaterThan(middle.icount, 6_500_000, "far enough from the index's last checkpoint")
        let timeline = try IT.tt(["where", "--timeline", "g32"], state: s).out
        XCTAssertTrue(timeline.contains("checkpoint icount \(middle.icount) brctr "), timeline)
        try IT.tt(["run-until", "g32", "copy_block#2"], state: s)
        let again = try IT.tt(["run-until", "-d", "--registers", "g32", target.location], state: s)
        XCTAssertTrue(again.err.contains("restore icount \(middle.icount) "), "from the landing's snapshot, in the layers: \(again.err)")
        XCTAssertEqual(again.out, fromStart.out)
        try IT.tt(["replay", "-K", "g32"], state: s)
        let after = try indexFiles.map { try Data(contentsOf: URL(fileURLWithPath: s + "/" + $0)) }
        XCTAssertTrue(before == after, "a replay never writes the index's images")
        try IT.tt(["record", "-D", "g32"], state: s)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s), "every file of the recording, the index's included, is tt's")
    }

    /// trace-task --jobs 3: the window cut at two indexed checkpoints, traced by three
    /// replays at once, gives the same output as --jobs 1, byte for byte; the workers'
    /// directories are gone afterwards. The window is long enough to hold checkpoints
    /// where a transfer is pending at the stop (raw count one below the landmark's).
    func testTraceTaskJobsIsByteIdenticalToOneJob() throws {
        let s = Self.state
        let checkpoints = try ensureIndex().map { $0.split(separator: " ") }
        XCTAssertGreaterThanOrEqual(checkpoints.count, 6)
        XCTAssertTrue(checkpoints.contains { $0[2] != $0[6] }, "some checkpoint has a pending arrival: \(checkpoints)")
        let start = "\(checkpoints[0][3]):\(checkpoints[0][2]):\(checkpoints[0][4])"
        let fib = try IT.symbolAddress(Self.elf32, "fib")
        try IT.tt(["replay", "-p", "g32"], state: s)
        let end = landing(try IT.tt(["run-until", "g32", "0x\(String(fib, radix: 16))#400"], state: s))
        try IT.tt(["replay", "-K", "g32"], state: s)
        let one = Self.base + "/jobs1.bts", three = Self.base + "/jobs3.bts"
        let a = try IT.tt(["trace-task", "--start", start, "--end", end.location, "-o", one, "--print-limit", "0", "g32"], state: s)
        let b = try IT.tt(["trace-task", "--jobs", "3", "--start", start, "--end", end.location, "-o", three, "--print-limit", "0", "g32"], state: s)
        XCTAssertTrue(b.out.contains("traced in 3 segments at once"), b.out)
        XCTAssertEqual(a.out.split(separator: "\n").first, b.out.split(separator: "\n").first, "same records and brctr range")
        let bytesA = try Data(contentsOf: URL(fileURLWithPath: one)), bytesB = try Data(contentsOf: URL(fileURLWithPath: three))
        XCTAssertGreaterThan(bytesA.count, 24 * 1_000_000)
        XCTAssertEqual(bytesA, bytesB)
        for k in 1...3 { XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/job\(k)"), "job\(k)") }
        // A start found by counting (WHERE#N) is cut after its landing (an exact start is
        // cut before anything boots): the same bytes as one job again.
        let counted = "\(checkpoints[0][3])#1", one2 = Self.base + "/jobs1b.bts", three2 = Self.base + "/jobs3b.bts"
        try IT.tt(["trace-task", "--start", counted, "--end", end.location, "-o", one2, "--print-limit", "0", "g32"], state: s)
        let d = try IT.tt(["trace-task", "-d", "--jobs", "3", "--start", counted, "--end", end.location, "-o", three2, "--print-limit", "0", "g32"], state: s)
        XCTAssertTrue(d.out.contains("traced in 3 segments at once"), d.out)
        XCTAssertTrue(d.err.contains("segment 2: "), d.err)
        let bytesOne2 = try Data(contentsOf: URL(fileURLWithPath: one2))
        XCTAssertGreaterThan(bytesOne2.count, 24 * 100_000)
        XCTAssertEqual(bytesOne2, try Data(contentsOf: URL(fileURLWithPath: three2)))
        // Without an index there is nothing to cut at: one replay does it all, same output.
        try FileManager.default.moveItem(atPath: indexPath, toPath: Self.base + "/index.aside2")
        defer { try? FileManager.default.moveItem(atPath: Self.base + "/index.aside2", toPath: indexPath) }
        let c = try IT.tt(["trace-task", "--jobs", "3", "--start", start, "--end", end.location, "-o", three, "--print-limit", "0", "g32"], state: s)
        XCTAssertTrue(c.out.contains("traced in 1 segment at once"), c.out)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: three)), bytesA)
    }

    /// WHERE#N with the index: a run passing indexed checkpoints keeps the arrivals counted up
    /// to each (index.hits); later runs count from the latest checkpoint with fewer than N
    /// and land exactly where runs from the start without an index land (landmark and
    /// icount): the first arrival after a checkpoint, the last one before it, one further.
    func testOccurrenceCountsFromACheckpointWhereAnEarlierRunCounted() throws {
        let s = Self.state
        let fm = FileManager.default
        for f in ["index.checkpoints", "index.qcow2", "index.hits"] { try? fm.removeItem(atPath: s + "/" + f) }
        try IT.tt(["replay", "-p", "g32"], state: s)
        var baseline: [Int: String] = [:]
        for n in [23, 24, 30] { baseline[n] = try IT.tt(["run-until", "g32", "copy_block#\(n)"], state: s).out }
        try IT.tt(["replay", "-K", "g32"], state: s)
        // A dense index: copy_block's 30 arrivals span about a million instructions, and a
        // checkpoint whose stop has a transfer pending keeps no count (Timeline.hitsUsable).
        try IT.tt(["index", "--every", "100000", "g32"], state: s)
        XCTAssertFalse(fm.fileExists(atPath: s + "/index.hits"))
        try IT.tt(["replay", "-p", "g32"], state: s)
        XCTAssertEqual(try IT.tt(["run-until", "g32", "copy_block#30"], state: s).out, baseline[30])
        try IT.tt(["replay", "-K", "g32"], state: s)
        XCTAssertEqual(IT.mode(s + "/index.hits"), 0o600)
        let hits = try String(contentsOfFile: s + "/index.hits", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(hits.first, "tt-index-hits 1")
        let copyBlock = try IT.symbolAddress(Self.elf32, "copy_block")
        XCTAssertTrue(hits.contains { $0.hasPrefix("hits 0x\(String(copyBlock, radix: 16)) ") && !$0.hasSuffix(" 0") }, hits.joined(separator: "\n"))
        for n in [24, 23, 30] {
            try IT.tt(["replay", "-p", "g32"], state: s)
            let r = try IT.tt(["run-until", "-d", "g32", "copy_block#\(n)"], state: s)
            XCTAssertEqual(r.out, baseline[n], "copy_block#\(n), from: \(r.err)")
            XCTAssertTrue(r.err.contains("restore icount "), r.err)
            XCTAssertFalse(r.err.contains("restore icount 0 "), r.err)
            try IT.tt(["replay", "-K", "g32"], state: s)
        }
        try IT.tt(["index", "--every", String(Self.every), "g32"], state: s)
        XCTAssertFalse(fm.fileExists(atPath: s + "/index.hits"), "a new index starts without counts")
    }

    /// trace-task --plan: the window cut as --jobs 3 cuts it, written for a scheduler; the
    /// commands file run by xargs -P 2 (exec'ing tt through env, no shell), then --merge
    /// gives the same bytes as one job, raw and extended. A plan directory whose path has a
    /// space and a quote exercises the scripts' quoting (bash -n, a YAML parser).
    func testTraceTaskPlanSegmentsMergeToOneJobsOutput() throws {
        let s = Self.state
        let checkpoints = try ensureIndex().map { $0.split(separator: " ") }
        let start = "\(checkpoints[0][3]):\(checkpoints[0][2]):\(checkpoints[0][4])"
        let fib = try IT.symbolAddress(Self.elf32, "fib")
        try IT.tt(["replay", "-p", "g32"], state: s)
        let end = landing(try IT.tt(["run-until", "g32", "0x\(String(fib, radix: 16))#400"], state: s))
        try IT.tt(["replay", "-K", "g32"], state: s)
        let dir = Self.base + "/plan 'one'"
        let made = try IT.tt(["trace-task", "--plan", dir, "--jobs", "3", "--parallelism", "2", "--start", start, "--end", end.location, "g32"], state: s)
        XCTAssertTrue(made.out.contains("3 segments"), made.out)
        XCTAssertEqual(IT.mode(dir), 0o700)
        for f in ["plan", "commands", "slurm.sh", "k8s-job.yaml"] { XCTAssertEqual(IT.mode(dir + "/" + f), 0o600, f) }
        let plan = try String(contentsOfFile: dir + "/plan", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(plan.first, "tt-trace-plan 1")
        XCTAssertTrue(plan.contains("recording g32 \(s)"), plan.joined(separator: "\n"))
        XCTAssertTrue(plan.contains { $0.hasPrefix("start \(start) icount ") }, plan.joined(separator: "\n"))
        XCTAssertTrue(plan.contains("end \(end.location) icount \(end.icount)"), plan.joined(separator: "\n"))
        // The seams are indexed checkpoints, as the index has them.
        let seams = plan.filter { $0.hasPrefix("seam ") }.map { $0.split(separator: " ") }
        XCTAssertEqual(seams.count, 2)
        for seam in seams {
            XCTAssertTrue(checkpoints.contains { Array($0[1...5]) == Array(seam[1...5]) }, "\(seam) is not an indexed checkpoint")
        }
        let commands = try String(contentsOfFile: dir + "/commands", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(commands.count, 3)
        let xargs = try IT.run(["xargs", "-a", dir + "/commands", "-P", "2", "-L", "1", "env"], timeout: 300)
        XCTAssertEqual(xargs.status, 0, xargs.err + xargs.out)
        for k in 0..<3 { XCTAssertEqual(IT.mode(dir + "/segment-\(k).ttlog"), 0o600, "segment \(k)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/segment1"), "the segment's replay directory is removed")

        let one = Self.base + "/plan-one.bts", merged = Self.base + "/plan-merged.bts"
        try IT.tt(["trace-task", "--start", start, "--end", end.location, "-o", one, "--print-limit", "0", "g32"], state: s)
        let m = try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged, "--print-limit", "0"])
        XCTAssertEqual(m.status, 0, m.err)
        XCTAssertTrue(m.out.contains("merged from 3 segments"), m.out)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: one))
        XCTAssertGreaterThan(bytes.count, 24 * 1_000_000)
        XCTAssertEqual(bytes, try Data(contentsOf: URL(fileURLWithPath: merged)))
        try IT.tt(["trace-task", "-x", "--start", start, "--end", end.location, "-o", one, "--print-limit", "0", "g32"], state: s)
        XCTAssertEqual(try IT.run([IT.tt, "trace-task", "--merge", dir, "-x", "-o", merged, "--print-limit", "0"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: one)), try Data(contentsOf: URL(fileURLWithPath: merged)))

        // The scheduler files parse; they run tt on this plan by its quoted path.
        let slurm = try IT.run(["bash", "-n", dir + "/slurm.sh"])
        XCTAssertEqual(slurm.status, 0, slurm.err)
        let script = try String(contentsOfFile: dir + "/slurm.sh", encoding: .utf8)
        XCTAssertTrue(script.contains("#SBATCH --array=0-2\n"), script)
        XCTAssertTrue(script.contains(#"--plan '\#(Self.base)/plan '\''one'\''' --segment "${SLURM_ARRAY_TASK_ID"#), script)
        let check = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
        let yaml = try IT.run(["python3", "-c", check, dir + "/k8s-job.yaml"])
        if yaml.status == 0 {
            let job = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(yaml.out.utf8)) as? [String: Any])
            let spec = try XCTUnwrap(job["spec"] as? [String: Any])
            XCTAssertEqual(job["kind"] as? String, "Job")
            XCTAssertEqual(spec["completionMode"] as? String, "Indexed")
            XCTAssertEqual(spec["completions"] as? Int, 3)
            XCTAssertEqual(spec["parallelism"] as? Int, 2)
            let pod = try XCTUnwrap((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
            let container = try XCTUnwrap((pod["containers"] as? [[String: Any]])?.first)
            XCTAssertEqual(container["command"] as? [String], [IT.tt, "trace-task", "--plan", dir, "--segment", "$(JOB_COMPLETION_INDEX)"])
        } else {
            let text = try String(contentsOfFile: dir + "/k8s-job.yaml", encoding: .utf8)
            for line in ["  completionMode: Indexed\n", "  completions: 3\n", "  parallelism: 2\n", "- name: JOB_COMPLETION_INDEX\n"] {
                XCTAssertTrue(text.contains(line), line)
            }
        }

        // Refused, naming the segment: a missing one, an unfinished one, two swapped, a tampered seam.
        let fm = FileManager.default
        let aside = Self.base + "/segment-aside"
        try fm.moveItem(atPath: dir + "/segment-1.ttlog", toPath: aside)
        var r = try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged])
        XCTAssertEqual(r.status, 66, r.err)
        XCTAssertTrue(r.err.contains("segment 1 of 3") && r.err.contains("missing"), r.err)
        try fm.copyItem(atPath: aside, toPath: dir + "/segment-1.ttlog.partial")
        r = try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged])
        XCTAssertEqual(r.status, 66, r.err)
        XCTAssertTrue(r.err.contains("segment 1 of 3") && r.err.contains("unfinished"), r.err)
        try fm.removeItem(atPath: dir + "/segment-1.ttlog.partial")
        try fm.moveItem(atPath: dir + "/segment-2.ttlog", toPath: dir + "/segment-1.ttlog")
        try fm.moveItem(atPath: aside, toPath: dir + "/segment-2.ttlog")
        r = try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged])
        XCTAssertEqual(r.status, 65, r.err)
        XCTAssertTrue(r.err.contains("segment 1 of 3"), r.err)
        try fm.moveItem(atPath: dir + "/segment-2.ttlog", toPath: aside)
        try fm.moveItem(atPath: dir + "/segment-1.ttlog", toPath: dir + "/segment-2.ttlog")
        try fm.moveItem(atPath: aside, toPath: dir + "/segment-1.ttlog")
        XCTAssertEqual(try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged]).status, 0, "put back in order")
        let original = try String(contentsOfFile: dir + "/plan", encoding: .utf8)
        var seam = seams[1].map(String.init)
        seam[6] = String(UInt64(seam[6])! + 1)
        try original.replacingOccurrences(of: seams[1].joined(separator: " "), with: seam.joined(separator: " "))
            .write(toFile: dir + "/plan", atomically: false, encoding: .utf8)
        r = try IT.run([IT.tt, "trace-task", "--merge", dir, "-o", merged])
        XCTAssertEqual(r.status, 65, r.err)
        XCTAssertTrue(r.err.contains("segment 1 of 3"), r.err)
        // A recording that is not the planned one: a segment refuses it before replaying.
        try original.replacingOccurrences(of: "\nidentity ", with: "\nidentity 1").write(toFile: dir + "/plan", atomically: false, encoding: .utf8)
        r = try IT.run([IT.tt, "trace-task", "--plan", dir, "--segment", "0"])
        XCTAssertEqual(r.status, 65, r.err)
        XCTAssertTrue(r.err.contains("segment 0: the recording") && r.err.contains("not the one planned"), r.err)
    }
}
