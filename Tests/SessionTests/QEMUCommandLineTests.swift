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
        XCTAssertEqual(Array(replay.suffix(5)), ["-S", "-qmp", "unix:qmp.sock,server=on,wait=off", "-gdb", "unix:gdb.sock,server=on,wait=off"])
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

    func testForeignCommandLineIsRefused() {
        XCTAssertThrowsError(try QEMUMachine.replayArguments(fromRecord: ["qemu-system-x86_64", "-kernel", "k"])) { error in
            XCTAssertTrue(String(describing: error).contains("not a tt recording's command line"), "\(error)")
        }
    }
}
