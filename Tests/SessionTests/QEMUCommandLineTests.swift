import XCTest
@testable import XenTT
@testable import QEMUBackend
import SystemPackage

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

        let replay = try QEMUMachine.replayArguments(fromRecord: record)
        XCTAssertEqual(Array(replay.suffix(7)), ["-S", "-qmp", "unix:qmp.sock,server=on,wait=off", "-gdb", "unix:gdb.sock,server=on,wait=off",
                                                 "-action", "shutdown=pause"])
        let body = Array(replay.dropLast(7))
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
        for argv in hostile {
            XCTAssertThrowsError(try QEMUMachine(validatingRecorded: argv, file: "qemu.argv"), "\(argv)") { error in
                XCTAssertTrue(String(describing: error).contains("qemu.argv"), "\(error)")
                XCTAssertTrue(String(describing: error).contains("refusing to run it"), "\(error)")
            }
        }
    }

    func testForeignCommandLineIsRefused() {
        XCTAssertThrowsError(try QEMUMachine.replayArguments(fromRecord: ["qemu-system-x86_64", "-kernel", "k"])) { error in
            XCTAssertTrue(String(describing: error).contains("not a tt recording's command line"), "\(error)")
        }
    }
}
