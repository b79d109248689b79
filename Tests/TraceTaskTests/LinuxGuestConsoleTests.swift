import Foundation
import TestProcesses
import XCTest

/// The whole interactive workflow on a real guest, as a person does it at a terminal: Debian's
/// kernel with the busybox initramfs and the ext4 disk of scripts/linux-guest, recorded with
/// `tt record -c` on a pseudo-terminal (type `ls /mnt`, `cat /mnt/hello`, `poweroff -f`),
/// replayed with `tt replay -c` (the guest's output byte for byte), then the `getdents64`
/// system call of that `ls` traced from its entry to its return and printed GDB-style.
///
/// Oracles, none taken from tt: the disk's files and /hello's text as scripts/linux-guest made
/// them (guest/build/linux/disk-root), the recorded console file against the replayed one,
/// binutils' nm for the addresses and sizes of the kernel's functions, and QEMU's own exec
/// and interrupt log of the system call's icount window (a plain replay, no tt plugin).
///
/// Slow (measured on 2 shared cores, debug build: see docs/real-linux-guest.md), so it runs
/// only when asked:
///
///     scripts/linux-guest --with-symbols
///     TT_LINUX_GUEST=1 scripts/test --filter LinuxGuestConsoleTests
final class LinuxGuestConsoleTests: XCTestCase {
    let linux = TT.packageRoot.appendingPathComponent("guest/build/linux").path
    var state = ""

    override func setUpWithError() throws {
        guard ProcessInfo.processInfo.environment["TT_LINUX_GUEST"] == "1" else {
            throw XCTSkip("set TT_LINUX_GUEST=1 to run the Linux guest's interactive workflow (minutes; scripts/linux-guest --with-symbols first)")
        }
        for f in ["vmlinuz", "busybox.cpio.gz", "disk.ext4", "vmlinux", "disk-root/hello"]
        where !FileManager.default.fileExists(atPath: linux + "/" + f) {
            XCTFail("\(linux)/\(f) is missing: run scripts/linux-guest --with-symbols")
            throw TT.Failure(description: "no Linux guest")
        }
        state = NSTemporaryDirectory() + "tt-linux-console-\(getpid())"
    }

    override func tearDown() {
        if !state.isEmpty {
            _ = try? TT.run([TT.tt, "record", "-S", "-s", state, "bb"])
            _ = try? TT.run([TT.tt, "replay", "-K", "-s", state, "bb"])
            _ = try? TT.run([TT.tt, "record", "-D", "-s", state, "bb"])
        }
        super.tearDown()
    }

