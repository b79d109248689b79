import XCTest
@testable import XenTT
@testable import QEMUBackend
import SystemPackage
import Foundation

final class QEMUCommandLineTests: XCTestCase {
    func testReplayArgumentsChangeOnlyHostPlumbing() throws {
        let machine = QEMUMachine(kernel: "/k", initrd: "/i", append: "console=ttyS0 quiet", memoryMB: 128, arch: .x86_64)
        let record = machine.recordArguments(plugin: "/lib/libttplugin.so")
        XCTAssertEqual(record.first, "qemu-system-x86_64")
        XCTAssertEqual(record[record.firstIndex(of: "-append")! + 1], "console=ttyS0 quiet")
        XCTAssertEqual(record[record.firstIndex(of: "-m")! + 1], "128")
        XCTAssertTrue(record.contains("shift=auto,rr=record,rrfile=recording.rr,rrsnapshot=init"))
        XCTAssertTrue(record.contains("apic-common.vapic=off"))
        XCTAssertTrue(record.contains("none"), "-net none and friends")

        let replay = try QEMUMachine(validatingRecorded: record, file: "qemu.argv").replayArguments(plugin: "/lib/libttplugin.so", overIndex: false)
        XCTAssertEqual(Array(replay.suffix(5)), ["-S", "-gdb", "unix:gdb.sock,server=on,wait=off",
                                                 "-action", "shutdown=pause"])
        let body = Array(replay.dropLast(5))
        XCTAssertEqual(body.count, record.count)
        var changed: [String: String] = [:]
        for (r, p) in zip(record, body) where r != p { changed[r] = p }
        XCTAssertEqual(changed, [
            "shift=auto,rr=record,rrfile=recording.rr,rrsnapshot=init": "shift=auto,rr=replay,rrfile=recording.rr,rrsnapshot=init",
            "file=snapshot.qcow2,if=none,id=snapdisk": "file=replay.qcow2,if=none,id=snapdisk",
            "file:console.record": "file:console.replay",
            "/lib/libttplugin.so,shm=record.shm": "/lib/libttplugin.so,shm=replay.shm",
        ])
    }

    /// A stored qemu.argv is accepted only as tt generates it: the program, any option
    /// added, replaced or removed, is refused (tt runs it as root).
    func testStoredCommandLineIsValidatedAgainstWhatTTGenerates() throws {
        let machine = QEMUMachine(kernel: "kernel", initrd: "initrd", append: "console=ttyS0 quiet", memoryMB: 128)
        let record = machine.recordArguments(plugin: "/old/libttplugin.so")
        let parsed = try QEMUMachine(validatingRecorded: record, file: "qemu.argv")
        XCTAssertEqual(parsed.recordArguments(plugin: "/old/libttplugin.so"), record)
        XCTAssertEqual(parsed.recordArguments(plugin: "/new/libttplugin.so").first, QEMUMachine.binary)
        var hostile: [[String]] = []
        var shell = record; shell[0] = "sh"; hostile.append(shell)
        var extra = record; extra.insert(contentsOf: ["-device", "loader,file=/etc/shadow"], at: 3); hostile.append(extra)
        hostile.append(Array(record.dropLast()))
        hostile.append(record + ["-S"])
        var memory = record; memory[memory.firstIndex(of: "-m")! + 1] = "-x"; hostile.append(memory)
        var plugin = record; plugin[plugin.count - 1] = "/tmp/evil.so"; hostile.append(plugin)
        var q35 = record; q35[q35.firstIndex(of: "-machine")! + 1] = "q35"; hostile.append(q35)
        var hpetOn = record; hpetOn[hpetOn.firstIndex(of: "-machine")! + 1] = "pc,hpet=on"; hostile.append(hpetOn)
        for argv in hostile {
            XCTAssertThrowsError(try QEMUMachine(validatingRecorded: argv, file: "qemu.argv"), "\(argv)") { error in
                XCTAssertTrue(String(describing: error).contains("qemu.argv"), "\(error)")
                XCTAssertTrue(String(describing: error).contains("refusing to run it"), "\(error)")
            }
        }
    }

