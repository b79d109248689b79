import SystemPackage
import TTSystem
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The process runner against /bin/sh one-liners whose behaviour the test states.
final class SubprocessTests: XCTestCase {
    private func sh(_ script: String) -> Subprocess.Configuration {
        Subprocess.Configuration(executable: "/bin/sh", arguments: ["-c", script])
    }

    func testCollectsBothStreamsAndTheExitCode() throws {
        var c = sh("printf out; printf err >&2; exit 3")
        c.output = .collect(limit: 100)
        c.error = .collect(limit: 100)
        let r = try Subprocess.run(c)
        XCTAssertEqual(r.status, .exited(3))
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.standardOutputText, "out")
        XCTAssertEqual(r.standardErrorText, "err")
    }

    /// A child given a CPU runs on that one only, and so do the processes and threads it
    /// starts (the kernel's Cpus_allowed_list, read by a grandchild, is the oracle); with
    /// and without a death signal (the two ways tt_spawn starts a program).
    func testCPUPinsTheChildAndWhatItStarts() throws {
        let allowed = CPUPlacement.allowed
        XCTAssertFalse(allowed.isEmpty, "sched_getaffinity gave no CPU")
        guard let cpu = allowed.last else { return }
        for death in [nil, SIGKILL] as [Int32?] {
            var c = sh("grep Cpus_allowed_list /proc/self/status; sh -c 'grep Cpus_allowed_list /proc/self/status'")
            c.cpu = cpu
            c.deathSignal = death
            c.output = .collect(limit: 1000)
            let r = try Subprocess.run(c)
            XCTAssertEqual(r.status, .exited(0))
            XCTAssertEqual(r.standardOutputText, "Cpus_allowed_list:\t\(cpu)\n" + "Cpus_allowed_list:\t\(cpu)\n")
        }
        // Replays spread over the allowed CPUs; plan segments take them in order.
        XCTAssertEqual(Set((0..<allowed.count).compactMap { CPUPlacement.cpu(forReplay: $0) }), Set(allowed))
        XCTAssertEqual(CPUPlacement.cpu(forSegment: allowed.count), allowed[0])
        var bad = sh("true")
        bad.cpu = 1 << 20
        XCTAssertThrowsError(try Subprocess.run(bad))
    }

    /// More output on both pipes than a pipe buffer holds: read as it comes, no deadlock;
    /// the limit keeps the first bytes.
    func testLargeOutputOnBothPipesAndTheLimit() throws {
        var c = sh("head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; printf end")
        c.output = .collect(limit: 1 << 20)
        c.error = .collect(limit: 1000)
        let r = try Subprocess.run(c, timeoutMS: 60_000)
        XCTAssertEqual(r.status, .exited(0))
        XCTAssertEqual(r.standardOutput.count, 300_003)
        XCTAssertEqual(r.standardOutputText.suffix(3), "end")
        XCTAssertEqual(r.standardError.count, 1000)
    }

    func testSignalIsTypedAndShellStatusIs128Plus() throws {
        let r = try Subprocess.run(sh("kill -9 $$"))
        XCTAssertEqual(r.status, .signaled(SIGKILL))
        XCTAssertEqual(r.status.shellStatus, 137)
    }

    func testEnvironmentWorkingDirectoryAndAppendedOutput() throws {
        let dir = FilePath("/tmp/tt-subprocess-\(getpid())")
        mkdir(dir.string, 0o700)
        defer { unlink(dir.appending("log").string); rmdir(dir.string) }
        var c = sh("printf \"$TT_SUBPROCESS_TEST\"; pwd >&2")
        c.environment = .inheritAdding(["TT_SUBPROCESS_TEST": "added"])
        c.workingDirectory = dir
        c.output = .append(dir.appending("log"))
        c.error = .sameAsOutput
        XCTAssertEqual(try Subprocess.run(c).status, .exited(0))
        XCTAssertEqual(try Subprocess.run(c).status, .exited(0))
        let log = try XCTUnwrap(readSmallFile(dir.appending("log"), limit: 1000))
        XCTAssertEqual(String(decoding: log, as: UTF8.self), "added\(dir)\nadded\(dir)\n")

        c.environment = .exactly(["ONLY": "this"])
        c.arguments = ["-c", "printf \"$ONLY${HOME:-unset}\""]
        c.output = .collect(limit: 100)
        XCTAssertEqual(try Subprocess.run(c).standardOutputText, "thisunset")
    }

    /// A child that ignores SIGTERM is killed after the grace period; one that does not
    /// ends with SIGTERM.
    func testTerminateIsGracefulThenKills() throws {
        let ready = FilePath("/tmp/tt-subprocess-ready-\(getpid())")
        unlink(ready.string)
        defer { unlink(ready.string) }
        let stubborn = try Subprocess.spawn(sh("trap '' TERM; : > \(ready); while :; do sleep 1; done"))
        // Only once the trap is set does the shell ignore SIGTERM.
        let deadline = Date().addingTimeInterval(10)
        while access(ready.string, F_OK) != 0 && Date() < deadline { usleep(5_000) }
        XCTAssertTrue(stubborn.isAlive)
        let start = Date()
        XCTAssertEqual(stubborn.terminate(gracePeriodMS: 300), .signaled(SIGKILL))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.3)
        XCTAssertFalse(stubborn.isAlive)

        let polite = try Subprocess.spawn(Subprocess.Configuration(executable: "sleep", arguments: ["60"]))
        // The kernel sets the new command line just after exec returns control to us.
        var commandLine = polite.commandLine
        for _ in 0..<200 where commandLine == [] { usleep(5_000); commandLine = polite.commandLine }
        XCTAssertEqual(commandLine, ["sleep", "60"])
        XCTAssertEqual(polite.terminate(gracePeriodMS: 5000), .signaled(SIGTERM))
    }

    func testTimeoutTearsDownAndSaysSo() throws {
        let r = try Subprocess.run(Subprocess.Configuration(executable: "sleep", arguments: ["60"]), timeoutMS: 200)
        XCTAssertTrue(r.timedOut)
        XCTAssertEqual(r.status, .signaled(SIGTERM))
    }

    func testMissingProgramIsASpawnError() {
        XCTAssertThrowsError(try Subprocess.run(Subprocess.Configuration(executable: "/nonexistent/tt-no-such-program"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot start /nonexistent/tt-no-such-program:"), "\(error)")
        }
    }
}
