import CTTShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The one way tt (and its tests) run programs, shaped like swift-subprocess: a value-type
/// `Configuration`, `run` (start, wait, collect) and `spawn` (a process that runs on),
/// graceful-then-kill teardown and a typed `TerminationStatus`.
///
/// Programs are started by argument vector through posix_spawn — never through a shell —
/// with default signal dispositions and an empty signal mask, by default in a session of
/// their own so that a terminal's ^C reaches tt only and tt decides the child's fate.
public enum Subprocess {
    public struct Configuration {
        /// A path, or a name looked up in PATH.
        public var executable: String
        public var arguments: [String]
        public var workingDirectory: FilePath?
        public var environment: Environment
        public var input: Input
        public var output: Output
        public var error: Output
        public var newSession: Bool
        /// A signal the child gets when this process dies, however it dies (even SIGKILL),
        /// so that nothing it started for one command outlives it; nil: the child may
        /// outlive this process.
        public var deathSignal: Int32?
        /// The one CPU the child and all its threads run on (set before its exec, so no
        /// thread it starts escapes it); nil: the CPUs this process may use.
        public var cpu: Int32?

        public init(executable: String, arguments: [String] = [], workingDirectory: FilePath? = nil,
                    environment: Environment = .inherit, input: Input = .null,
                    output: Output = .null, error: Output = .null, newSession: Bool = true,
                    deathSignal: Int32? = nil, cpu: Int32? = nil) {
            self.executable = executable
            self.arguments = arguments
            self.workingDirectory = workingDirectory
            self.environment = environment
            self.input = input
            self.output = output
            self.error = error
            self.newSession = newSession
            self.deathSignal = deathSignal
            self.cpu = cpu
        }

        /// `argv[0]` is the executable, the rest its arguments.
        public init(_ argv: [String], workingDirectory: FilePath? = nil, environment: Environment = .inherit,
                    output: Output = .null, error: Output = .null, deathSignal: Int32? = nil, cpu: Int32? = nil) {
            self.init(executable: argv[0], arguments: Array(argv.dropFirst()), workingDirectory: workingDirectory,
                      environment: environment, output: output, error: error, deathSignal: deathSignal, cpu: cpu)
        }
    }

    public enum Environment {
        /// This process's environment.
        case inherit
        /// This process's environment with these variables added or replaced.
        case inheritAdding([String: String])
        /// Exactly these variables.
        case exactly([String: String])
    }

    public enum Input {
        case null
        /// Read from this file.
        case file(FilePath)
        /// A copy of this descriptor (a pipe the caller writes); the caller's stays open.
        case fileDescriptor(FileDescriptor)
    }

    public enum Output {
        case null
        /// Appended to this file (created 0600 if missing, never through a symlink).
        case append(FilePath)
        /// Collected by `run`, up to `limit` bytes; the child's further output is read and dropped.
        case collect(limit: Int)
        /// The same descriptor as the configuration's `output` (only as `error`).
        case sameAsOutput
        /// This process's own descriptor (2 for `error`, 1 for `output`).
        case inherit
        /// A copy of this descriptor (a pipe the caller reads); the caller's stays open.
        case fileDescriptor(FileDescriptor)
    }

    public enum TerminationStatus: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public init(waitStatus s: Int32) {
            self = s & 0x7f == 0 ? .exited((s >> 8) & 0xff) : .signaled(s & 0x7f)
        }

        public var isSuccess: Bool { self == .exited(0) }