    /// New recordings run the PC without its HPET (QEMU 10 cannot resume snapshots taken once
    /// a guest programmed it); a recording made with the HPET is replayed with it.
    func testMachineIsThePCWithoutHPETAndOldRecordingsKeepTheirs() throws {
        let record = QEMUMachine(kernel: "kernel", memoryMB: 64).recordArguments(plugin: "/p.so")
        XCTAssertEqual(record[record.firstIndex(of: "-machine")! + 1], "pc,hpet=off")
        var old = record; old[old.firstIndex(of: "-machine")! + 1] = "pc"
        let replay = try QEMUMachine(validatingRecorded: old, file: "qemu.argv").replayArguments(plugin: "/p.so", overIndex: false)
        XCTAssertEqual(replay[replay.firstIndex(of: "-machine")! + 1], "pc")
    }

    func testForeignCommandLineIsRefused() {
        XCTAssertThrowsError(try QEMUMachine(validatingRecorded: ["qemu-system-x86_64", "-kernel", "k"], file: "qemu.argv")) { error in
            XCTAssertTrue(String(describing: error).contains("not a tt recording's command line"), "\(error)")
        }
    }

    /// --qemu-arg: what would break record/replay or tt's control of QEMU is refused, in
    /// every spelling QEMU takes; anything else passes.
    func testQEMUArgumentRefusals() {
        let refused = ["-icount", "--icount", "-icount=shift=0", "-plugin", "--plugin=x.so", "-gdb", "-s", "-qmp", "--qmp",
                       "-chardev", "-serial", "-smp", "--smp=2", "-accel", "-enable-kvm", "--enable-kvm", "-snapshot",
                       "-loadvm", "-S", "-daemonize", "-monitor", "-kernel", "-initrd", "-append", "-drive", "--blockdev",
                       "-hda", "-cdrom", "-machine", "-M", "-cpu", "-m", "-netdev", "-no-shutdown", "-set", "apic-common.vapic=on",
                       "file=snapshot.qcow2,if=none,id=snapdisk", "ide-hd,drive=snapdisk", "driver=blkreplay", "a\nb", ""]
        for arg in refused {
            XCTAssertNotNil(QEMUMachine.refusal(ofQEMUArgument: arg), "'\(arg)' must be refused")
        }
        for arg in ["-name", "foo", "--name=foo", "-rtc", "base=2020-01-01T00:00:00", "-sandbox", "on", "-Sx", "-device", "pcspk",
                    "-global", "isa-fdc.driveA=", "-L", "/usr/share/qemu"] {
            XCTAssertNil(QEMUMachine.refusal(ofQEMUArgument: arg), "'\(arg)' must be passed")
        }
        XCTAssertNil(QEMUMachine.refusal(ofSMP: 1))
        XCTAssertTrue(QEMUMachine.refusal(ofSMP: 2)?.contains("SMP") == true)
        XCTAssertNotNil(QEMUMachine.refusal(ofSMP: 0))
        XCTAssertNil(QEMUMachine.refusal(ofCPU: "max"))
        XCTAssertNil(QEMUMachine.refusal(ofCPU: "Nehalem,+avx"))
        XCTAssertNotNil(QEMUMachine.refusal(ofCPU: "-device"))
        XCTAssertNotNil(QEMUMachine.refusal(ofCPU: ""))
    }

