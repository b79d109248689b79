import ExecLogOracle
import Foundation
import SystemPackage
import XCTest
@testable import XenTT
@testable import QEMUBackend

/// End-to-end: tt record / replay / where / run-until with the real QEMU and the bundled
/// guest, checked against independent oracles (gdb single-stepping with objdump's
/// instruction sizes; nm for symbol addresses; process tables for orphans).
final class SessionIntegrationTests: XCTestCase {
    static var base = ""
    static var state32 = ""
    static let elf32 = IT.guest("guest32.elf")

    override class func setUp() {
        super.setUp()
        base = NSTemporaryDirectory() + "tt-it-\(getpid())"
        try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        state32 = base + "/g32"
        let r = try? IT.run([IT.tt, "record", "-s", state32, "g32"])
        if r?.status != 0 { fatalErrorOnce = "tt record failed: \(r?.err ?? "did not run")" }
    }

    override class func tearDown() {
        for dir in [state32, base + "/g64", base + "/sig"] { _ = try? IT.run([IT.tt, "replay", "-K", "-s", dir, "x"]) }
        try? FileManager.default.removeItem(atPath: base)
        super.tearDown()
    }

    static var fatalErrorOnce: String?

    override func setUpWithError() throws {
        // A failed recording fails every test here: it must never pass as skipped.
        if let e = Self.fatalErrorOnce { throw SetupFailure(message: e) }
    }

    override func tearDown() {
        _ = try? IT.tt(["replay", "-K", "g32"], state: Self.state32, expect: nil)
        super.tearDown()
    }

