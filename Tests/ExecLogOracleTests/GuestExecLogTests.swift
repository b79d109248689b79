// The exec-log oracle on the real bundled guests under the real QEMU. Every expectation comes
// from outside the oracle: the guest's C source (call counts of fib, the rounds), its serial
// output, binutils (symbols, instruction boundaries, mnemonics) and gdb single-stepping.

import ExecLogOracle
import Foundation
import XCTest

/// One recording of a guest, replayed once with the exec log on (filtered to the guest image).
final class GuestRecording {
    let guest: Guest
    let rrfile: String
    let recordedSerial: String
    let replayedSerial: String
    let replayStatus: Int32
    let run: ExecLogOracle.Run
    let code: Disassembly

    private static var cache: [String: GuestRecording] = [:]
    static func forget() { cache = [:] }

    static func of(_ guest: Guest) throws -> GuestRecording {
        if let r = cache[guest.name] { return r }
        let r = try GuestRecording(guest)
        cache[guest.name] = r
        return r
    }

    private init(_ guest: Guest) throws {
        try Harness.buildGuests()
        self.guest = guest
        let dir = Harness.scratch.path
        rrfile = "\(dir)/\(guest.name).rr"
        let recSerial = "\(dir)/\(guest.name).record.serial"
        let repSerial = "\(dir)/\(guest.name).replay.serial"
        let log = "\(dir)/\(guest.name).exec.log"

        let rec = try Harness.run(guest.qemuArguments(serial: recSerial, rr: "record", rrfile: rrfile))
        guard rec.status == Guest.successStatus else {
            throw Harness.Failure(description: "recording \(guest.name) ended with status \(rec.status): \(rec.stderr)")
        }
        let rep = try Harness.run(guest.qemuArguments(
            serial: repSerial, rr: "replay", rrfile: rrfile,
            extra: ["-d", "exec,nochain,in_asm", "-dfilter", Guest.imageRange, "-D", log]))
        replayStatus = rep.status
        recordedSerial = try String(contentsOfFile: recSerial, encoding: .utf8)
        replayedSerial = try String(contentsOfFile: repSerial, encoding: .utf8)
        run = try ExecLogOracle.analyze(logAt: log, keepingInstructions: true)
        try? FileManager.default.removeItem(atPath: log)
        code = try Disassembly(elf: guest.symbols)
    }

    /// The round lines of the serial output: (round, fib argument, fib value, copy count).
    var rounds: [(round: Int, fibN: Int, fib: Int, copy: Int)] {
        replayedSerial.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("round ") else { return nil }
            func field(_ key: String) -> Int? {
                guard let r = line.range(of: key) else { return nil }
                return Int(line[r.upperBound...].prefix { $0.isNumber })
            }
            guard let round = field("round "), let n = field("fib("), let f = field(")="),
                  let copy = field("copy=") else { return nil }
            return (round, n, f, copy)
        }
    }

    /// "tt-guest: timer interrupts N": the interrupts taken in the whole run.
    var timerInterrupts: Int? {
        guard let r = replayedSerial.range(of: "tt-guest: timer interrupts ") else { return nil }
        return Int(replayedSerial[r.upperBound...].prefix { $0.isNumber })
    }
}