    func testRecordTypeReplayAndTraceOneSystemCall() throws {
        let prompt = "tt-guest# "
        let hello = try String(contentsOfFile: linux + "/disk-root/hello", encoding: .utf8)
            .trimmingCharacters(in: .newlines)
        // The folder's files, and the lost+found that mkfs.ext4 makes in every ext4 image.
        let files = (try FileManager.default.contentsOfDirectory(atPath: linux + "/disk-root") + ["lost+found"]).sorted()
        var clock = Date()
        func lap(_ what: String) {
            print("linux guest: \(what) \(String(format: "%.1f", Date().timeIntervalSince(clock))) s")
            clock = Date()
        }

        // 1. Record, typing at the guest's shell. One line at a time, each after the
        //    previous one's prompt: typing into a busy UART can hang QEMU 10's replay.
        let term = try TestProcesses.Terminal([
            TT.tt, "record", "-c", "-M", "256", "--kernel", linux + "/vmlinuz", "--initrd", linux + "/busybox.cpio.gz",
            "--append", "console=ttyS0 panic=-1 nokaslr quiet", "--disk", linux + "/disk.ext4",
            "--symbols", linux + "/vmlinux", "-s", state, "bb"])
        XCTAssertTrue(term.waitFor(prompt, timeout: 300), "no shell prompt: \(term.text)")
        lap("boot to the prompt")
        var mark = term.shown.count
        term.type("ls /mnt\r")
        XCTAssertTrue(term.waitFor("lost+found", after: mark, timeout: 60), term.text)
        XCTAssertTrue(term.waitFor(prompt, after: mark, timeout: 60), term.text)
        mark = term.shown.count
        term.type("cat /mnt/hello\r")
        XCTAssertTrue(term.waitFor(hello, after: mark, timeout: 60), term.text)
        XCTAssertTrue(term.waitFor(prompt, after: mark, timeout: 60), term.text)
        term.type("poweroff -f\r")
        XCTAssertEqual(term.finish(timeout: 120), 0, term.text)
        XCTAssertTrue(term.text.contains("tt: recorded bb"), term.text)
        lap("typing and power-off")

        // What the guest showed: its listing of the disk is the files the script put there.
        let recorded = try Data(contentsOf: URL(fileURLWithPath: state + "/console.record"))
        let shown = String(decoding: recorded, as: UTF8.self)
        let listing = try XCTUnwrap(shown.components(separatedBy: "ls /mnt").dropFirst().first)
        let names = listing.components(separatedBy: prompt)[0].split(whereSeparator: { $0.isWhitespace }).map(String.init)
        XCTAssertEqual(names.sorted(), files, shown)
        XCTAssertTrue(shown.contains(hello + "\r\n"), shown)

        // 2. Replay: the typed keys come from the recording; the output is the same bytes.
        let replay = try TT.run([TT.tt, "replay", "-c", "-s", state, "bb"], timeout: 900)
        XCTAssertEqual(replay.status, 0, replay.err)
        let replayed = try Data(contentsOf: URL(fileURLWithPath: state + "/console.replay"))
        XCTAssertEqual(replayed.count, recorded.count)
        XCTAssertEqual(replayed, recorded, "console.replay differs from console.record")
        lap("replay -c")

        // 3. The ls's getdents64: the first in the run (nothing before the shell lists a
        //    directory), from its entry to its return, on the live replay (it goes back).
        let out = state + "/getdents64.bts"
        let r = try TT.run([TT.tt, "trace-task", "-s", state, "--start", "syscall:getdents64", "--end", "return",
                            "-o", out, "--print-limit", "0", "bb"], timeout: 900)
        XCTAssertEqual(r.status, 0, r.err)
        lap("trace-task")
        let a = try TT.landed(r.out, "start"), b = try TT.landed(r.out, "end")
        let (_, records) = try TT.records(out)
        XCTAssertGreaterThan(records.count, 0)
        XCTAssertEqual(UInt64(records.count), b.brctr - a.brctr)

        // Where it started and ended, by nm: the entry of __x64_sys_getdents64, and a return
        // into do_syscall_64 (its caller, through x64_sys_call).
        let nm = try TT.run([ "nm", "-S", linux + "/vmlinux"], timeout: 300)
        var functions: [String: (start: UInt64, size: UInt64)] = [:]
        for line in nm.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 4, let addr = UInt64(f[0], radix: 16), let size = UInt64(f[1], radix: 16),
               ["__x64_sys_getdents64", "do_syscall_64", "filldir64"].contains(String(f[3])) {
                functions[String(f[3])] = (addr, size)
            }
        }
        let entry = try XCTUnwrap(functions["__x64_sys_getdents64"]), caller = try XCTUnwrap(functions["do_syscall_64"])
        let filldir = try XCTUnwrap(functions["filldir64"])
        XCTAssertEqual(a.ip, entry.start)
        XCTAssertTrue((caller.start..<caller.start + caller.size).contains(b.ip), "end \(b.text) is not in do_syscall_64")
        XCTAssertEqual(records.last?.to, b.ip)
        XCTAssertTrue((entry.start..<entry.start + entry.size).contains(records[0].from), "first record \(records[0])")
        // ls's call fills one entry per file, plus . and ..: filldir64 entered that often.
        let fills = records.filter { $0.to == filldir.start }.count
        XCTAssertEqual(fills, files.count + 2, "calls of filldir64")

        // GDB-style names through bts-dump: the syscall's own functions.
        let dump = try TT.run([TT.buildDirectory.appendingPathComponent("bts-dump").path, "-G", "--symbols", linux + "/vmlinux", out], timeout: 300)
        XCTAssertEqual(dump.status, 0, dump.err)
        let lines = dump.out.split(separator: "\n")
        XCTAssertEqual(lines.count, records.count)
        XCTAssertTrue(lines.first?.contains("<__x64_sys_getdents64+") ?? false, String(lines.first ?? ""))
        XCTAssertTrue(lines.last?.contains("<do_syscall_64+") ?? false, String(lines.last ?? ""))
        XCTAssertTrue(dump.out.contains("<filldir64>") && dump.out.contains("<iterate_dir"), "no getdents64 work in the dump")
        lap("checks")

        // 4. Record for record against QEMU's own exec and interrupt log of the same icount
        //    window, from a plain replay without tt's plugin (ExecLogOracle).
        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tt-linux-console-oracle-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let argv = try TT.linuxOracleArguments(state: state, scratch: scratch, disks: [linux + "/disk.ext4"])
        let window = try TT.execLogTransfers(r.out, qemuArguments: argv, scratch: scratch)
        XCTAssertEqual(window.start, a.ip)
        XCTAssertEqual(records.count, window.transfers.count, "records: tt against QEMU's exec log")
        for (i, (t, o)) in zip(records, window.transfers).enumerated() where t.from != o.from || t.to != o.to {
            XCTFail("record \(i): tt \(t), exec log \(o)")
            break
        }
        lap("exec-log oracle")
        print("linux guest: getdents64 of ls: \(records.count) records, \(r.out.split(separator: "\n").filter { $0.hasPrefix("  ") }.joined(separator: "; "))")
    }
}