        /// The shell's number: the exit code, or 128 + the signal.
        public var shellStatus: Int32 {
            switch self {
            case .exited(let code): return code
            case .signaled(let signal): return 128 + signal
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): return "exit status \(code)"
            case .signaled(let signal): return "killed by signal \(signal)"
            }
        }
    }

    public struct CollectedResult {
        public var status: TerminationStatus
        /// Whether `run` stopped the process because its time was up.
        public var timedOut: Bool
        public var standardOutput: [UInt8]
        public var standardError: [UInt8]
        public var standardOutputText: String { String(decoding: standardOutput, as: UTF8.self) }
        public var standardErrorText: String { String(decoding: standardError, as: UTF8.self) }
    }

    public struct SpawnError: Error, CustomStringConvertible, ExitStatusProviding {
        public let program: String
        public let errno: Errno
        public var description: String { "cannot start \(program): \(errno.description)" }
        public var exitStatus: Int32 { ExitStatus.unavailable }
    }

    /// Start the program and wait for it, collecting what `.collect` outputs asked for.
    /// With `timeoutMS`, a program still running then is torn down (`RunningProcess.terminate`).
    public static func run(_ configuration: Configuration, timeoutMS: Int? = nil) throws -> CollectedResult {
        var collectors: [(pipe: FileDescriptor, limit: Int, isError: Bool)] = []
        let process = try start(configuration) { collectors.append($0) }
        defer { for c in collectors { try? c.pipe.close() } }
        var out: [UInt8] = [], err: [UInt8] = []
        let deadline = timeoutMS.map { monotonicMilliseconds() + $0 }
        func remainingMS() -> Int32 { deadline.map { Int32(clamping: max(0, $0 - monotonicMilliseconds())) } ?? -1 }
        var timedOut = false
        // Read every pipe as data comes (reading them in turn can deadlock a chatty child)
        // until all are closed.
        var open = collectors
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while !open.isEmpty && !timedOut {
            var fds = open.map { pollfd(fd: $0.pipe.rawValue, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), remainingMS())
            if ready < 0 && errno != EINTR { throw SystemError(path: nil, errno: Errno(rawValue: errno), doing: "poll") }
            if ready == 0 { timedOut = true }
            var stillOpen: [(pipe: FileDescriptor, limit: Int, isError: Bool)] = []
            for (i, c) in open.enumerated() {
                guard fds[i].revents != 0 else { stillOpen.append(c); continue }
                let n = (try? chunk.withUnsafeMutableBytes { try c.pipe.read(into: $0) }) ?? 0
                if n == 0 { continue }
                stillOpen.append(c)
                let kept = chunk[0..<min(n, max(0, c.limit - (c.isError ? err.count : out.count)))]
                if c.isError { err += kept } else { out += kept }
            }
            open = stillOpen
        }
        let status: Subprocess.TerminationStatus
        let end: RunningProcess.Gone = deadline == nil ? .reaped(process.wait())
            : timedOut ? .stillRunning : process.waitUntilGone(timeoutMS: Int(remainingMS()))
        switch end {
        case .reaped(let s): status = s
        // Our child, so only a SIGCHLD handler elsewhere reaping it could take its status.
        case .unknownStatus: status = .exited(-1)
        case .stillRunning:
            timedOut = true
            status = process.terminate() ?? .signaled(SIGKILL)
        }
        return CollectedResult(status: status, timedOut: timedOut, standardOutput: out, standardError: err)
    }

    /// Start the program and return at once; the caller waits for it or tears it down.
    /// (`.collect` outputs need `run`.)
    public static func spawn(_ configuration: Configuration) throws -> RunningProcess {
        try start(configuration) { _ in preconditionFailure("Subprocess.spawn: .collect output needs Subprocess.run") }
    }

    private static func start(_ c: Configuration,
                              collecting: ((pipe: FileDescriptor, limit: Int, isError: Bool)) -> Void) throws -> RunningProcess {
        var opened: [FileDescriptor] = []
        defer { for fd in opened { try? fd.close() } }
        func open(_ path: FilePath, _ mode: FileDescriptor.AccessMode, append: Bool) throws -> Int32 {
            let options: FileDescriptor.OpenOptions = append ? [.create, .append, .closeOnExec, .noFollow] : [.closeOnExec]
            do {
                let fd = try FileDescriptor.open(path, mode, options: options, permissions: append ? [.ownerReadWrite] : nil)
                opened.append(fd)
                return fd.rawValue
            } catch let e as Errno {
                throw SystemError(path: path, errno: e, doing: "open")
            }
        }
        func descriptor(_ o: Output, isError: Bool, output: Int32) throws -> Int32 {
            switch o {
            case .null: return try open("/dev/null", .writeOnly, append: false)
            case .append(let path): return try open(path, .writeOnly, append: true)
            case .inherit: return isError ? 2 : 1
            case .fileDescriptor(let fd): return fd.rawValue
            case .sameAsOutput:
                precondition(isError, "Subprocess: .sameAsOutput is for the error stream")
                return output
            case .collect(let limit):
                let (r, w) = try FileDescriptor.pipe(options: .closeOnExec)
                opened.append(w)
                collecting((r, limit, isError))
                return w.rawValue
            }
        }
        let stdin: Int32
        switch c.input {
        case .null: stdin = try open("/dev/null", .readOnly, append: false)
        case .file(let path): stdin = try open(path, .readOnly, append: false)
        case .fileDescriptor(let fd): stdin = fd.rawValue
        }
        let stdout = try descriptor(c.output, isError: false, output: -1)
        let stderr = try descriptor(c.error, isError: true, output: stdout)

        let argv = [c.executable] + c.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var variables: [String]? = nil
        switch c.environment {
        case .inherit: break
        case .inheritAdding(let extra): variables = environmentVariables(adding: extra)
        case .exactly(let all): variables = all.map { "\($0.key)=\($0.value)" }
        }
        var cenv: [UnsafeMutablePointer<CChar>?] = (variables ?? []).map { strdup($0) } + [nil]
        defer { for p in cenv { free(p) } }
        var pid: pid_t = 0
        let stdio: [Int32] = [stdin, stdout, stderr]
        let rc = stdio.withUnsafeBufferPointer { io in
            cenv.withUnsafeMutableBufferPointer { env in
                tt_spawn(&cargs, variables == nil ? nil : env.baseAddress, c.workingDirectory?.string,
                         io.baseAddress, c.newSession ? 1 : 0, c.deathSignal ?? 0, c.cpu ?? -1, &pid)
            }
        }
        guard rc == 0 else { throw SpawnError(program: c.executable, errno: Errno(rawValue: rc)) }
        return RunningProcess(pid: pid)
    }

    /// This process's environment with `extra` added or replacing.
    private static func environmentVariables(adding extra: [String: String]) -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            let name = text.split(separator: "=", maxSplits: 1).first.map(String.init) ?? text
            if extra[name] == nil { result.append(text) }
            p += 1
        }
        return result + extra.map { "\($0.key)=\($0.value)" }
    }
}

