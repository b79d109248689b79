import Foundation
import XCTest

/// tt record's VM options and disks, end to end with the real QEMU and the bundled guest:
/// what QEMU actually ran is read from /proc, images are compared byte for byte.
final class VMOptionsIntegrationTests: XCTestCase {
    var base = ""

    override func setUpWithError() throws {
        base = NSTemporaryDirectory() + "tt-vmopt-\(getpid())-\(name.filter { $0.isLetter })"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for dir in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            _ = try? IT.run([IT.tt, "replay", "-K", "-s", base + "/" + dir, "x"])
        }
        try? FileManager.default.removeItem(atPath: base)
        super.tearDown()
    }

    /// The running replay QEMU's own command line (from /proc, not from tt).
    func replayCommandLine(_ state: String) throws -> [String] {
        let pidText = try String(contentsOfFile: state + "/pid", encoding: .utf8)
        let pid = try XCTUnwrap(pidText.split(separator: "\n").first.map(String.init))
        let raw = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
        return raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }

    func contains(_ argv: [String], _ pair: [String]) -> Bool {
        argv.indices.contains { i in i + pair.count <= argv.count && Array(argv[i..<i + pair.count]) == pair }
    }

    /// Another CPU model and a harmless QEMU argument: the replay runs with both and lands
    /// identically twice; played to the end, its console is the recording's.
    func testCPUModelAndQEMUArgumentReplayIdentically() throws {
        let s = base + "/opts"
        try IT.tt(["record", "--cpu", "max", "--qemu-arg", "-name", "--qemu-arg", "tt-vm14-probe", "opts"], state: s)
        try IT.tt(["replay", "-p", "opts"], state: s)
        let argv = try replayCommandLine(s)
        XCTAssertTrue(contains(argv, ["-cpu", "max"]), "\(argv)")
        XCTAssertTrue(contains(argv, ["-name", "tt-vm14-probe"]), "\(argv)")
        let first = try IT.tt(["run-until", "--registers", "opts", "fib#3"], state: s).out
        try IT.tt(["replay", "-K", "opts"], state: s)
        try IT.tt(["replay", "-p", "opts"], state: s)
        let second = try IT.tt(["run-until", "--registers", "opts", "fib#3"], state: s).out
        XCTAssertFalse(first.isEmpty)
        XCTAssertEqual(first, second)
        try IT.tt(["run-until", "opts", "fib:999999999"], state: s, expect: 2)
        let record = try Data(contentsOf: URL(fileURLWithPath: s + "/console.record"))
        let replay = try Data(contentsOf: URL(fileURLWithPath: s + "/console.replay"))
        XCTAssertTrue(String(decoding: record, as: UTF8.self).contains("tt-guest: done"))
        XCTAssertEqual(record, replay)

        // Refused before anything is created: one line, 64.
        let refused = try IT.tt(["record", "--qemu-arg", "-icount", "other"], state: base + "/other", expect: 64)
        XCTAssertTrue(refused.err.contains("-icount"), refused.err)
        XCTAssertEqual(refused.err.split(separator: "\n").count, 1, refused.err)
        let smp = try IT.tt(["record", "--smp", "2", "other"], state: base + "/other", expect: 64)
        XCTAssertTrue(smp.err.contains("SMP"), smp.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/other"))
    }

    /// --net user: recorded with QEMU's replay filter on the network; the replay runs the
    /// same network declaration and plays the guest byte for byte to its end.
    func testNetworkRecordsAndReplays() throws {
        let s = base + "/net"
        try IT.tt(["record", "--net", "user,hostfwd=tcp:127.0.0.1:0-:22", "net"], state: s)
        try IT.tt(["replay", "-p", "net"], state: s)
        let argv = try replayCommandLine(s)
        XCTAssertTrue(contains(argv, ["-device", "virtio-net-pci,netdev=net0", "-object", "filter-replay,id=netreplay,netdev=net0"]), "\(argv)")
        let first = try IT.tt(["run-until", "--registers", "net", "fib#3"], state: s).out
        XCTAssertFalse(first.isEmpty)
        try IT.tt(["run-until", "net", "fib:999999999"], state: s, expect: 2)
        try IT.tt(["replay", "-K", "net"], state: s)
        let record = try Data(contentsOf: URL(fileURLWithPath: s + "/console.record"))
        XCTAssertTrue(String(decoding: record, as: UTF8.self).contains("tt-guest: done"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: s + "/console.replay")), record)
        let refused = try IT.tt(["record", "--net", "user,guestfwd=tcp:10.0.2.100:1-cmd:/bin/sh", "other"], state: base + "/other", expect: 64)
        XCTAssertTrue(refused.err.contains("guestfwd"), refused.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/other"))
    }

    /// --rootfs DIR: an ext4 image of the folder in the state directory (its files read back
    /// with e2fsprogs' debugfs, not tt), recorded as the first disk and replayed.
    func testRootfsFolderBecomesTheFirstDisk() throws {
        let folder = base + "/tree"
        try FileManager.default.createDirectory(atPath: folder + "/etc", withIntermediateDirectories: true)
        try "hello from the host\n".write(toFile: folder + "/hello", atomically: true, encoding: .utf8)
        try "x\n".write(toFile: folder + "/etc/x", atomically: true, encoding: .utf8)
        let s = base + "/rootfs"
        try IT.tt(["record", "--rootfs", folder, "rootfs"], state: s)
        let image = s + "/rootfs.ext4"
        let attributes = try FileManager.default.attributesOfItem(atPath: image)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual(try IT.run(["debugfs", "-R", "cat /hello", image]).out, "hello from the host\n")
        XCTAssertEqual(try IT.run(["debugfs", "-R", "cat /etc/x", image]).out, "x\n")
        let disks = try String(contentsOfFile: s + "/disks", encoding: .utf8)
        XCTAssertTrue(disks.hasPrefix("raw ") && disks.hasSuffix(" " + image + "\n"), disks)
        try IT.tt(["replay", "-p", "rootfs"], state: s)
        XCTAssertTrue(contains(try replayCommandLine(s), ["-device", "ide-hd,drive=img0"]))
        try IT.tt(["run-until", "rootfs", "fib#2"], state: s)
        try IT.tt(["replay", "-K", "rootfs"], state: s)
        let missing = try IT.tt(["record", "--rootfs", base + "/nope", "other"], state: base + "/other", expect: 66)
        XCTAssertTrue(missing.err.contains("not a directory"), missing.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/other"))
    }

    /// --disk: a raw and a qcow2 image; record and replay never write them, the replay
    /// works, and after the raw image's bytes change the replay is refused (65) naming it.
    func testDisksAreNeverWrittenAndAChangedOneIsRefused() throws {
        let raw = base + "/x.img", qcow = base + "/y.qcow2"
        XCTAssertEqual(try IT.run(["qemu-img", "create", "-q", "-f", "raw", raw, "1M"]).status, 0)
        XCTAssertEqual(try IT.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, "1M"]).status, 0)
        var pattern = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: raw))
        try h.write(contentsOf: pattern)
        try h.close()
        let rawBefore = try Data(contentsOf: URL(fileURLWithPath: raw))
        let qcowBefore = try Data(contentsOf: URL(fileURLWithPath: qcow))

        let s = base + "/disks"
        try IT.tt(["record", "--disk", raw, "--disk", qcow, "disks"], state: s)
        // The recording's overlays have the images as backing files (qemu-img's word).
        let info = try IT.run(["qemu-img", "info", "--output=json", s + "/disk0.qcow2"])
        XCTAssertTrue(info.out.contains("\"backing-filename\": \"\(raw)\""), info.out)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: raw)), rawBefore)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: qcow)), qcowBefore)

        try IT.tt(["replay", "-p", "disks"], state: s)
        let argv = try replayCommandLine(s)
        XCTAssertTrue(argv.contains { $0.hasPrefix("driver=blkreplay") }, "\(argv)")
        let first = try IT.tt(["run-until", "disks", "fib#3"], state: s).out
        // Back to the beginning (loads the snapshot on every drive) and forwards again.
        let again = try IT.tt(["run-until", "disks", "fib#1"], state: s).out
        XCTAssertFalse(first.isEmpty)
        XCTAssertFalse(again.isEmpty)
        try IT.tt(["replay", "-K", "disks"], state: s)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: raw)), rawBefore)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: qcow)), qcowBefore)

        pattern[100] ^= 0xff
        let w = try FileHandle(forWritingTo: URL(fileURLWithPath: raw))
        try w.write(contentsOf: pattern)
        try w.close()
        let changed = try IT.tt(["replay", "-p", "disks"], state: s, expect: 65)
        XCTAssertTrue(changed.err.contains(raw) && changed.err.contains("content"), changed.err)
        XCTAssertEqual(changed.err.split(separator: "\n").count, 1, changed.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/pid"))

        // The same bytes again (a new mtime): the replay runs and lands where it did.
        let r = try FileHandle(forWritingTo: URL(fileURLWithPath: raw))
        try r.write(contentsOf: rawBefore.prefix(4096))
        try r.close()
        try IT.tt(["replay", "-p", "disks"], state: s)
        XCTAssertEqual(try IT.tt(["run-until", "disks", "fib#3"], state: s).out, first)
        try IT.tt(["replay", "-K", "disks"], state: s)
    }
}
