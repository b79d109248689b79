import Foundation
import SystemPackage
import TTSystem
import TestProcesses
import XCTest

/// tt record --detach -c and tt console NAME, with the real QEMU and test guests that print
/// (and echo) on their serial port. Oracles: the files QEMU writes, QEMU's own recording log
/// (its character-device input events), the terminal's settings read with tcgetattr.
final class DetachedConsoleTests: XCTestCase {
    var base = ""

    override func setUpWithError() throws {
        base = NSTemporaryDirectory() + "tt-detached-\(getpid())-\(name.filter { $0.isLetter })"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for dir in ["det", "plain"] {
            _ = try? IT.run([IT.tt, "record", "-S", "-s", base + "/" + dir, "x"])
            _ = try? IT.run([IT.tt, "replay", "-K", "-s", base + "/" + dir, "x"])
        }
        try? FileManager.default.removeItem(atPath: base)
        super.tearDown()
    }

    func read(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The terminal's settings, to compare before and after tt console.
    func settings(_ fd: Int32) -> [UInt8] {
        var t = termios()
        XCTAssertEqual(tcgetattr(fd, &t), 0)
        return withUnsafeBytes(of: t) { Array($0) }
    }

    /// tt console on a pseudo-terminal; `then` types and waits. Returns the terminal after
    /// tt console ended (status in `status`), checking the settings came back.
    func attach(_ state: String, status expected: Int32, then: (TestProcesses.Terminal) -> Void) throws -> TestProcesses.Terminal {
        let term = try TestProcesses.Terminal([IT.tt, "console", "-s", state, "det"])
        let before = settings(term.master)
        XCTAssertTrue(term.waitFor("tt: attached to det's console", timeout: 30), term.text)
        XCTAssertNotEqual(settings(term.master), before, "the terminal is raw while attached")
        then(term)
        XCTAssertEqual(term.finish(timeout: 60), expected, term.text)
        XCTAssertEqual(settings(term.master), before, "terminal settings differ after tt console")
        return term
    }

    /// Output nobody saw is shown on attaching; keys typed through tt console are the
    /// recording's input (QEMU's log) and come back in the guest's echo; Ctrl-A d leaves the
    /// recording running, Ctrl-A x ends it complete; then tt console refuses (69).
    func testAttachDetachTypeAndStop() throws {
        let elf = try ConsoleTests.echoGuest(in: base)
        let state = base + "/det"
        let r = try IT.run([IT.tt, "record", "--detach", "-c", "-s", state, "--kernel", elf, "det"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("its console: tt console det"), r.out)
        var st = stat()
        XCTAssertEqual(lstat(state + "/attach.sock", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        // QEMU's own console socket, which the keeper holds, too.
        XCTAssertEqual(lstat(state + "/console.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertTrue(ConsoleTests.waitFor("tt-loop: alive", in: state + "/console.record"), "no output while nobody is attached")

        // First attachment: type, see the echo, detach.
        let first = try attach(state, status: 0) { term in
            let mark = term.shown.count
            term.type("#tt-input:a")
            XCTAssertTrue(term.waitFor("#tt-input:a", after: mark, timeout: 30), term.text)
            term.type("\u{01}d")
        }
        XCTAssertTrue(first.text.contains("detached from det"), first.text)
        XCTAssertNotNil(IT.pid(in: state, "record.pid"), "the recording goes on after Ctrl-A d")

        // An attachment ended by a signal (SIGTERM; SIGHUP and SIGINT take the same way) puts
        // the terminal back too, and leaves the recording running.
        _ = try attach(state, status: 128 + SIGTERM) { term in kill(term.pid, SIGTERM) }
        XCTAssertNotNil(IT.pid(in: state, "record.pid"), "the recording goes on after tt console's end")

        // Second attachment: the guest's output from the very beginning comes first (the
        // lines printed before anyone attached), then Ctrl-A x ends the recording.
        let second = try attach(state, status: 0) { term in
            XCTAssertTrue(term.waitFor("#tt-input:a", timeout: 30), term.text)
            term.type("\u{01}x")
        }
        XCTAssertTrue(second.text.contains("stopped by Ctrl-A x"), second.text)
        let record = String(decoding: try read(state + "/console.record"), as: UTF8.self)
        let shown = second.text.replacingOccurrences(of: "\r\n", with: "\n")
        let guestPart = try XCTUnwrap(shown.components(separatedBy: "Ctrl-A h helps\n").dropFirst().first)
        XCTAssertTrue(record.hasPrefix("tt-loop: alive\n"), record)
        XCTAssertTrue(guestPart.hasPrefix(record), "shown: \(guestPart)\nrecord: \(record)")
        XCTAssertEqual(ConsoleTests.charInputEvents(try read(state + "/recording.rr")), Array("#tt-input:a".utf8))
        XCTAssertFalse(FileManager.default.fileExists(atPath: state + "/recording.incomplete"))
        XCTAssertTrue(waitGone(state + "/attach.sock"), "the attach socket outlived the recording")

        let after = try IT.run([IT.tt, "console", "-s", state, "det"])
        XCTAssertEqual(after.status, 69, after.err)
        XCTAssertTrue(after.err.contains("no recording in progress"), after.err)
        XCTAssertEqual(after.err.split(separator: "\n").count, 1, after.err)
    }

    /// A detached interactive recording nobody attached to replays to the same console bytes;
    /// a recording with no console to attach to and a planted attach.sock are refused.
    func testUnattendedRecordingReplaysIdenticallyAndRefusals() throws {
        let elf = try ConsoleTests.loopGuest(in: base)
        let plain = base + "/plain"
        XCTAssertEqual(try IT.run([IT.tt, "record", "--detach", "-s", plain, "--kernel", elf, "det"]).status, 0)
        let noConsole = try IT.run([IT.tt, "console", "-s", plain, "det"])
        XCTAssertEqual(noConsole.status, 69, noConsole.err)
        XCTAssertTrue(noConsole.err.contains("no console to attach to"), noConsole.err)
        _ = try IT.run([IT.tt, "record", "-S", "-s", plain, "det"])

        let state = base + "/det"
        XCTAssertEqual(try IT.run([IT.tt, "record", "--detach", "-c", "-s", state, "--kernel", elf, "det"]).status, 0)
        XCTAssertTrue(ConsoleTests.waitFor("tt-loop: alive\ntt-loop: alive\ntt-loop: alive", in: state + "/console.record"))
        // Not a socket of tt's: a link to one is refused, nothing connected.
        XCTAssertEqual(rename(state + "/attach.sock", base + "/moved.sock"), 0)
        XCTAssertEqual(symlink(base + "/moved.sock", state + "/attach.sock"), 0)
        let planted = try IT.run([IT.tt, "console", "-s", state, "det"])
        XCTAssertEqual(planted.status, 66, planted.err)
        XCTAssertTrue(planted.err.contains("not a socket of this user"), planted.err)
        XCTAssertEqual(try IT.run([IT.tt, "record", "-S", "-s", state, "det"]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: state + "/recording.incomplete"))
        try IT.tt(["replay", "-c", "det"], state: state)
        XCTAssertEqual(try read(state + "/console.replay"), try read(state + "/console.record"))
    }

    func waitGone(_ path: String, timeout: TimeInterval = 30) -> Bool {
        let until = Date().addingTimeInterval(timeout)
        var st = stat()
        while lstat(path, &st) == 0 {
            guard Date() < until else { return false }
            usleep(50_000)
        }
        return true
    }
}