    func where32(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> IT.Where {
        let r = try IT.tt(args, state: Self.state32, file: file, line: line)
        guard let first = r.out.split(separator: "\n").first, let w = IT.parseWhere(String(first)) else {
            XCTFail("no location in: \(r.out) \(r.err)", file: file, line: line)
            return IT.Where(ip: 0, brctr: 0, cx: 0, icount: 0)
        }
        return w
    }

    func testRecordingStateIsCompleteAndPrivate() throws {
        let s = Self.state32
        XCTAssertEqual(IT.mode(s), 0o700)
        for f in ["qemu.argv", "recording.rr", "snapshot.qcow2", "symfile", "kernel"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: s + "/" + f), f)
        }
        for f in try FileManager.default.contentsOfDirectory(atPath: s) where !f.hasSuffix(".sock") {
            XCTAssertEqual(IT.mode(s + "/" + f), 0o600, f)
        }
        let argv = try String(contentsOfFile: s + "/qemu.argv", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(argv.first, "qemu-system-x86_64")
        XCTAssertTrue(argv.contains { $0.contains("rr=record") && $0.contains("rrsnapshot=init") })
        XCTAssertTrue(argv.contains("apic-common.vapic=off"))
        XCTAssertEqual(try String(contentsOfFile: s + "/symfile", encoding: .utf8), Self.elf32 + "\n")
        // The guest ran to its end: its serial output says so.
        XCTAssertTrue(try String(contentsOfFile: s + "/console.record", encoding: .utf8).contains("tt-guest: done"))
        // A second recording into the same directory is refused without -f.
        let again = try IT.tt(["record", "g32"], state: s, expect: nil)
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("already exists"), again.err)
    }

    /// Two replays stop at the same (eip, brctr, cx) with identical registers; the exact
    /// landmark printed by the first lands the second replay on the same point.
    func testTwoReplaysLandIdentically() throws {
        let fib = try IT.symbolAddress(Self.elf32, "fib")
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        XCTAssertEqual(IT.mode(Self.state32 + "/gdb.sock"), 0o600)
        XCTAssertEqual(IT.mode(Self.state32 + "/qmp.sock"), -1, "no QMP socket: the monitor goes through the gdbstub")
        let first = try IT.tt(["run-until", "--registers", "g32", "fib#3"], state: Self.state32).out
        let w1 = try XCTUnwrap(IT.parseWhere(String(first.split(separator: "\n").first ?? "")))
        XCTAssertEqual(w1.ip, fib)
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let second = try IT.tt(["run-until", "--registers", "g32", "fib#3"], state: Self.state32).out
        XCTAssertEqual(first, second)
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let third = try IT.tt(["run-until", "--registers", "g32", w1.location], state: Self.state32).out
        XCTAssertEqual(first, third)
        // where agrees and does not move the replay.
        let w = try IT.tt(["where", "--registers", "g32"], state: Self.state32).out
        XCTAssertEqual(w, first)
    }

    /// The branch counter against gdb, across a timer interrupt: tt finds the second
    /// interrupt's entry (irq0_entry#2); gdb runs a fresh replay to 600 instructions before
    /// it and single-steps 1200, so the window holds the interrupt. From gdb's pcs and
    /// objdump's sizes the test derives the executed instructions and the transfers as a
    /// branch-trace store records them (docs/bts.md: an asynchronous interrupt is a transfer
    /// from the interrupted next address, after the branch that preceded it). Then
    /// tt must land on the window's first and last instruction at exactly the counts and
    /// icounts that implies, and tt's branch trace of the window must be exactly those
    /// transfers, numbered consecutively.
    func testBranchCountAndTraceAgainstGdbStepping() throws {
        let table = try IT.instructionTable(Self.elf32)
        let handlers = try IT.handlerEntries(Self.elf32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let irq = try where32(["run-until", "g32", "irq0_entry#2"])
        XCTAssertEqual(irq.ip, try IT.symbolAddress(Self.elf32, "irq0_entry"))
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let before: UInt64 = 600
        let pcs = try IT.gdbStep(socket: Self.state32 + "/gdb.sock", count: 1200, fromICount: irq.icount - before)
        let executed = try IT.executed(pcs, table: table, handlers: handlers)
        let oracle = try IT.transfers(steppedPCs: pcs, table: table)
        // The arrival at the interrupt's entry is the k-th transfer of the window.
        let k = try XCTUnwrap(oracle.firstIndex { $0.to == irq.ip }, "the window holds the interrupt") + 1
        XCTAssertEqual(executed.firstIndex(of: irq.ip), Int(before), "gdb's run to the window agrees with tt's icount")
        let startBrctr = irq.brctr - UInt64(k)
        let startLocation = "0x\(String(executed.first!, radix: 16)):\(startBrctr)"
        let endLocation = "0x\(String(executed.last!, radix: 16)):\(startBrctr + UInt64(oracle.count))"

        // gdb killed that VM (QEMU 10 may take a moment to go); a new replay lands on both
        // ends by tt's counts.
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        XCTAssertEqual(try where32(["run-until", "g32", startLocation]).icount, irq.icount - before)
        XCTAssertEqual(try where32(["run-until", "g32", endLocation]).icount, irq.icount - before + UInt64(executed.count - 1))

        // The same window traced through the library, in a replay VM this process boots.
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        let dir = try StateDirectory(name: "g32", explicit: Self.state32, base: "/")
        let session = ReplaySession(name: "g32", backend: QEMUReplayBackend(state: dir))
        try session.start(paused: true)
        defer { try? session.destroy() }
        try session.runUntil(try Location(parsing: startLocation).resolved { _ in 0 })
        let collector = Collector()
        try session.setTracing(collector)
        try session.runUntil(try Location(parsing: endLocation).resolved { _ in 0 })
        try session.setTracing(nil)
        XCTAssertEqual(collector.records.count, oracle.count)
        for (i, (r, o)) in zip(collector.records, oracle).enumerated() {
            XCTAssertEqual(r.from, o.from, "record \(i)")
            XCTAssertEqual(r.to, o.to, "record \(i)")
            XCTAssertEqual(r.brctr, startBrctr + UInt64(i) + 1, "record \(i)")
            if r.from != o.from || r.to != o.to { break }
        }
        XCTAssertTrue(collector.records.contains { $0.to == irq.ip }, "the interrupt is in the trace")
    }

    /// tt's branch trace between two landmarks, written into a replay log and read back,
    /// against QEMU's own exec log of the same icount window (another replay of the same
    /// recording, without tt's plugin): every record equal, counters consecutive.
    func testTraceMatchesQEMUExecLog() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let a = try where32(["run-until", "g32", "fib#2"])
        let b = try where32(["run-until", "g32", "copy_block#2"])
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let dir = try StateDirectory(name: "g32", explicit: Self.state32, base: "/")
        let logPath = FilePath(Self.state32 + "/trace.log")
        let writer = try ReplayLogWriter(creating: logPath, header: ReplayLogHeader(producer: "tt-test", guestWordSize: 32, vcpuCount: 1))
        let sink = ReplayLogBranchSink(writer: writer)
        do {
            let session = ReplaySession(name: "g32", backend: QEMUReplayBackend(state: dir))
            try session.attach()
            defer { try? session.detach() }
            XCTAssertEqual(try session.runUntil(try Location(parsing: a.location).resolved { _ in 0 }).icount, a.icount)
            try session.setTracing(sink)
            XCTAssertEqual(try session.runUntil(try Location(parsing: b.location).resolved { _ in 0 }).icount, b.icount)
            try session.setTracing(nil)
        }
        try sink.finish()
        try writer.close()
        XCTAssertEqual(sink.recordCount, b.brctr - a.brctr)

        // QEMU's account of the same window (another replay, without tt's plugin).
        let (argv, scratch) = try execLogReplayArguments()
        let window = try ExecLogWindow.capture(qemuArguments: argv, first: Int(a.icount), last: Int(b.icount),
                                               scratch: scratch, keepingInstructions: true)
        XCTAssertEqual(window.start, a.ip)
        XCTAssertEqual(UInt64(window.run.instructionCount), b.icount - a.icount)
        // The window holds the instructions executed from A up to, not including, B; the
        // trace also holds the transfer into B (tt's landmark at B counts it): the last
        // instruction of the window → B, when B is not its fall-through.
        var oracle = window.run.transfers
        let last = try XCTUnwrap(window.run.executed.last)
        if last.fallThrough != b.ip { oracle.append(ExecLogOracle.Transfer(from: last.address, to: b.ip)) }

        // Read tt's records back from the replay log.
        var records: [(from: UInt64, to: UInt64, brctr: UInt64)] = []
        let reader = try ReplayLogReader(path: logPath)
        try reader.forEach(types: [.hardwareBranches64]) { entry in
            entry.forEachBranch { from, to, _, brctr in records.append((from, to, brctr)) }
        }
        XCTAssertEqual(records.count, oracle.count)
        for (i, (r, o)) in zip(records, oracle).enumerated() {
            XCTAssertEqual(r.from, o.from, "record \(i)")
            XCTAssertEqual(r.to, o.to, "record \(i)")
            XCTAssertEqual(r.brctr, a.brctr + UInt64(i) + 1, "record \(i)")
            if r.from != o.from || r.to != o.to || r.brctr != a.brctr + UInt64(i) + 1 { break }
        }
    }

    /// The recording's command line, made to replay from anywhere, without the plugin.
    func execLogReplayArguments() throws -> ([String], URL) {
        try IT.execLogReplayArguments(state: Self.state32, scratchBase: Self.base)
    }

    /// The branch counter from power-on (firmware included) against QEMU's exec log: at
    /// fib's first execution (reached by a call), tt's count is the log's transfers up to
    /// there plus the call into fib, and its icount the log's instruction count.
    func testCounterFromPowerOnMatchesQEMUExecLog() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let a = try where32(["run-until", "g32", "fib#1"])
        let (argv, scratch) = try execLogReplayArguments()
        let window = try ExecLogWindow.capture(qemuArguments: argv, first: 0, last: Int(a.icount),
                                               scratch: scratch, keepingInstructions: false)
        XCTAssertEqual(UInt64(window.run.instructionCount), a.icount)
        XCTAssertEqual(UInt64(window.run.transfers.count) + 1, a.brctr)
    }

    final class Collector: BranchSink {
        var records: [BranchTransfer] = []
        func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws { records += batch }
    }

    func testGoingBackwardsAndRepIterations() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let fifth = try where32(["run-until", "g32", "fib#5"])
        let second = try where32(["run-until", "g32", "fib#2"])
        XCTAssertLessThan(second.brctr, fifth.brctr)
        XCTAssertLessThan(second.icount, fifth.icount)
        XCTAssertEqual(try where32(["run-until", "g32", fifth.location]), fifth)
        // Back to the start of the replay.
        XCTAssertEqual(try where32(["run-until", "g32", "_start#1"]).ip, try IT.symbolAddress(Self.elf32, "_start"))
        // A rep movsb: iterations share (ip, brctr) and differ in ecx; going back to an
        // earlier iteration works.
        let table = try IT.instructionTable(Self.elf32)
        let copy = try IT.symbolAddress(Self.elf32, "copy_block")
        let rep = table.keys.filter { $0 >= copy && $0 < copy + 64 && table[$0]!.rep }.min()!
        let firstIteration = try where32(["run-until", "g32", "0x\(String(rep, radix: 16))"])
        XCTAssertGreaterThan(firstIteration.cx, 5)
        let later = try where32(["run-until", "g32", "0x\(String(rep, radix: 16)):\(firstIteration.brctr):3"])
        XCTAssertEqual(later.cx, 3)
        XCTAssertEqual(later.brctr, firstIteration.brctr, "rep iterations take no branch")
        XCTAssertEqual(later.icount, firstIteration.icount + (firstIteration.cx - 3))
        let back = try where32(["run-until", "g32", "0x\(String(rep, radix: 16)):\(firstIteration.brctr):\(firstIteration.cx - 1)"])
        XCTAssertEqual(back.icount, firstIteration.icount + 1)
    }

    /// Going back to an exact landmark through a snapshot taken at an earlier landing
    /// (plugin counters restored from the snapshot table) lands where a fresh replay does.
    func testGoingBackThroughALandingSnapshot() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let fresh = try where32(["run-until", "g32", "copy_block#15"])
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let tenth = try where32(["run-until", "g32", "copy_block#10"])
        _ = try where32(["run-until", "g32", "copy_block#20"])
        let table = try String(contentsOfFile: Self.state32 + "/replay.snapshots", encoding: .utf8)
        XCTAssertTrue(table.hasPrefix("\(tenth.icount) \(tenth.brctr) "), table)
        let r = try IT.tt(["run-until", "-d", "g32", fresh.location], state: Self.state32)
        XCTAssertEqual(IT.parseWhere(String(r.out.split(separator: "\n").first ?? "")), fresh)
        XCTAssertTrue(r.err.contains("restore icount \(tenth.icount)"), r.err)
    }

    func testNotReachedEndsCleanly() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let r = try IT.tt(["run-until", "g32", "fib:999999999"], state: Self.state32, expect: 2)
        XCTAssertTrue(r.err.contains("not reached; replay ended at 0x"), r.err)
        // The live replay stays at the guest's end, paused: asked again to go forward it says
        // so at once (no hang), and it still goes back to an earlier point, which lands where
        // a fresh replay does.
        let pid = try XCTUnwrap(IT.pid(in: Self.state32))
        XCTAssertTrue(IT.alive(pid), "the live replay survives the guest's end")
        let again = try IT.tt(["run-until", "g32", "fib:999999999"], state: Self.state32, expect: 2)
        XCTAssertTrue(again.err.contains("not reached; replay ended at 0x"), again.err)
        let back = try where32(["run-until", "g32", "copy_block#3"])
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        XCTAssertEqual(try where32(["run-until", "g32", "copy_block#3"]), back)
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
    }

    /// A command driving a live replay that dies mid-run (SIGKILL) leaves the vCPU running to
    /// the guest's end; the live replay is still there and usable afterwards.
    func testALiveReplayOutlivesAKilledDriver() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let pid = try XCTUnwrap(IT.pid(in: Self.state32))
        let driver = try IT.start([IT.tt, "run-until", "-s", Self.state32, "g32", "fib:999999999"])
        defer { unlink(driver.out); unlink(driver.err) }
        usleep(300_000)
        kill(driver.pid, SIGKILL)
        _ = IT.wait(driver.pid)
        usleep(1_000_000) // the vCPU runs on to the guest's end meanwhile
        XCTAssertTrue(IT.alive(pid), "the live replay's QEMU is still there")
        let here = try where32(["run-until", "g32", "copy_block#2"])
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        XCTAssertEqual(try where32(["run-until", "g32", "copy_block#2"]), here)
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
    }

    func testKillAndRestart() throws {
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let pid = try XCTUnwrap(IT.pid(in: Self.state32))
        XCTAssertTrue(IT.alive(pid))
        // A second replay of the same recording is refused, naming the holder.
        let twice = try IT.tt(["replay", "-p", "g32"], state: Self.state32, expect: nil)
        XCTAssertNotEqual(twice.status, 0)
        XCTAssertTrue(twice.err.contains("(pid \(pid))"), twice.err)
        _ = try where32(["run-until", "g32", "fib#2"])
        try IT.tt(["replay", "-K", "g32"], state: Self.state32)
        XCTAssertFalse(IT.alive(pid))
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.state32 + "/pid"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.state32 + "/recording.rr"), "state kept")
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let w = try where32(["where", "g32"])
        XCTAssertEqual(w.brctr, 0)
        XCTAssertEqual(w.icount, 0)
    }

    func testLockRefusalNamesTheHolder() throws {
        let fd = open(Self.state32 + "/lock", O_RDWR | O_CREAT, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.utf8.count, 0)
        let r = try IT.tt(["replay", "-p", "g32"], state: Self.state32, expect: nil)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("in use by pid \(getpid())"), r.err)
        close(fd) // the holder goes away: the lock is free again
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
    }

    func testBadInputsAreOneLineErrors() throws {
        let badName = try IT.run([IT.tt, "replay", "a/b"])
        XCTAssertEqual(badName.status, 65)
        XCTAssertEqual(badName.err, "tt: bad name 'a/b': contains '/'\n")
        let dots = try IT.run([IT.tt, "where", "-s", Self.base, ".."])
        XCTAssertEqual(dots.status, 65)
        let noVM = try IT.tt(["where", "g32"], state: Self.state32, expect: 66)
        XCTAssertTrue(noVM.err.contains("no replay VM is running"), noVM.err)
        let badLocation = try IT.tt(["run-until", "g32", "fib:x"], state: Self.state32, expect: 65)
        XCTAssertEqual(badLocation.err, "tt: bad location 'fib:x': branch count 'x' is not a number\n")
        try IT.tt(["replay", "-p", "g32"], state: Self.state32)
        let unknown = try IT.tt(["run-until", "g32", "no_such_function"], state: Self.state32, expect: 65)
        XCTAssertTrue(unknown.err.hasPrefix("tt: cannot resolve location 'no_such_function'"), unknown.err)
        XCTAssertEqual(unknown.err.split(separator: "\n").count, 1)
        let missing = try IT.run([IT.tt, "replay", "-s", Self.base + "/nothing", "x"])
        XCTAssertEqual(missing.status, 66)
    }

    /// SIGTERM/SIGINT to tt record stops its QEMU; SIGINT to run-until leaves the replay
    /// paused (owned by the state directory), not running away or orphaned.
    func testSignalsLeaveNoOrphan() throws {
        let state = Self.base + "/sig"
        for signal in [SIGTERM, SIGINT, SIGHUP] {
            let child = try IT.start([IT.tt, "record", "-f", "-s", state, "sig"])
            defer { unlink(child.out); unlink(child.err) }
            let pid = try XCTUnwrap(waitForRecordPID(state), "record.pid appeared")
            kill(child.pid, signal)
            XCTAssertEqual(IT.wait(child.pid), 128 + signal)
            XCTAssertFalse(IT.alive(pid), "QEMU \(pid) still alive after signal \(signal) to tt record")
        }
        // A tt record that dies without cleaning up (SIGKILL): the next command reaps its QEMU.
        let child = try IT.start([IT.tt, "record", "-f", "-s", state, "sig"])
        defer { unlink(child.out); unlink(child.err) }
        let pid = try XCTUnwrap(waitForRecordPID(state))
        kill(child.pid, SIGKILL)
        _ = IT.wait(child.pid)
        let reap = try IT.run([IT.tt, "replay", "-K", "-s", state, "sig"])
        XCTAssertFalse(IT.alive(pid), "QEMU of a dead tt record reaped by the next command")
        XCTAssertEqual(reap.status, 0, reap.err)
        // ... and that recording is never taken for a whole one.
        let replay = try IT.run([IT.tt, "replay", "-p", "-s", state, "sig"])
        XCTAssertEqual(replay.status, 65, replay.err)
        XCTAssertTrue(replay.err.contains("incomplete") && replay.err.contains("died before the recording ended"), replay.err)
    }

    private func waitForRecordPID(_ state: String) -> Int32? {
        for _ in 0..<1000 {
            if let p = IT.pid(in: state, "record.pid") { return p }
            usleep(2_000)
        }
        return nil
    }

    func test64BitGuestLandsIdentically() throws {
        let state = Self.base + "/g64"
        try IT.tt(["record", "--arch", "x86_64", "g64"], state: state)
        let fib = try IT.symbolAddress(IT.guest("guest64.elf"), "fib")
        var outs: [String] = []
        for _ in 0..<2 {
            try IT.tt(["replay", "-p", "g64"], state: state)
            outs.append(try IT.tt(["run-until", "--registers", "g64", "fib#4"], state: state).out)
            try IT.tt(["replay", "-K", "g64"], state: state)
        }
        XCTAssertEqual(outs[0], outs[1])
        XCTAssertEqual(IT.parseWhere(String(outs[0].split(separator: "\n").first ?? ""))?.ip, fib)
        // A window against gdb stepping, in long mode.
        let table = try IT.instructionTable(IT.guest("guest64.elf"))
        try IT.tt(["replay", "-p", "g64"], state: state)
        let r = try IT.tt(["run-until", "g64", "copy_block#3"], state: state)
        let start = try XCTUnwrap(IT.parseWhere(String(r.out.split(separator: "\n").first ?? "")))
        let pcs = try IT.gdbStep(socket: state + "/gdb.sock", count: 400)
        let executed = try IT.executed(pcs, table: table, handlers: try IT.handlerEntries(IT.guest("guest64.elf")))
        let oracle = try IT.transfers(steppedPCs: pcs, table: table)
        try IT.tt(["replay", "-K", "g64"], state: state)
        try IT.tt(["replay", "-p", "g64"], state: state)
        _ = try IT.tt(["run-until", "g64", start.location], state: state)
        let end = try IT.tt(["run-until", "g64", "0x\(String(pcs.last!, radix: 16)):\(start.brctr + UInt64(oracle.count))"], state: state)
        XCTAssertEqual(IT.parseWhere(String(end.out.split(separator: "\n").first ?? ""))?.icount, start.icount + UInt64(executed.count - 1))
    }
}