final class GuestExecLogTests: XCTestCase {
    func testReplayPrintsTheRecordedOutputAndEndsWithSuccess32() throws { try checkReplayPrintsTheRecordedOutputAndEndsWithSuccess(.guest32) }
    func testReplayPrintsTheRecordedOutputAndEndsWithSuccess64() throws { try checkReplayPrintsTheRecordedOutputAndEndsWithSuccess(.guest64) }
    func testEveryCallOfFibIsOneTransferInAndOneReturnOut32() throws { try checkEveryCallOfFibIsOneTransferInAndOneReturnOut(.guest32) }
    func testEveryCallOfFibIsOneTransferInAndOneReturnOut64() throws { try checkEveryCallOfFibIsOneTransferInAndOneReturnOut(.guest64) }
    func testLandmarksDelimitOneRoundOfFib32() throws { try checkLandmarksDelimitOneRoundOfFib(.guest32) }
    func testLandmarksDelimitOneRoundOfFib64() throws { try checkLandmarksDelimitOneRoundOfFib(.guest64) }
    func testWindowInTheFirmwareHasExactlyTheIcountInstructions32() throws {
        try checkWindowHasExactlyTheIcountInstructions(.guest32, from: 2_000_000, to: 2_400_000)
    }
    func testWindowInTheGuestHasExactlyTheIcountInstructions32() throws {
        try checkWindowHasExactlyTheIcountInstructions(.guest32, from: 6_700_000, to: 7_000_000)
    }
    func testWindowInTheFirmwareHasExactlyTheIcountInstructions64() throws {
        try checkWindowHasExactlyTheIcountInstructions(.guest64, from: 2_000_000, to: 2_400_000)
    }
    func testWindowInTheGuestHasExactlyTheIcountInstructions64() throws {
        try checkWindowHasExactlyTheIcountInstructions(.guest64, from: 6_700_000, to: 7_000_000)
    }
    func testTailCallIsOneJumpIntoTheCalleePerRound32() throws { try checkTailCallIsOneJumpIntoTheCalleePerRound(.guest32) }
    func testTailCallIsOneJumpIntoTheCalleePerRound64() throws { try checkTailCallIsOneJumpIntoTheCalleePerRound(.guest64) }
    func testRepIterationsAreNotTransfers32() throws { try checkRepIterationsAreNotTransfers(.guest32) }
    func testRepIterationsAreNotTransfers64() throws { try checkRepIterationsAreNotTransfers(.guest64) }
    func testEveryTimerInterruptIsATransferIntoTheHandlerAndOutByIret32() throws { try checkEveryTimerInterruptIsATransferIntoTheHandlerAndOutByIret(.guest32) }
    func testEveryTimerInterruptIsATransferIntoTheHandlerAndOutByIret64() throws { try checkEveryTimerInterruptIsATransferIntoTheHandlerAndOutByIret(.guest64) }
    func testEveryTransferGoesBetweenInstructionStartsAndNonInterruptsLeaveBranches32() throws { try checkEveryTransferGoesBetweenInstructionStartsAndNonInterruptsLeaveBranches(.guest32) }
    func testEveryTransferGoesBetweenInstructionStartsAndNonInterruptsLeaveBranches64() throws { try checkEveryTransferGoesBetweenInstructionStartsAndNonInterruptsLeaveBranches(.guest64) }
    func testAgreesWithGdbSteppingFromStart32() throws { try checkAgreesWithGdbSteppingFromStart(.guest32) }
    func testAgreesWithGdbSteppingFromStart64() throws { try checkAgreesWithGdbSteppingFromStart(.guest64) }
    func testAgreesWithGdbSteppingOverARound32() throws { try checkAgreesWithGdbSteppingOverARound(.guest32) }
    func testAgreesWithGdbSteppingOverARound64() throws { try checkAgreesWithGdbSteppingOverARound(.guest64) }
    func testEveryInterruptReturnsWhereGdbSaysItInterrupted32() throws {
        try checkEveryInterruptReturnsWhereGdbSaysItInterrupted(.guest32)
    }
    func testEveryInterruptReturnsWhereGdbSaysItInterrupted64() throws {
        try checkEveryInterruptReturnsWhereGdbSaysItInterrupted(.guest64)
    }

    override class func tearDown() {
        GuestRecording.forget()
        try? FileManager.default.removeItem(at: Harness.scratch)
        super.tearDown()
    }


    /// fib(n) as written in the guest calls fib once for itself plus its two subcalls.
    func fibCalls(_ n: Int) -> Int { n < 2 ? 1 : 1 + fibCalls(n - 1) + fibCalls(n - 2) }
    func fibValue(_ n: Int) -> Int { n < 2 ? n : fibValue(n - 1) + fibValue(n - 2) }

