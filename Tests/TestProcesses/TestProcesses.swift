// Running tt, QEMU, gcc and binutils from the tests, through TTSystem's Subprocess — the
// runner tt itself uses: argument vectors (posix_spawn), never a shell.

import Foundation
import SystemPackage
import TTSystem

public enum TestProcesses {
    public struct Result {
        public var status: Int32
        public var out: String
        public var err: String
    }

    /// What `wait` returns when it had to kill the child.
    public static let timedOut: Int32 = -2

    /// The build directory holding tt, bts-dump and libttplugin.so: the test bundle's
    /// directory, which is the bin path in debug and release builds alike.
    public static let buildDirectory: URL = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir
    }()

    public static var tt: String { buildDirectory.appendingPathComponent("tt").path }

    public static let packageRoot: URL = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }()

    /// A file the set-up built under guest/build/.
    public static func guest(_ file: String) -> String { packageRoot.appendingPathComponent("guest/build/\(file)").path }

    nonisolated(unsafe) private static var counter = 0

    /// The configuration the tests run programs with: this process's environment, or
    /// `environment` (the whole environment) when given; in the test run's session, so
    /// that interrupting the tests stops their children too.
    private static func configuration(_ argv: [String], environment: [String: String]?, input: String? = nil,
                                      output: Subprocess.Output, error: Subprocess.Output) -> Subprocess.Configuration {
        var c = Subprocess.Configuration(argv, environment: environment.map { .exactly($0) } ?? .inherit,
                                         output: output, error: error)
        c.input = input.map { .file(FilePath($0)) } ?? .null
        c.newSession = false
        return c
    }

    /// Start a program with stdin from /dev/null and stdout/stderr into new temporary files
    /// (read by `collect`), so that it runs on while the test does other things.
    public static func start(_ argv: [String], environment: [String: String]? = nil) throws -> (pid: pid_t, out: String, err: String) {
        counter += 1
        let out = NSTemporaryDirectory() + "tt-test-\(getpid())-\(counter).out"
        let err = NSTemporaryDirectory() + "tt-test-\(getpid())-\(counter).err"
        unlink(out)
        unlink(err)
        let process = try Subprocess.spawn(configuration(argv, environment: environment,
                                                         output: .append(FilePath(out)), error: .append(FilePath(err))))
        return (process.pid, out, err)
    }

    /// Wait for a child, killing it after `timeout` seconds (then `timedOut`).
    /// Exit status, or 128 + signal.
    public static func wait(_ pid: pid_t, timeout: TimeInterval = 120) -> Int32 {
        let process = RunningProcess(pid: pid)
        guard let status = process.wait(timeoutMS: Int(timeout * 1000)) else {
            process.terminate(gracePeriodMS: 0)
            return timedOut
        }
        return status.shellStatus
    }

    /// Wait for a started child and read what it wrote (the temporary files are removed).
    public static func collect(_ started: (pid: pid_t, out: String, err: String), timeout: TimeInterval = 120) -> Result {
        let status = wait(started.pid, timeout: timeout)
        defer { unlink(started.out); unlink(started.err) }
        func text(_ path: String) -> String {
            (try? readSmallFile(FilePath(path), limit: 1 << 30)).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        return Result(status: status, out: text(started.out), err: text(started.err))
    }

    /// Run a program to its end (stdin from the file `input`, or /dev/null), collecting its
    /// output; killed after `timeout` seconds (status `timedOut`).
    @discardableResult
    public static func run(_ argv: [String], environment: [String: String]? = nil, input: String? = nil,
                           timeout: TimeInterval = 120) throws -> Result {
        let r = try Subprocess.run(configuration(argv, environment: environment, input: input,
                                                 output: .collect(limit: 1 << 30), error: .collect(limit: 1 << 30)),
                                   timeoutMS: Int(timeout * 1000))
        return Result(status: r.timedOut ? timedOut : r.status.shellStatus,
                      out: r.standardOutputText, err: r.standardErrorText)
    }
}