    /// A recording with a CPU model, disks and extra arguments validates back to the same
    /// machine and argument vector; its replay renames only the host plumbing (the disks'
    /// overlays among it); anything tt would not generate around those options is refused.
    func testVMOptionsRoundTripAndValidation() throws {
        let machine = QEMUMachine(kernel: "kernel", append: "console=ttyS0", memoryMB: 96, cpu: "max",
                                  diskCount: 2, extraArguments: ["-name", "foo", "-rtc", "base=2020-01-01T00:00:00"])
        let record = machine.recordArguments(plugin: "/p/libttplugin.so")
        XCTAssertEqual(record[record.firstIndex(of: "-cpu")! + 1], "max")
        XCTAssertEqual(Array(record.suffix(6)), ["-name", "foo", "-rtc", "base=2020-01-01T00:00:00", "-plugin", "/p/libttplugin.so,shm=record.shm"])
        for n in 0..<2 {
            XCTAssertTrue(record.contains("file=disk\(n).qcow2,if=none,id=img\(n)-orig"))
            XCTAssertTrue(record.contains("driver=blkreplay,if=none,image=img\(n)-orig,id=img\(n)"))
            XCTAssertTrue(record.contains("ide-hd,drive=img\(n)"))
        }
        let parsed = try QEMUMachine(validatingRecorded: record, file: "qemu.argv")
        XCTAssertEqual(parsed.cpu, "max")
        XCTAssertEqual(parsed.diskCount, 2)
        XCTAssertEqual(parsed.extraArguments, ["-name", "foo", "-rtc", "base=2020-01-01T00:00:00"])
        XCTAssertEqual(parsed.recordArguments(plugin: "/p/libttplugin.so"), record)

        let replay = parsed.replayArguments(plugin: "/p/libttplugin.so", overIndex: false)
        let body = Array(replay.dropLast(5))
        XCTAssertEqual(body.count, record.count)
        var changed: [String: String] = [:]
        for (r, p) in zip(record, body) where r != p { changed[r] = p }
        XCTAssertEqual(changed, [
            "shift=auto,rr=record,rrfile=recording.rr,rrsnapshot=init": "shift=auto,rr=replay,rrfile=recording.rr,rrsnapshot=init",
            "file=snapshot.qcow2,if=none,id=snapdisk": "file=replay.qcow2,if=none,id=snapdisk",
            "file=disk0.qcow2,if=none,id=img0-orig": "file=replay-disk0.qcow2,if=none,id=img0-orig",
            "file=disk1.qcow2,if=none,id=img1-orig": "file=replay-disk1.qcow2,if=none,id=img1-orig",
            "file:console.record": "file:console.replay",
            "/p/libttplugin.so,shm=record.shm": "/p/libttplugin.so,shm=replay.shm",
        ])

        // Booting from the checkpoint index: each image is the index's, read through the
        // replay's copy-on-write layer (an inline child, no drive of its own).
        let layered = Array(parsed.replayArguments(plugin: "/p/libttplugin.so", overIndex: true).dropLast(5))
        XCTAssertEqual(layered.count, record.count)
        var layers: [String: String] = [:]
        for (r, p) in zip(record, layered) where r != p && r.hasPrefix("file=") { layers[r] = p }
        func layer(_ file: String) -> String { "driver=qcow2,file.driver=qcow2,file.file.driver=file,file.file.filename=\(file)" }
        XCTAssertEqual(layers, [
            "file=snapshot.qcow2,if=none,id=snapdisk": layer("replay.qcow2") + ",if=none,id=snapdisk",
            "file=disk0.qcow2,if=none,id=img0-orig": layer("replay-disk0.qcow2") + ",if=none,id=img0-orig",
            "file=disk1.qcow2,if=none,id=img1-orig": layer("replay-disk1.qcow2") + ",if=none,id=img1-orig",
        ])

        let plugin = record.count - 2
        var hostile: [[String]] = []
        var icount = record; icount.insert(contentsOf: ["-icount", "shift=0"], at: plugin); hostile.append(icount)
        var drive = record; drive.insert(contentsOf: ["-drive", "file=/dev/sda"], at: plugin); hostile.append(drive)
        var paused = record; paused.insert("-S", at: plugin); hostile.append(paused)
        var cpu = record; cpu[cpu.firstIndex(of: "-cpu")! + 1] = "-device"; hostile.append(cpu)
        var overlay = record; overlay[overlay.firstIndex(of: "file=disk1.qcow2,if=none,id=img1-orig")!] = "file=/etc/shadow,if=none,id=img1-orig"
        hostile.append(overlay)
        var raw = record; raw[raw.firstIndex(of: "driver=blkreplay,if=none,image=img0-orig,id=img0")!] = "file=x.img,if=none,id=img0"
        hostile.append(raw)
        var smp = record; smp[smp.firstIndex(of: "-smp")! + 1] = "2"; hostile.append(smp)
        // Too many disks: more than tt records.
        hostile.append(QEMUMachine(kernel: "kernel", diskCount: 5).recordArguments(plugin: "/p/libttplugin.so"))
        for argv in hostile {
            XCTAssertThrowsError(try QEMUMachine(validatingRecorded: argv, file: "qemu.argv"), "\(argv)") { error in
                XCTAssertTrue(String(describing: error).contains("refusing to run it"), "\(error)")
            }
        }
    }