    func checkReplayPrintsTheRecordedOutputAndEndsWithSuccess(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        // QEMU 10 replays the recording's shutdown (isa-debug-exit asks for one) and may end
        // the replay with 0 instead of the device's status.
        XCTAssertTrue([Guest.successStatus, 0].contains(r.replayStatus), "replay status \(r.replayStatus)")
        XCTAssertEqual(r.replayedSerial, r.recordedSerial)
        XCTAssertEqual(r.rounds.map(\.round), Array(1...32))
        for round in r.rounds {
            XCTAssertEqual(round.fib, fibValue(round.fibN))
            XCTAssertEqual(round.copy, 40 + round.round)
        }
        XCTAssertTrue(r.replayedSerial.hasSuffix("tt-guest: done\n"))
        XCTAssertGreaterThan(r.run.instructionCount, 100_000)
        print("\(guest.name): \(r.run.instructionCount) instructions, \(r.run.transfers.count) transfers, \(r.timerInterrupts ?? -1) timer interrupts")
    }

    func checkEveryCallOfFibIsOneTransferInAndOneReturnOut(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let expected = r.rounds.map { fibCalls($0.fibN) }.reduce(0, +)
        XCTAssertEqual(expected, 32 * 465)
        let fib = try r.code.address("fib")
        let rets = try r.code.instructions(in: "fib", mnemonic: "ret")
        XCTAssertEqual(rets.count, 1, "fib has one ret per objdump")
        XCTAssertEqual(r.run.transfers.filter { $0.to == fib }.count, expected)
        XCTAssertEqual(r.run.transfers.filter { $0.from == rets[0] }.count, expected)
        // Calls into fib come from call instructions, or (after an interrupt right at the
        // call) from the handler's iret.
        let iret = try r.code.instructions(in: "irq0_entry", mnemonic: "iret")
        for t in r.run.transfers where t.to == fib {
            let text = r.code.instructions[t.from] ?? "?"
            XCTAssertTrue(text.hasPrefix("call") || iret.contains(t.from), "\(t): \(text)")
        }
    }

    /// Between the first call of fib in round 1 (fib#1) and the first of round 2, the branch
    /// trace holds exactly the 465 calls of round 1's fib(12) into fib (the last one being
    /// the transfer into the end point itself).
    func checkLandmarksDelimitOneRoundOfFib(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let fib = try r.code.address("fib")
        let perRound = fibCalls(r.rounds[0].fibN)
        let start = try XCTUnwrap(r.run.execution(of: fib, occurrence: 1))
        let end = try XCTUnwrap(r.run.execution(of: fib, occurrence: perRound + 1))
        XCTAssertEqual(r.run.execution(of: fib, atCounter: end.counter), end)
        let trace = r.run.transfers(from: start, to: end)
        XCTAssertEqual(trace.count, end.counter - start.counter)
        XCTAssertEqual(trace.filter { $0.to == fib }.count, perRound)
        XCTAssertEqual(trace.last?.to, fib)
    }

    func checkTailCallIsOneJumpIntoTheCalleePerRound(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let callee = try r.code.address("tail_callee")
        let jumps = try r.code.instructions(in: "tail_caller", mnemonic: "jmp")
        XCTAssertEqual(jumps.count, 1, "tail_caller ends in a jmp per objdump")
        XCTAssertEqual(r.run.transfers.filter { $0.to == callee }.count, r.rounds.count)
        // No call ever enters tail_callee: it is only reached through the tail jump.
        let iret = try r.code.instructions(in: "irq0_entry", mnemonic: "iret")
        for t in r.run.transfers where t.to == callee {
            XCTAssertTrue(t.from == jumps[0] || iret.contains(t.from), "\(t)")
        }
    }

    func checkRepIterationsAreNotTransfers(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let reps = try r.code.instructions(in: "copy_block", mnemonic: "rep movsb")
        XCTAssertEqual(reps.count, 1)
        let rep = reps[0]
        let executions = r.run.executed.filter { $0.address == rep }.count
        XCTAssertGreaterThanOrEqual(executions, r.rounds.map(\.copy).reduce(0, +))
        XCTAssertTrue(r.run.executed.first { $0.address == rep }?.isRepString ?? false)
        XCTAssertFalse(r.run.transfers.contains { $0.from == rep && $0.to == rep })
        // The only way out of the rep other than falling through is an interrupt.
        let irq = try r.code.address("irq0_entry")
        for t in r.run.transfers where t.from == rep { XCTAssertEqual(t.to, irq, "\(t)") }
    }

