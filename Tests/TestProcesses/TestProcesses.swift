// Running tt, QEMU and binutils from the integration tests: programs are spawned with
// argument vectors (posix_spawn), never through a shell; their output goes to temporary
// files (reading two pipes in turn can deadlock a chatty child).

import Foundation

public enum TestProcesses {
    public struct Result {
        public var status: Int32
        public var out: String
        public var err: String
    }

    public struct SpawnFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// What `wait` returns when it had to kill the child.
    public static let timedOut: Int32 = -2

    /// The build directory holding tt and libttplugin.so (next to the test bundle).
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

    /// Start a program with stdin from /dev/null and stdout/stderr into new temporary files,
    /// in this process's environment or in `environment` (the whole environment) when given.
    public static func start(_ argv: [String], environment: [String: String]? = nil) throws -> (pid: pid_t, out: String, err: String) {
        counter += 1
        let out = NSTemporaryDirectory() + "tt-test-\(getpid())-\(counter).out"
        let err = NSTemporaryDirectory() + "tt-test-\(getpid())-\(counter).err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var cenv: [UnsafeMutablePointer<CChar>?] = (environment ?? [:]).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in cenv { free(p) } }
        var pid: pid_t = 0
        let rc = environment == nil
            ? posix_spawnp(&pid, argv[0], &actions, nil, &cargs, environ)
            : posix_spawnp(&pid, argv[0], &actions, nil, &cargs, &cenv)
        guard rc == 0 else { throw SpawnFailure(description: "cannot start \(argv[0]): error \(rc)") }
        return (pid, out, err)
    }

    /// Wait for a child, killing it after `timeout` seconds (then `timedOut`).
    /// Exit status, or 128 + signal.
    public static func wait(_ pid: pid_t, timeout: TimeInterval = 120) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { return -1 }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return timedOut
            }
            usleep(5_000)
        }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Wait for a started child and read what it wrote (the temporary files are removed).
    public static func collect(_ started: (pid: pid_t, out: String, err: String), timeout: TimeInterval = 120) -> Result {
        let status = wait(started.pid, timeout: timeout)
        defer { unlink(started.out); unlink(started.err) }
        return Result(status: status,
                      out: (try? String(contentsOfFile: started.out, encoding: .utf8)) ?? "",
                      err: (try? String(contentsOfFile: started.err, encoding: .utf8)) ?? "")
    }

    @discardableResult
    public static func run(_ argv: [String], environment: [String: String]? = nil, timeout: TimeInterval = 120) throws -> Result {
        collect(try start(argv, environment: environment), timeout: timeout)
    }
}
