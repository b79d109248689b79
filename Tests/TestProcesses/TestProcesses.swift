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

    /// A program on a new pseudo-terminal (its stdin, stdout and stderr), as a person at a
    /// terminal runs it: the test types into `master` and reads what the program shows.
    public final class Terminal {
        public let pid: pid_t
        public let master: Int32
        /// Everything read from the terminal so far.
        public private(set) var shown: [UInt8] = []
        public var text: String { String(decoding: shown, as: UTF8.self) }

        public init(_ argv: [String]) throws {
            var m: Int32 = -1, s: Int32 = -1
            guard openpty(&m, &s, nil, nil, nil) == 0 else { throw Errno(rawValue: errno) }
            var c = Subprocess.Configuration(argv, output: .fileDescriptor(FileDescriptor(rawValue: s)),
                                             error: .fileDescriptor(FileDescriptor(rawValue: s)))
            c.input = .fileDescriptor(FileDescriptor(rawValue: s))
            defer { close(s) }
            do {
                pid = try Subprocess.spawn(c).pid
            } catch {
                close(m)
                throw error
            }
            master = m
        }

        deinit {
            RunningProcess(pid: pid).terminate()
            close(master)
        }

        /// Type `text` (a person's keys: end lines with "\r").
        public func type(_ text: String) {
            let bytes = Array(text.utf8)
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(master, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                off += n
            }
        }

        /// Read until what was shown after byte `from` contains `text`; false after `timeout`
        /// seconds or once the program closed the terminal without showing it.
        @discardableResult
        public func waitFor(_ text: String, after from: Int = 0, timeout: TimeInterval) -> Bool {
            let wanted = Array(text.utf8)
            let until = Date().addingTimeInterval(timeout)
            while true {
                if shown.count >= from + wanted.count,
                   shown[from...].firstRange(of: wanted) != nil { return true }
                guard Date() < until, read(timeoutMS: Int32(max(1, until.timeIntervalSinceNow * 1000))) else { return false }
            }
        }

        /// Read what is there within `timeoutMS`; false at the terminal's end or the time-out.
        @discardableResult
        public func read(timeoutMS: Int32) -> Bool {
            var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, timeoutMS) > 0 else { return false }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = Glibc.read(master, &buf, buf.count)
            guard n > 0 else { return false }
            shown += buf[0..<n]
            return true
        }

        /// Wait for the program's end, reading what it shows meanwhile; its exit status
        /// (128 + signal), or `timedOut` (the program is then killed).
        public func finish(timeout: TimeInterval) -> Int32 {
            let until = Date().addingTimeInterval(timeout)
            while Date() < until {
                read(timeoutMS: 50)
                if let s = RunningProcess(pid: pid).reap() {
                    while read(timeoutMS: 50) {}
                    return s.shellStatus
                }
            }
            RunningProcess(pid: pid).terminate(gracePeriodMS: 0)
            return timedOut
        }
    }
}