    func checkEveryTimerInterruptIsATransferIntoTheHandlerAndOutByIret(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let n = try XCTUnwrap(r.timerInterrupts)
        XCTAssertGreaterThan(n, 0)
        let irq = try r.code.address("irq0_entry")
        let iret = try r.code.instructions(in: "irq0_entry", mnemonic: "iret")
        XCTAssertEqual(iret.count, 1)
        XCTAssertEqual(r.run.transfers.filter { $0.to == irq }.count, n)
        XCTAssertEqual(r.run.transfers.filter { $0.from == iret[0] }.count, n)
        XCTAssertEqual(r.run.transfers.filter { $0.to == (try? r.code.address("timer_tick")) }.count, n)
    }

    /// Instruction boundaries and mnemonics per objdump (for the 64-bit guest, the code before
    /// long mode is disassembled as i386 code).
    func objdumpInstructions(_ guest: Guest) throws -> [UInt64: String] {
        let r = try GuestRecording.of(guest)
        guard guest.name == "guest64" else { return r.code.instructions }
        // _start runs in 32-bit protected mode: disassemble it as such, the rest as x86-64.
        let boot32 = try Disassembly(elf: guest.kernel, objdumpExtra: ["-m", "i386"])
        let start = try r.code.address("_start"), long = try r.code.address("long_mode_entry")
        var result = r.code.instructions.filter { $0.key < start || $0.key >= long }
        for (a, text) in boot32.instructions where a >= start && a < long { result[a] = text }
        return result
    }

    func checkEveryTransferGoesBetweenInstructionStartsAndNonInterruptsLeaveBranches(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let insns = try objdumpInstructions(guest)
        let irq = try r.code.address("irq0_entry")
        let branchMnemonics = ["j", "call", "ret", "iret", "ljmp", "lcall", "lret", "loop"]
        var checked = 0
        for t in r.run.transfers {
            guard let from = insns[t.from] else { XCTFail("\(t): source is no instruction start"); continue }
            XCTAssertNotNil(insns[t.to], "\(t): target is no instruction start")
            if t.to != irq {
                XCTAssertTrue(branchMnemonics.contains { from.hasPrefix($0) }, "\(t) leaves \(from)")
            }
            checked += 1
        }
        XCTAssertEqual(checked, r.run.transfers.count)
        XCTAssertGreaterThan(checked, 30_000)
    }

    // MARK: QEMU's instruction counter

    /// A log window opened with the HMP `log` command while the replay is stopped at icount
    /// `first` (QMP `replay-break`) and closed at icount `last` holds exactly `last - first`
    /// instructions, and its first one is where the vCPU stood (`info registers`: CS base +
    /// EIP/RIP). In the firmware this covers real mode, MMIO (`cpu_io_recompile`) and icount
    /// limits ("Stopped execution"); in the guest, interrupts and rep.
    func checkWindowHasExactlyTheIcountInstructions(_ guest: Guest, from first: Int, to last: Int) throws {
        let r = try GuestRecording.of(guest)
        let serial = Harness.scratch.appendingPathComponent("\(guest.name).window.serial").path
        let window = try ExecLogWindow.capture(
            qemuArguments: guest.qemuArguments(serial: serial, rr: "replay", rrfile: r.rrfile),
            first: first, last: last, scratch: Harness.scratch)
        XCTAssertEqual(window.run.instructionCount, last - first)
        XCTAssertEqual(window.run.executed.first?.address, window.start)
        print("\(guest.name): icount \(first)..\(last): \(window.run.instructionCount) instructions, \(window.run.transfers.count) transfers")
    }

    // MARK: gdb, the second independent oracle