    /// The disk identity line survives the state file, and a change in the bytes (not a
    /// new mtime alone) is what a replay refuses.
    func testDiskIdentity() throws {
        let dir = FilePath(NSTemporaryDirectory()).appending("tt-disk-\(getpid())")
        try? FileManager.default.removeItem(atPath: dir.string)
        try FileManager.default.createDirectory(atPath: dir.string, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir.string) }
        let image = dir.appending("my disk.img")
        XCTAssertTrue(FileManager.default.createFile(atPath: image.string, contents: Data(repeating: 0x5a, count: 4096)))
        let before = try DiskImage.inspect(image)
        XCTAssertEqual(before.format, "raw")
        XCTAssertEqual(before.size, 4096)
        // sha256 of 4096 bytes 0x5a, computed independently (python3 hashlib).
        XCTAssertEqual(before.sha256, "f302957da5220938a7e3e51a8718c79b9e00dc13ab2119e8cfc978f041720382")
        XCTAssertEqual(DiskImage(line: Substring(before.line)), before)
        XCTAssertNil(DiskImage(line: "raw 1 2.3 abc relative/path"))

        let touched = DiskImage(path: image, format: "raw", size: 4096, mtime: (1, 0), sha256: before.sha256)
        XCTAssertNil(before.change(to: touched), "a new mtime alone is not a change")
        var bytes = Data(repeating: 0x5a, count: 4096); bytes[100] = 0
        XCTAssertTrue(FileManager.default.createFile(atPath: image.string, contents: bytes))
        let after = try DiskImage.inspect(image)
        XCTAssertTrue(before.change(to: after)?.contains("content differs") == true, "\(String(describing: before.change(to: after)))")
        XCTAssertThrowsError(try DiskImage.inspect(dir)) // a directory is no image
    }

    /// tt record -c: the serial port is a socket chardev in the recording and the same
    /// chardev, as a file, in the replay; nothing else differs from the file console's.
    func testInteractiveConsoleCommandLines() throws {
        let plain = QEMUMachine(kernel: "kernel", memoryMB: 64).recordArguments(plugin: "/p.so")
        let machine = QEMUMachine(kernel: "kernel", memoryMB: 64, interactiveConsole: true)
        let record = machine.recordArguments(plugin: "/p.so")
        let i = try XCTUnwrap(record.firstIndex(of: "-chardev"))
        XCTAssertEqual(Array(record[i..<i + 4]),
                       ["-chardev", "socket,id=console,path=console.sock,server=on,wait=on", "-serial", "chardev:console"])
        XCTAssertFalse(record.contains("file:console.record"))
        var withoutConsole = record; withoutConsole.removeSubrange(i..<i + 4)
        var plainWithout = plain; let j = try XCTUnwrap(plain.firstIndex(of: "-serial")); plainWithout.removeSubrange(j..<j + 2)
        XCTAssertEqual(withoutConsole, plainWithout)

        let parsed = try QEMUMachine(validatingRecorded: record, file: "qemu.argv")
        XCTAssertTrue(parsed.interactiveConsole)
        XCTAssertFalse(try QEMUMachine(validatingRecorded: plain, file: "qemu.argv").interactiveConsole)
        // Another chardev (a different socket, a host device) is refused.
        var other = record; other[i + 1] = "socket,id=console,path=/tmp/x.sock,server=on,wait=on"
        XCTAssertThrowsError(try QEMUMachine(validatingRecorded: other, file: "qemu.argv"))
        var serialDevice = record; serialDevice[i + 1] = "serial,id=console,path=/dev/ttyS0"
        XCTAssertThrowsError(try QEMUMachine(validatingRecorded: serialDevice, file: "qemu.argv"))

        let replay = try QEMUMachine(validatingRecorded: record, file: "qemu.argv").replayArguments(plugin: "/p.so", overIndex: false)
        var changed: [String: String] = [:]
        for (r, p) in zip(record, replay) where r != p { changed[r] = p }
        XCTAssertEqual(changed, [
            "shift=auto,rr=record,rrfile=recording.rr,rrsnapshot=init": "shift=auto,rr=replay,rrfile=recording.rr,rrsnapshot=init",
            "file=snapshot.qcow2,if=none,id=snapdisk": "file=replay.qcow2,if=none,id=snapdisk",
            "socket,id=console,path=console.sock,server=on,wait=on": "file,id=console,path=console.replay",
            "/p.so,shm=record.shm": "/p.so,shm=replay.shm",
        ])
        XCTAssertEqual(replay[replay.firstIndex(of: "-serial")! + 1], "chardev:console")
    }

    /// tt record --net: the user-mode network, a virtio-net NIC and the replay filter in
    /// place of -net none; the same in the replay; options that run or serve host programs
    /// and files refused, on the command line and in a stored qemu.argv.
    func testNetworkCommandLines() throws {
        let spec = "user,hostfwd=tcp:127.0.0.1:2222-:22"
        let record = QEMUMachine(kernel: "kernel", memoryMB: 64, network: spec).recordArguments(plugin: "/p.so")
        let i = try XCTUnwrap(record.firstIndex(of: "-netdev"))
        XCTAssertEqual(Array(record[i..<i + 6]), ["-netdev", spec + ",id=net0", "-device", "virtio-net-pci,netdev=net0",
                                                  "-object", "filter-replay,id=netreplay,netdev=net0"])
        XCTAssertFalse(record.contains("-net"))
        let parsed = try QEMUMachine(validatingRecorded: record, file: "qemu.argv")
        XCTAssertEqual(parsed.network, spec)
        XCTAssertEqual(parsed.replayArguments(plugin: "/p.so", overIndex: false)[i..<i + 6], record[i..<i + 6])
        XCTAssertNil(try QEMUMachine(validatingRecorded: QEMUMachine(kernel: "kernel").recordArguments(plugin: "/p.so"),
                                     file: "qemu.argv").network)

        XCTAssertNil(QEMUMachine.refusal(ofNetwork: "user"))
        XCTAssertNil(QEMUMachine.refusal(ofNetwork: "user,hostfwd=udp::5353-:53,restrict=on"))
        for bad in ["tap,ifname=tap0", "user,guestfwd=tcp:10.0.2.100:1234-cmd:/bin/sh", "user,smb=/root", "user,tftp=/etc",
                    "user,bootfile=x", "user,id=x", "user,hostfwd", "user,,", "user,hostfwd=tcp::1-:2,,x", "bridge"] {
            XCTAssertNotNil(QEMUMachine.refusal(ofNetwork: bad), bad)
        }
        // A stored vector with a refused network is not run.
        var smb = record; smb[i + 1] = "user,smb=/root,id=net0"
        XCTAssertThrowsError(try QEMUMachine(validatingRecorded: smb, file: "qemu.argv")) { XCTAssertTrue("\($0)".contains("smb"), "\($0)") }
        // --qemu-arg cannot add another network.
        XCTAssertNotNil(QEMUMachine.refusal(ofQEMUArgument: "-netdev"))
    }
}

