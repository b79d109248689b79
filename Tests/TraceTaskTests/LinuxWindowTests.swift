import ExecLogOracle
import Foundation
import XCTest

/// A slow test, not in scripts/test: tt trace-task over a window of Debian's Linux guest
/// (scripts/linux-guest) with timer interrupts and user page faults, record for record and
/// counter for counter against QEMU's own exec and interrupt log of the same icount window
/// (another replay, without tt's plugin; ExecLogOracle, which shares no code with it).
///
///     scripts/linux-guest
///     tt record -M 256 --kernel guest/build/linux/vmlinuz --initrd guest/build/linux/initramfs.cpio.gz \
///         --append "console=ttyS0 panic=-1 nokaslr" -s /var/tmp/linux-rec linux
///     TT_LINUX_STATE=/var/tmp/linux-rec swift test --skip-build --filter LinuxWindowTests
///
/// The default window is init's whole work: from `main` to `sync` in the static init (the fork,
/// the child's run and exit; measured: 46,984 records with 22 page faults, 16 device
/// interrupts and a local APIC timer interrupt)
/// (addresses from `nm guest/build/linux/root/init`; TT_LINUX_START / TT_LINUX_END override).
final class LinuxWindowTests: XCTestCase {
    func testForkWindowAgainstQEMUExecLog() throws {
        guard let state = ProcessInfo.processInfo.environment["TT_LINUX_STATE"] else {
            throw XCTSkip("set TT_LINUX_STATE to a recording of the Linux guest")
        }
        let env = ProcessInfo.processInfo.environment
        let initBinary = TT.packageRoot.appendingPathComponent("guest/build/linux/root/init").path
        let sym = try TT.symbols(initBinary)
        let main = try XCTUnwrap(sym["main"]), sync = try XCTUnwrap(sym["sync"])
        let start = env["TT_LINUX_START"] ?? "0x" + String(main, radix: 16)
        let end = env["TT_LINUX_END"] ?? "0x" + String(sync, radix: 16)
        let out = NSTemporaryDirectory() + "tt-linux-window-\(getpid()).bts"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try TT.tt(["trace-task", "-x", "-s", state, "--start", start, "--end", end, "-o", out, "--print-limit", "0", "linux"])
        let a = try TT.landed(r.out, "start"), b = try TT.landed(r.out, "end")
        let (_, records) = try TT.records(out)

        // QEMU's account of the same window, without tt's plugin.
        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tt-linux-oracle-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let argv = try TT.linuxOracleArguments(state: state, scratch: scratch)
        let window = try TT.execLogTransfers(r.out, qemuArguments: argv, scratch: scratch)
        XCTAssertEqual(window.start, a.ip)
        let oracle = window.transfers
        let user = oracle.filter { $0.from < 0x8000_0000_0000 && $0.to >= 0xffff_8000_0000_0000 }.count
        let vectors = window.vectors.sorted { $0.key < $1.key }.map { "0x\(String($0.key, radix: 16)): \($0.value)" }
        print("linux window: \(records.count) records (tt), \(oracle.count) (exec log), \(user) user -> kernel entries; interrupts and exceptions by vector: \(vectors)")
        if env["TT_LINUX_START"] == nil {
            XCTAssertGreaterThan(window.vectors[0xe] ?? 0, 0, "the window holds page faults")
        }
        XCTAssertEqual(records.count, oracle.count)
        XCTAssertEqual(UInt64(records.count), b.brctr - a.brctr)
        for (i, (t, o)) in zip(records, oracle).enumerated() where t.from != o.from || t.to != o.to || t.format != a.brctr + UInt64(i) + 1 {
            XCTFail("record \(i): tt \(t), exec log \(o)")
            break
        }
    }

    /// A window of millions of records (more than the ring holds, many times over) completes,
    /// with consecutive counters. Default window: occurrences 20 to 700 of a kernel interrupt
    /// entry of the measured Debian 6.1 recording (measured: #20..#700 21,904,051 records in 125 s, debug build;
    /// #20..#1500 28,741,227 records in 2 min 19 s, release build) (TT_LINUX_BIG_START / TT_LINUX_BIG_END
    /// override; TT_LINUX_BIG_MIN the least record count expected, default 5,000,000).
    func testMillionsOfRecordsWindowCompletes() throws {
        guard let state = ProcessInfo.processInfo.environment["TT_LINUX_STATE"] else {
            throw XCTSkip("set TT_LINUX_STATE to a recording of the Linux guest")
        }
        let env = ProcessInfo.processInfo.environment
        let start = env["TT_LINUX_BIG_START"] ?? "0xffffffff81c00ef0#20"
        let end = env["TT_LINUX_BIG_END"] ?? "0xffffffff81c00ef0#700"
        let least = Int(env["TT_LINUX_BIG_MIN"] ?? "") ?? 5_000_000
        let out = NSTemporaryDirectory() + "tt-linux-big-\(getpid()).bts"
        defer { try? FileManager.default.removeItem(atPath: out) }
        // The replay to the window alone takes minutes (debug build): a long timeout.
        let r = try TT.run([TT.tt, "trace-task", "-x", "-s", state, "--start", start, "--end", end, "-o", out,
                            "--print-limit", "0", "linux"], timeout: 1500)
        XCTAssertEqual(r.status, 0, r.err)
        let a = try TT.landed(r.out, "start"), b = try TT.landed(r.out, "end")
        // Read the counters straight from the file (24-byte records after the magic one).
        let data = try Data(contentsOf: URL(fileURLWithPath: out), options: .alwaysMapped)
        let count = data.count / 24 - 1
        XCTAssertEqual(UInt64(count), b.brctr - a.brctr)
        XCTAssertGreaterThanOrEqual(count, least)
        var bad: Int? = nil
        data.withUnsafeBytes { p in
            for k in 0..<count where UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24 * (k + 1) + 16, as: UInt64.self)) != a.brctr + UInt64(k) + 1 {
                bad = k
                break
            }
        }
        XCTAssertNil(bad, "record \(bad ?? 0): counter not consecutive")
        print("linux big window: \(count) records, brctr \(a.brctr + 1) ... \(b.brctr)")
    }
}