    /// Replays the recording under gdb running `commands` (after `target remote`); returns
    /// gdb's standard output.
    func gdb(_ r: GuestRecording, _ commands: String, timeout: TimeInterval = 300) throws -> String {
        let socket = Harness.scratch.appendingPathComponent("\(r.guest.name).gdb.sock").path
        try? FileManager.default.removeItem(atPath: socket)
        let serial = Harness.scratch.appendingPathComponent("\(r.guest.name).gdb.serial").path
        let qemu = try Harness.start(r.guest.qemuArguments(
            serial: serial, rr: "replay", rrfile: r.rrfile,
            extra: ["-S", "-gdb", "unix:\(socket),server=on,wait=off"]))
        defer { qemu.terminate() }
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) && Date() < deadline { usleep(20_000) }
        let script = "set pagination off\nset confirm off\ntarget remote \(socket)\n" + commands
        let scriptFile = try Harness.tempFile("\(r.guest.name).gdb")
        try script.write(to: scriptFile, atomically: true, encoding: .utf8)
        return try Harness.run(["gdb", "-batch", "-nx", "-x", scriptFile.path], timeout: timeout).stdout
    }

    /// gdb single-steps `steps` times from the first execution of `start`; the instructions it
    /// steps through must be exactly the oracle's, and so must the transfers.
    ///
    /// What a gdb step is in QEMU 7.2 (found here): a step either executes one instruction, or,
    /// when an interrupt is pending at its start, only enters the handler — the pc moves from
    /// the interrupted instruction to the handler's first one, and the interrupted instruction
    /// runs only after the iret. gdb tells the two apart by the return address the CPU pushed:
    /// at the handler, if it equals the pc before the step, that step executed nothing. (A
    /// `hlt` step executes the hlt and then takes the interrupt that ends the halt.)
    func checkStepping(_ r: GuestRecording, from start: UInt64, steps: Int) throws -> [ExecLogOracle.Transfer] {
        let irq = try r.code.address("irq0_entry")
        let frame = r.guest.name == "guest64" ? "*(unsigned long long *)$rsp" : "*(unsigned int *)$esp"
        let out = try gdb(r, """
            break *0x\(String(start, radix: 16))
            continue
            delete
            set $i = 0
            while $i < \(steps)
              printf "PC %llx\\n", (unsigned long long)$pc
              stepi
              if $pc == 0x\(String(irq, radix: 16))
                printf "RETURN %llx\\n", (unsigned long long)\(frame)
              end
              set $i = $i + 1
            end
            printf "PC %llx\\n", (unsigned long long)$pc
            kill

            """)
        // "RETURN" is printed right after the step that reached the handler, before that stop's "PC".
        var stops: [(pc: UInt64, returnAddress: UInt64?)] = []
        var returnAddress: UInt64? = nil
        for line in out.split(separator: "\n") {
            if line.hasPrefix("PC "), let pc = UInt64(line.dropFirst(3), radix: 16) {
                stops.append((pc, returnAddress))
                returnAddress = nil
            } else if line.hasPrefix("RETURN ") {
                returnAddress = UInt64(line.dropFirst(7), radix: 16)
            }
        }
        XCTAssertEqual(stops.count, steps + 1, "gdb said: \(out.suffix(500))")
        XCTAssertEqual(stops.first?.pc, start)
        // The executed instructions: every stop, except one whose step only entered the handler.
        var pcs: [UInt64] = []
        var interruptOnlySteps = 0
        for (k, stop) in stops.enumerated() {
            if k + 1 < stops.count, stops[k + 1].pc == irq, stops[k + 1].returnAddress == stop.pc {
                interruptOnlySteps += 1
                continue
            }
            pcs.append(stop.pc)
        }

        let first = try XCTUnwrap(r.run.executed.firstIndex { $0.address == start })
        let window = Array(r.run.executed[first..<min(first + pcs.count, r.run.executed.count)])
        XCTAssertEqual(window.count, pcs.count)
        let mismatch = zip(window, pcs).enumerated().first { $0.element.0.address != $0.element.1 }
        XCTAssertNil(mismatch, "instruction \(mismatch?.offset ?? 0): exec log 0x\(String(mismatch?.element.0.address ?? 0, radix: 16)), gdb 0x\(String(mismatch?.element.1 ?? 0, radix: 16))")

        // Transfers: the oracle's over the window, and gdb's with lengths and rep prefixes from
        // objdump (an instruction's length is the distance to the next instruction start).
        var oracle = ExecLogOracle.TransferCounter()
        let oracleTransfers = window.flatMap { oracle.execute($0) }
        let code = try objdumpInstructions(r.guest)
        let addresses = code.keys.sorted()
        var counter = ExecLogOracle.TransferCounter()
        var gdbTransfers: [ExecLogOracle.Transfer] = []
        for pc in pcs {
            let k = try XCTUnwrap(addresses.firstIndex(of: pc), "0x\(String(pc, radix: 16)) is no instruction per objdump")
            let length = k + 1 < addresses.count ? Int(addresses[k + 1] - pc) : 1
            let isRep = (code[pc] ?? "").hasPrefix("rep")
            // objdump's mnemonic says whether it always transfers (also to the next instruction).
            let always = ExecLogOracle.Instruction.alwaysTransfers(mnemonic: Substring(code[pc] ?? ""))
            for t in counter.execute(.init(address: pc, length: length, isRepString: isRep, alwaysTransfers: always)) {
                gdbTransfers.append(t)
            }
        }
        XCTAssertEqual(oracleTransfers, gdbTransfers)
        XCTAssertGreaterThan(oracleTransfers.count, 50)
        print("\(r.guest.name): gdb stepped \(steps) times from 0x\(String(start, radix: 16)): \(pcs.count) instructions, \(gdbTransfers.count) transfers, \(interruptOnlySteps) steps that only took an interrupt")
        return oracleTransfers
    }

    /// The first few thousand instructions of the guest: boot, serial, IDT, PIC, PIT set-up.
    func checkAgreesWithGdbSteppingFromStart(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let start = try r.code.address("_start")
        XCTAssertEqual(r.run.executed.first?.address, start)
        _ = try checkStepping(r, from: start, steps: 3000)
    }

    /// Round 1 from its tail call: the rep copy, RTC and TSC reads, serial output, the wait for
    /// the timer interrupt in `hlt`, and round 2's checksum loop with whatever interrupts
    /// this recording has there.
    func checkAgreesWithGdbSteppingOverARound(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let transfers = try checkStepping(r, from: try r.code.address("tail_caller"), steps: 4000)
        XCTAssertTrue(transfers.contains { $0.to == (try? r.code.address("irq0_entry")) })
        XCTAssertTrue(transfers.contains { $0.to == (try? r.code.address("tail_callee")) })
        XCTAssertTrue(transfers.contains { $0.to == (try? r.code.address("copy_block")) })
    }

    /// gdb stops at every timer interrupt (a breakpoint on the handler, no stepping) and reads
    /// the interrupted instruction pointer from the interrupt frame; the oracle's iret transfers
    /// must return to exactly those places, in the same order.
    func checkEveryInterruptReturnsWhereGdbSaysItInterrupted(_ guest: Guest) throws {
        let r = try GuestRecording.of(guest)
        let irq = try r.code.address("irq0_entry")
        let iret = try r.code.instructions(in: "irq0_entry", mnemonic: "iret")
        let frame = guest.name == "guest64" ? "*(unsigned long long *)$rsp" : "*(unsigned int *)$esp"
        let out = try gdb(r, """
            break *0x\(String(irq, radix: 16))
            commands
            silent
            printf "INTERRUPTED %llx\\n", (unsigned long long)\(frame)
            continue
            end
            continue

            """)
        let gdbReturns = out.split(separator: "\n").compactMap { line in
            line.hasPrefix("INTERRUPTED ") ? UInt64(line.dropFirst("INTERRUPTED ".count), radix: 16) : nil
        }
        // Where each iret returns; an iret straight into the handler again is a second
        // interrupt pending at the same place (it pushed the same return address).
        var oracleReturns = r.run.transfers.filter { iret.contains($0.from) }.map(\.to)
        for i in oracleReturns.indices.reversed() where oracleReturns[i] == irq && i + 1 < oracleReturns.count {
            oracleReturns[i] = oracleReturns[i + 1]
        }
        XCTAssertEqual(gdbReturns.count, r.timerInterrupts)
        XCTAssertEqual(gdbReturns, oracleReturns)
    }
}
