// The bundled guests under QEMU record/replay with the flags tt uses for snapshots
// (`rrsnapshot=init` with a qcow2 snapshot drive, `-global apic-common.vapic=off`): a replay
// reproduces its recording byte for byte, and two recordings differ (RTC, TSC, tick counts).

import Foundation
import XCTest

final class BundledGuestTests: XCTestCase {
    func record(_ guest: Guest, _ tag: String, mode: String) throws -> (serial: String, status: Int32) {
        let dir = Harness.scratch.path
        let image = "\(dir)/\(guest.name)-\(tag).qcow2"
        if mode == "record" {
            try? FileManager.default.removeItem(atPath: image)
            let made = try Harness.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"])
            XCTAssertEqual(made.status, 0, made.stderr)
        }
        let serial = "\(dir)/\(guest.name)-\(tag)-\(mode).serial"
        let argv = guest.qemuArguments(serial: serial, rr: mode, rrfile: "\(dir)/\(guest.name)-\(tag).rr")
            .map { $0.hasPrefix("shift=auto,") ? $0 + ",rrsnapshot=init" : $0 }
            + ["-global", "apic-common.vapic=off", "-drive", "file=\(image),if=none,id=snapdisk"]
        let r = try Harness.run(argv, timeout: 60)
        return (try String(contentsOfFile: serial, encoding: .utf8), r.status)
    }

    func checkReplayIsIdenticalAndRecordingsDiffer(_ guest: Guest) throws {
        try Harness.buildGuests()
        let first = try record(guest, "a", mode: "record")
        let second = try record(guest, "b", mode: "record")
        let replay = try record(guest, "a", mode: "replay")
        XCTAssertEqual(first.status, Guest.successStatus)
        XCTAssertEqual(second.status, Guest.successStatus)
        // QEMU 10 replays the recorded shutdown event from its log on the main loop, racing
        // the vCPU's isa-debug-exit write that sets the exit code: the replay exits with the
        // guest's code or with 0 (measured: 0 in 3 of 6 replays of one recording). What the
        // replay did is checked below, byte for byte.
        XCTAssertTrue([Guest.successStatus, 0].contains(replay.status), "replay exit status \(replay.status)")
        XCTAssertEqual(replay.serial, first.serial)
        XCTAssertNotEqual(first.serial, second.serial)
        XCTAssertTrue(first.serial.hasPrefix("tt-guest \(guest.name == "guest64" ? 64 : 32)-bit: start\n"))
        XCTAssertTrue(first.serial.hasSuffix("tt-guest: done\n"))
    }

    func testReplayIsIdenticalAndRecordingsDiffer32() throws { try checkReplayIsIdenticalAndRecordingsDiffer(.guest32) }
    func testReplayIsIdenticalAndRecordingsDiffer64() throws { try checkReplayIsIdenticalAndRecordingsDiffer(.guest64) }

    /// Without the isa-debug-exit device the guest says so and resets; -no-reboot ends QEMU.
    func testWithoutTheExitDeviceTheGuestResets() throws {
        try Harness.buildGuests()
        let serial = Harness.scratch.appendingPathComponent("noexit.serial").path
        let r = try Harness.run(["qemu-system-i386", "-display", "none", "-no-reboot", "-net", "none",
                                 "-monitor", "none", "-serial", "file:\(serial)",
                                 "-kernel", Guest.guest32.kernel], timeout: 60)
        XCTAssertEqual(r.status, 0)
        let out = try String(contentsOfFile: serial, encoding: .utf8)
        XCTAssertTrue(out.hasSuffix("tt-guest: isa-debug-exit device missing; resetting\n"), out)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(at: Harness.scratch)
        super.tearDown()
    }
}