/// The escape sequences of tt record -c, against what they must mean (QEMU's Ctrl-A keys).
final class ConsoleEscapeTests: XCTestCase {
    typealias A = ConsoleEscape.Action

    func testPlainBytesPassThrough() {
        var e = ConsoleEscape()
        XCTAssertEqual(e.feed(Array("ls -l\r".utf8)), [.send(Array("ls -l\r".utf8))])
        XCTAssertEqual(e.feed([0x03, 0x1b, 0x7f]), [.send([0x03, 0x1b, 0x7f])], "Ctrl-C, ESC, DEL go to the guest")
        XCTAssertEqual(e.feed([]), [])
    }

    func testCtrlAX() {
        var e = ConsoleEscape()
        XCTAssertEqual(e.feed([0x61, 0x01, 0x78, 0x62]), [.send([0x61]), .stop, .send([0x62])])
        XCTAssertFalse(e.pendingEscape)
    }

    func testCtrlACtrlASendsOneCtrlA() {
        var e = ConsoleEscape()
        XCTAssertEqual(e.feed([0x01, 0x01]), [.send([0x01])])
        XCTAssertEqual(e.feed([0x01, 0x01, 0x01, 0x01, 0x7a]), [.send([0x01, 0x01, 0x7a])])
        XCTAssertEqual(e.feed([0x01, 0x01, 0x78]), [.send([0x01, 0x78])], "an escaped Ctrl-A does not start a new escape")
    }

