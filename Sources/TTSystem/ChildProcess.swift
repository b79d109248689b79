import CTTShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Spawning and supervising programs by argument vector — never through a shell.
public enum ChildProcess {
    public struct SpawnError: Error, CustomStringConvertible, ExitStatusProviding {
        public let program: String
        public let errno: Errno
        public var description: String { "cannot start \(program): \(errno.description)" }
        public var exitStatus: Int32 { ExitStatus.unavailable }
    }

    /// Start `argv` (argv[0] looked up in PATH) in its own session, so a terminal's
    /// ^C reaches tt only and tt decides the child's fate. stdin from /dev/null;
    /// stdout and stderr appended to `output` (or /dev/null). `directory`: the child's cwd.
    public static func spawn(_ argv: [String], directory: FilePath?, output: FilePath?) throws -> pid_t {
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let rc = tt_spawn(&cargs, directory?.string, output?.string, &pid)
        guard rc == 0 else { throw SpawnError(program: argv[0], errno: Errno(rawValue: rc)) }
        return pid
    }

    /// A pollable descriptor that becomes readable when `pid` exits (pidfd_open).
    public static func exitDescriptor(_ pid: pid_t) -> Int32? {
        let fd = tt_pidfd_open(pid)
        return fd >= 0 ? fd : nil
    }

    /// Whether a process with this pid exists and has not exited (a zombie, exited but
    /// not yet reaped by its parent, counts as gone).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return true }
        let state = buf[close + 2]
        return state != UInt8(ascii: "Z") && state != UInt8(ascii: "X")
    }

    /// The process's command line, or nil if it is gone.
    public static func commandLine(_ pid: pid_t) -> [String]? {
        let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reap `pid` if it is our child and has exited; returns its wait status then.
    public static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        return r == pid ? status : nil
    }

    /// Wait until `pid` is gone, up to `timeoutMS`; true if it is gone.
    public static func waitGone(_ pid: pid_t, timeoutMS: Int) -> Bool {
        var waited = 0
        while waited <= timeoutMS {
            _ = reap(pid)
            if !isAlive(pid) { return true }
            usleep(10_000)
            waited += 10
        }
        return false
    }

    /// SIGTERM, then SIGKILL after `graceMS`; waits for it to be gone.
    public static func terminate(_ pid: pid_t, graceMS: Int = 3000) {
        guard isAlive(pid) else { _ = reap(pid); return }
        kill(pid, SIGTERM)
        if waitGone(pid, timeoutMS: graceMS) { return }
        kill(pid, SIGKILL)
        _ = waitGone(pid, timeoutMS: 5000)
    }
}