/// A process by its pid: one tt started (then `wait` and `reap` apply) or one named in a
/// state file by an earlier command (then only liveness, its command line and teardown).
public struct RunningProcess {
    public let pid: pid_t

    public init(pid: pid_t) { self.pid = pid }

    /// Whether the process exists and has not exited (a zombie, exited but not yet
    /// reaped by its parent, counts as gone).
    public var isAlive: Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        // /proc/PID/stat: "pid (comm) S …"; comm may hold ") ", so the state follows the last ')'.
        guard let stat = try? readSmallFile(FilePath("/proc/\(pid)/stat"), limit: 4096),
              let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else { return true }
        let state = stat[close + 2]
        return state != UInt8(ascii: "Z") && state != UInt8(ascii: "X")
    }

    /// The process's working directory, or nil if it is gone (or not ours to look at).
    public var workingDirectory: FilePath? { readSymbolicLink(FilePath("/proc/\(pid)/cwd")) }

    /// The process's command line, or nil if it is gone.
    public var commandLine: [String]? {
        guard let bytes = try? readSmallFile(FilePath("/proc/\(pid)/cmdline"), limit: 1 << 20) else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    /// A pollable descriptor that becomes readable when the process exits (pidfd_open).
    public func exitDescriptor() -> FileDescriptor? {
        let fd = tt_pidfd_open(pid)
        return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    /// Reap the process if it is our child and has exited: its status then.
    public func reap() -> Subprocess.TerminationStatus? {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid ? Subprocess.TerminationStatus(waitStatus: status) : nil
    }

    /// Wait for our child to exit.
    public func wait() -> Subprocess.TerminationStatus {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return .exited(-1) }
        }
        return Subprocess.TerminationStatus(waitStatus: status)
    }

    /// Wait up to `timeoutMS` for our child to exit: its status, or nil if it still runs.
    public func wait(timeoutMS: Int) -> Subprocess.TerminationStatus? {
        if case .reaped(let s) = waitUntilGone(timeoutMS: timeoutMS) { return s }
        return nil
    }

    /// Wait until the process is gone, up to `timeoutMS`; true if it is gone.
    public func waitGone(timeoutMS: Int) -> Bool {
        if case .stillRunning = waitUntilGone(timeoutMS: timeoutMS) { return false }
        return true
    }

    enum Gone {
        /// Our child, reaped here.
        case reaped(Subprocess.TerminationStatus)
        /// Gone, reaped by someone else (not our child).
        case unknownStatus
        case stillRunning
    }

    func waitUntilGone(timeoutMS: Int) -> Gone {
        let deadline = monotonicMilliseconds() + timeoutMS
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return .reaped(Subprocess.TerminationStatus(waitStatus: status)) }
            // Our child still running (r == 0) is waited for by waitpid alone: /proc shows a
            // multi-threaded program's leader as a zombie while its other threads finish.
            if r != 0 && !isAlive { return .unknownStatus }
            if monotonicMilliseconds() > deadline { return .stillRunning }
            usleep(5_000)
        }
    }

    /// Graceful, then forced: SIGTERM, up to `gracePeriodMS` to exit, then SIGKILL; waits
    /// for it to be gone. How it ended when it was our child; nil when that is unknown
    /// (another process's child, or already gone).
    @discardableResult
    public func terminate(gracePeriodMS: Int = 3000) -> Subprocess.TerminationStatus? {
        switch waitUntilGone(timeoutMS: 0) {
        case .reaped(let s): return s
        case .unknownStatus: return nil
        case .stillRunning: break
        }
        kill(pid, SIGTERM)
        switch waitUntilGone(timeoutMS: gracePeriodMS) {
        case .reaped(let s): return s
        case .unknownStatus: return nil
        case .stillRunning: break
        }
        kill(pid, SIGKILL)
        if case .reaped(let s) = waitUntilGone(timeoutMS: 5000) { return s }
        return nil
    }
}