    func testHelpAndUnknownKeys() {
        var e = ConsoleEscape()
        XCTAssertEqual(e.feed([0x01, 0x68]), [.help])
        XCTAssertEqual(e.feed([0x01, 0x3f]), [.help])
        XCTAssertEqual(e.feed([0x61, 0x01, 0x71, 0x62]), [.send([0x61, 0x62])], "Ctrl-A q: both dropped")
        XCTAssertEqual(e.feed([0x01, 0x58]), [], "X is not x")
    }

    /// Ctrl-A d detaches in tt console only; in tt record -c there is nothing to detach
    /// from, so it is an unknown key there (both bytes dropped).
    func testCtrlADDetachesOnlyWhenAttached() {
        var attached = ConsoleEscape(detaches: true)
        XCTAssertEqual(attached.feed([0x61, 0x01, 0x64, 0x62]), [.send([0x61]), .detach, .send([0x62])])
        XCTAssertEqual(attached.feed([0x01, 0x01, 0x64]), [.send([0x01, 0x64])], "an escaped Ctrl-A then d is two bytes")
        var recording = ConsoleEscape()
        XCTAssertEqual(recording.feed([0x61, 0x01, 0x64, 0x62]), [.send([0x61, 0x62])])
    }

    func testSequencesSplitAcrossReads() {
        var e = ConsoleEscape()
        XCTAssertEqual(e.feed([0x61, 0x01]), [.send([0x61])])
        XCTAssertTrue(e.pendingEscape)
        XCTAssertEqual(e.feed([0x78]), [.stop])
        XCTAssertEqual(e.feed([0x01]), [])
        XCTAssertEqual(e.feed([0x01]), [.send([0x01])])
        XCTAssertEqual(e.feed([0x01]), [])
        XCTAssertEqual(e.feed([0x68, 0x62]), [.help, .send([0x62])])
        // Every split of one stream gives the same actions, merged, as the whole stream.
        let stream: [UInt8] = [0x61, 0x01, 0x01, 0x62, 0x01, 0x68, 0x63, 0x01, 0x78, 0x64]
        var whole = ConsoleEscape()
        let expected: [A] = [.send([0x61, 0x01, 0x62]), .help, .send([0x63]), .stop, .send([0x64])]
        XCTAssertEqual(whole.feed(stream), expected)
        for cut in 0...stream.count {
            var split = ConsoleEscape()
            let actions = split.feed(stream[..<cut]) + split.feed(stream[cut...])
            XCTAssertEqual(Self.merged(actions), expected, "cut at \(cut)")
        }
    }

    static func merged(_ actions: [A]) -> [A] {
        var out: [A] = []
        for a in actions {
            if case .send(let b) = a, case .send(let prev)? = out.last { out[out.count - 1] = .send(prev + b) } else { out.append(a) }
        }
        return out
    }
}
