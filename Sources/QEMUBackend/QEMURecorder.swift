import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Recording a run with QEMU's icount record/replay into a state directory.
public enum QEMURecorder {
    /// What a finished recording reports.
    public struct Summary: Sendable {
        public var exitStatus: Int32?
        public var instructions: UInt64
        public var branches: UInt64
        public var signal: Int32
        /// Why QEMU did not end the recording cleanly (nil: it did, or a signal stopped it).
        public var incomplete: String?
    }

    /// Reap what dead owners left behind: a replay VM whose pid file names a dead
    /// process is forgotten; a foreground recording whose `tt record` died is killed.
    public static func cleanStale(_ state: StateDirectory) {
        if let text = state.readIfPresent(QEMUMachine.File.recordPID) {
            let f = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).map(String.init)
            let qemu = f.first.flatMap { Int32($0) } ?? 0
            let owner = f.count >= 3 && f[1] == "owner" ? Int32(f[2]) ?? 0 : 0
            if !isOurQEMU(qemu, state) {
                state.remove(QEMUMachine.File.recordPID)
            } else if owner != 0 && !ChildProcess.isAlive(owner) {
                ChildProcess.terminate(qemu)
                state.remove(QEMUMachine.File.recordPID)
            }
        }
        if let pid = readPID(state, QEMUMachine.File.pid), !isOurQEMU(pid, state) {
            state.remove(QEMUMachine.File.pid)
            state.remove(QEMUMachine.File.qmp)
            state.remove(QEMUMachine.File.gdb)
        }
    }

    static func readPID(_ state: StateDirectory, _ file: String) -> Int32? {
        guard let text = state.readIfPresent(file) else { return nil }
        return text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.flatMap { Int32($0) }
    }

    /// Whether `pid` is a QEMU working in this state directory (not a reused pid).
    static func isOurQEMU(_ pid: Int32, _ state: StateDirectory) -> Bool {
        guard pid > 0, ChildProcess.isAlive(pid) else { return false }
        _ = ChildProcess.reap(pid)
        guard ChildProcess.isAlive(pid), let argv = ChildProcess.commandLine(pid), let a0 = argv.first, a0.contains("qemu") else { return false }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/proc/\(pid)/cwd", &buf, buf.count - 1)
        guard n > 0 else { return false }
        buf[n] = 0
        return FilePath(String(cString: buf)) == state.path
    }

    /// The pid of a recording in progress, if any.
    public static func recordingPID(_ state: StateDirectory) -> Int32? {
        guard let pid = readPID(state, QEMUMachine.File.recordPID), isOurQEMU(pid, state) else { return nil }
        return pid
    }

    /// Set up the state directory and start QEMU recording. Returns QEMU's pid.
    /// `detached`: nobody waits; otherwise this process owns it (killed if we die).
    public static func start(_ state: StateDirectory, machine: QEMUMachine, symbols: FilePath,
                             detached: Bool, debug: Bool) throws -> Int32 {
        let plugin = try TTInstallation.plugin()
        try copyFile(from: machine.kernel, to: state.file(QEMUMachine.File.kernel))
        if let initrd = machine.initrd { try copyFile(from: initrd, to: state.file(QEMUMachine.File.initrd)) }
        try state.write(QEMUMachine.File.symfile, absolute(symbols).string + "\n")
        try state.write(QEMUMachine.File.backend, "qemu\n")
        // QEMU opens its outputs following symlinks: none of their names may be there.
        for f in [QEMUMachine.File.snapshot, QEMUMachine.File.recording, QEMUMachine.File.recordConsole, QEMUMachine.File.recordLog] {
            state.remove(f)
        }
        let oldMask = umask(0o077) // everything QEMU and qemu-img create: 0600
        defer { umask(oldMask) }
        try runToCompletion(["qemu-img", "create", "-q", "-f", "qcow2", QEMUMachine.File.snapshot, "64M"], in: state)
        _ = try PluginControlBlock.create(at: state.file(QEMUMachine.File.recordShm), ringCapacity: 64)
        let argv = machine.recordArguments(plugin: plugin)
        try state.writeLines(QEMUMachine.File.argv, argv)
        if debug { fputs("tt: record: \(argv.joined(separator: " "))\n", stderr) }
        let pid = try ChildProcess.spawn(argv, directory: state.path, output: state.file(QEMUMachine.File.recordLog))
        try state.write(QEMUMachine.File.recordPID, detached ? "\(pid)\ndetached\n" : "\(pid)\nowner \(getpid())\n")
        return pid
    }

    /// Wait for the recording QEMU to end. On SIGINT/SIGTERM/SIGHUP it is stopped
    /// (the recording so far stays) and the signal is reported in the summary.
    /// `console`: copy the guest's serial output to stdout as it appears.
    public static func wait(_ pid: Int32, state: StateDirectory, console: Bool) throws -> Summary {
        let signalFD = SignalWatcher.install()
        let exitFD = ChildProcess.exitDescriptor(pid) ?? -1
        defer { if exitFD >= 0 { close(exitFD) } }
        var consoleOffset: off_t = 0
        var signal: Int32 = 0
        var status: Int32? = nil
        while true {
            if console { consoleOffset = copyNew(state.file(QEMUMachine.File.recordConsole), from: consoleOffset) }
            if let s = ChildProcess.reap(pid) { status = s; break }
            if !ChildProcess.isAlive(pid) { break }
            var fds = [pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0), pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, 100)
            if fds[1].revents != 0 {
                signal = SignalWatcher.take()
                ChildProcess.terminate(pid)
                status = nil
                break
            }
        }
        if console { _ = copyNew(state.file(QEMUMachine.File.recordConsole), from: consoleOffset) }
        state.remove(QEMUMachine.File.recordPID)
        let shm = try? PluginControlBlock.open(at: state.file(QEMUMachine.File.recordShm))
        var exit: Int32? = nil
        if let s = status, s & 0x7f == 0 { exit = (s >> 8) & 0xff }
        var summary = Summary(exitStatus: exit, instructions: shm?.instructions ?? 0, branches: shm?.brctr ?? 0, signal: signal)
        if signal == 0, let why = incompleteness(summary, status: status, state: state) {
            summary.incomplete = why
            try state.write(StateOwnership.incompleteFile, why + "\n")
        }
        return summary
    }

    /// Why a recording QEMU ended is not a clean end, or nil. The exit status alone cannot
    /// tell: the guest's isa-debug-exit with 0 gives status 1, as QEMU's own failures do. A
    /// clean recording ran guest instructions and left nothing but warnings in QEMU's log
    /// (which is empty then); otherwise QEMU's last message is the reason.
    static func incompleteness(_ summary: Summary, status: Int32?, state: StateDirectory) -> String? {
        let messages = (state.readIfPresent(QEMUMachine.File.recordLog) ?? "")
            .split(separator: "\n").map { String($0).trimmingWhitespace }
            .filter { !$0.isEmpty && !$0.contains("warning:") }
        if let last = messages.last { return "QEMU: \(last)" }
        guard let status else { return "QEMU ended without an exit status" }
        if status & 0x7f != 0 { return "QEMU was killed by signal \(status & 0x7f)" }
        if summary.instructions == 0 { return "QEMU ran no guest instruction (exit status \(summary.exitStatus ?? 0))" }
        return nil
    }

    /// Stop a recording in progress (tt record -S), keeping its state.
    public static func stop(_ state: StateDirectory) -> Bool {
        guard let pid = recordingPID(state) else { return false }
        ChildProcess.terminate(pid)
        state.remove(QEMUMachine.File.recordPID)
        return true
    }

    static func runToCompletion(_ argv: [String], in state: StateDirectory) throws {
        let pid = try ChildProcess.spawn(argv, directory: state.path, output: state.file(QEMUMachine.File.recordLog))
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else {
            throw QEMUError("\(argv[0]) failed: \(lastLine(of: state.file(QEMUMachine.File.recordLog)) ?? "status \(status)")")
        }
    }

    static func absolute(_ p: FilePath) -> FilePath {
        if p.isAbsolute { return p }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buf, buf.count) != nil else { return p }
        return FilePath(String(cString: buf)).pushing(p).lexicallyNormalized()
    }

    /// Copy a console file to stdout as it grows, until `pid` exits or a signal comes.
    public static func followConsole(_ file: FilePath, whileAlive pid: Int32) {
        let signalFD = SignalWatcher.install()
        var offset: off_t = 0
        while true {
            offset = copyNew(file, from: offset)
            guard ChildProcess.isAlive(pid) else { break }
            var p = pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 100) > 0 { _ = SignalWatcher.take(); break }
        }
        _ = copyNew(file, from: offset)
    }

    /// Copy bytes appended to `file` since `offset` to stdout; returns the new offset.
    static func copyNew(_ file: FilePath, from offset: off_t) -> off_t {
        let fd = open(file.string, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return offset }
        defer { close(fd) }
        var off = offset
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off) }
            if n <= 0 { break }
            _ = buf.withUnsafeBytes { write(1, $0.baseAddress!, n) }
            off += off_t(n)
        }
        return off
    }
}
