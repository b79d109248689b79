import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Recording a run with QEMU's icount record/replay into a state directory.
public final class QEMURecorder: Recorder {
    public let kind = BackendKind.qemu
    /// The bundled guest's architecture (chooses the machine's CPU word size only there).
    public let arch: QEMUMachine.Arch

    public init(arch: QEMUMachine.Arch = .i386) {
        self.arch = arch
    }

    /// What a finished recording reports.
    struct Summary: Sendable {
        var exitStatus: Int32?
        var instructions: UInt64
        var branches: UInt64
        var signal: Int32
        /// Why QEMU did not end the recording cleanly (nil: it did, or a signal stopped it).
        var incomplete: String?
        /// How the recording was ended before the guest did: Ctrl-A x, or a SIGTERM to QEMU
        /// (tt record -S); QEMU then closes the recording cleanly.
        var stoppedBy: String?
    }

    public func record(_ request: RecordingRequest, into state: StateDirectory,
                       cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> RecordingOutcome {
        // -c: the console is interactive; a detached recording's is kept by tt console --keep
        // (ConsoleKeeper), to which tt console NAME attaches.
        let interactive = request.console
        guard request.disks.count <= StateFile.maxDisks else {
            throw QEMUError("\(request.disks.count) disks: tt records at most \(StateFile.maxDisks) (--disk)", status: ExitStatus.usage)
        }
        let machine = QEMUMachine(kernel: request.kernel, initrd: request.initrd, append: request.append,
                                  memoryMB: request.memoryMB, arch: arch, cpu: request.cpu ?? QEMUMachine.defaultCPU,
                                  diskCount: request.disks.count, extraArguments: request.qemuArguments,
                                  interactiveConsole: interactive, network: request.network)
        // Each image's identity first: the replay refuses an image that changed after this.
        let disks = try request.disks.map(DiskImage.inspect)
        let pid = try Self.start(state, machine: machine, disks: disks, detached: request.detach, debug: request.debug)
        if request.detach {
            if interactive {
                do {
                    try ConsoleKeeper.start(state, qemu: pid)
                } catch {
                    _ = RunningProcess(pid: pid).terminate()
                    state.remove(StateFile.recordPID)
                    try? state.write(StateFile.incomplete, "\(error)\n")
                    throw error
                }
            }
            return .detached(vm: "QEMU (pid \(pid))")
        }
        // The console, when shown, has the terminal: no progress line across it.
        let summary = try Self.wait(pid, state: state, console: request.console, interactive: interactive, cancellation: cancellation,
                                    progress: request.console ? nil : progress)
        if summary.signal != 0 { return .interrupted(signal: summary.signal) }
        if let why = summary.incomplete {
            throw QEMUError("recording \(state.name) in \(state.path) is incomplete: \(why)")
        }
        // isa-debug-exit makes QEMU exit with (value << 1) | 1.
        var exit = summary.exitStatus.map { $0 & 1 == 1 ? "guest exit code \($0 >> 1) (QEMU status \($0))" : "QEMU exit status \($0)" } ?? "QEMU killed"
        if let by = summary.stoppedBy { exit = "stopped by \(by)" }
        return .finished(summary: "\(summary.instructions) instructions, \(summary.branches) taken branches, \(exit)")
    }

    public func stopRecording(in state: StateDirectory) throws -> Bool { Self.stop(state) }

    public func runningVM(in state: StateDirectory) -> String? {
        if let p = Self.recordingPID(state) { return "recording QEMU (pid \(p))" }
        return QEMUReplayBackend(state: state).vmDescription
    }

    /// Clean up what dead commands left behind: a recording or replay VM whose owning
    /// command is gone is killed (never adopted), and pid files naming a process that is not
    /// this directory's QEMU any more are removed with the replay's sockets.
    public static func cleanStale(_ state: StateDirectory) {
        if let (qemu, owner) = readOwnedPID(state, StateFile.recordPID) {
            let ours = isOurQEMU(qemu, state)
            let ownerDied = owner.map { !RunningProcess(pid: $0).isAlive } ?? false
            if ours && ownerDied { RunningProcess(pid: qemu).terminate() }
            // A foreground recording whose tt record died (SIGKILL) was cut short: its QEMU
            // got a parent-death signal or was just killed. Never taken for a whole one.
            if ownerDied && !state.fileExists(StateFile.incomplete) {
                try? state.write(StateFile.incomplete, "tt record (pid \(owner!)) died before the recording ended\n")
            }
            if !ours || ownerDied { state.remove(StateFile.recordPID) }
            // Its interactive console's socket goes with it.
            if ownerDied { state.remove(StateFile.consoleSocket) }
        }
        if let (qemu, owner) = readOwnedPID(state, StateFile.pid) {
            let ours = isOurQEMU(qemu, state)
            let ownerDied = owner.map { !RunningProcess(pid: $0).isAlive } ?? false
            if ours && ownerDied { RunningProcess(pid: qemu).terminate() }
            if !ours || ownerDied {
                for f in [StateFile.pid, StateFile.gdb, StateFile.replaySnapshot] + (0..<StateFile.maxDisks).map(StateFile.replayDiskOverlay) {
                    state.remove(f)
                }
            }
        }
    }

    /// A pid file: the QEMU's pid, then `owner PID` (the command whose VM it is) or `detached`.
    static func readOwnedPID(_ state: StateDirectory, _ file: String) -> (pid: Int32, owner: Int32?)? {
        guard let text = state.readIfPresent(file) else { return nil }
        let f = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).map(String.init)
        guard let pid = f.first.flatMap({ Int32($0) }) else { return nil }
        let owner = f.count >= 3 && f[1] == "owner" ? Int32(f[2]) : nil
        return (pid, owner)
    }

    static func readPID(_ state: StateDirectory, _ file: String) -> Int32? {
        guard let text = state.readIfPresent(file) else { return nil }
        return text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.flatMap { Int32($0) }
    }

    /// Whether `pid` is a QEMU working in this state directory (not a reused pid).
    static func isOurQEMU(_ pid: Int32, _ state: StateDirectory) -> Bool {
        guard pid > 0, RunningProcess(pid: pid).isAlive else { return false }
        _ = RunningProcess(pid: pid).reap()
        guard RunningProcess(pid: pid).isAlive, let argv = RunningProcess(pid: pid).commandLine, let a0 = argv.first, a0.contains("qemu") else { return false }
        return RunningProcess(pid: pid).workingDirectory == state.path
    }

    /// The pid of a recording in progress, if any.
    public static func recordingPID(_ state: StateDirectory) -> Int32? {
        guard let pid = readPID(state, StateFile.recordPID), isOurQEMU(pid, state) else { return nil }
        return pid
    }

    /// The pid of a detached recording in progress (record.pid says `detached`: no tt record
    /// owns it), if any: the only kind whose console tt console --keep may take.
    public static func detachedRecordingPID(_ state: StateDirectory) -> Int32? {
        guard let (pid, owner) = readOwnedPID(state, StateFile.recordPID), owner == nil,
              state.readIfPresent(StateFile.recordPID)?.contains("detached") == true, isOurQEMU(pid, state) else { return nil }
        return pid
    }

    /// Set up the state directory and start QEMU recording. Returns QEMU's pid.
    /// `detached`: nobody waits; otherwise this process owns it (killed if we die).
    static func start(_ state: StateDirectory, machine: QEMUMachine, disks: [DiskImage], detached: Bool, debug: Bool) throws -> Int32 {
        let plugin = try TTInstallation.plugin()
        try copyFile(from: machine.kernel, to: state.file(StateFile.kernel))
        if let initrd = machine.initrd { try copyFile(from: initrd, to: state.file(StateFile.initrd)) }
        try state.write(StateFile.backend, BackendKind.qemu.rawValue + "\n")
        // QEMU opens its outputs following symlinks: none of their names may be there.
        for f in [StateFile.snapshot, StateFile.recording, StateFile.recordConsole, StateFile.recordLog, StateFile.incomplete, StateFile.disks,
                  StateFile.consoleSocket, StateFile.consoleAttach]
            + (0..<StateFile.maxDisks).map(StateFile.diskOverlay) {
            state.remove(f)
        }
        let oldMask = umask(0o177) // everything QEMU and qemu-img create, its console socket too: 0600
        defer { umask(oldMask) }
        try runToCompletion(["qemu-img", "create", "-q", "-f", "qcow2", StateFile.snapshot, "64M"], in: state)
        if !disks.isEmpty { try DiskImage.store(disks, in: state) }
        for (n, disk) in disks.enumerated() { try disk.createOverlay(StateFile.diskOverlay(n), in: state, initSnapshot: false) }
        try state.write(StateFile.qemuVersion, try QEMUMachine.installedVersion() + "\n")
        _ = try PluginControlBlock.create(at: state.file(StateFile.recordShm), ringCapacity: 64)
        let argv = machine.recordArguments(plugin: plugin)
        try state.writeLines(StateFile.argv, argv)
        if debug { fputs("tt: record: \(argv.joined(separator: " "))\n", stderr) }
        // A foreground recording's QEMU stops with tt however tt ends (SIGTERM: QEMU closes
        // the recording cleanly); a detached one runs on.
        let pid = try Subprocess.spawn(.init(argv, workingDirectory: state.path, output: .append(state.file(StateFile.recordLog)),
                                             error: .sameAsOutput, deathSignal: detached ? nil : SIGTERM)).pid
        try state.write(StateFile.recordPID, detached ? "\(pid)\ndetached\n" : "\(pid)\nowner \(getpid())\n")
        return pid
    }

    /// Wait for the recording QEMU to end. On SIGINT/SIGTERM/SIGHUP it is stopped
    /// (the recording so far stays) and the signal is reported in the summary.
    /// `console`: copy the guest's serial output to stdout as it appears.
    /// `interactive`: the console is QEMU's socket (see `InteractiveConsole`): stdin goes to
    /// the guest (a terminal in raw mode, restored however this ends), Ctrl-A x stops QEMU
    /// as tt record -S does.
    static func wait(_ pid: Int32, state: StateDirectory, console: Bool, interactive: Bool = false,
                     cancellation: Cancellation, progress: ((UInt64) -> Void)? = nil) throws -> Summary {
        let exitFD = RunningProcess(pid: pid).exitDescriptor()?.rawValue ?? -1
        defer { if exitFD >= 0 { close(exitFD) } }
        var link: InteractiveConsole? = nil
        if interactive {
            do {
                link = try InteractiveConsole.connect(state, qemu: pid, cancellation: cancellation)
            } catch {
                _ = RunningProcess(pid: pid).terminate()
                state.remove(StateFile.recordPID)
                try? state.write(StateFile.incomplete, "\(error)\n")
                throw error
            }
        }
        let terminal = link != nil ? RawTerminal(fd: 0) : nil
        defer { terminal?.restore() }
        if terminal != nil { fputs("tt: recording \(state.name) with its console here; Ctrl-A x ends it, Ctrl-A h helps\n", stderr) }
        var consoleOffset: off_t = 0
        var signal: Int32 = 0
        var status: Subprocess.TerminationStatus? = nil
        var stoppedBy: String? = nil
        // The plugin's instruction count, read from its control block (the recording's own).
        let counters = progress == nil ? nil : try? PluginControlBlock.open(at: state.file(StateFile.recordShm))
        var lastProgress = 0
        loop: while true {
            if console && link == nil { consoleOffset = copyNew(state.file(StateFile.recordConsole), from: consoleOffset) }
            if let progress, let counters, monotonicMilliseconds() - lastProgress >= 200 {
                lastProgress = monotonicMilliseconds()
                progress(counters.instructions)
            }
            if let s = RunningProcess(pid: pid).reap() { status = s; break }
            // Exited between the two looks: it is our child, so waiting gives its status at once.
            if !RunningProcess(pid: pid).isAlive { status = RunningProcess(pid: pid).wait(); break }
            var fds = [pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)]
                + (link?.pollDescriptors() ?? [])
            _ = poll(&fds, nfds_t(fds.count), 100)
            if cancellation.isCancelled {
                signal = cancellation.signal == 0 ? SIGINT : cancellation.signal
                RunningProcess(pid: pid).terminate()
                status = nil
                break
            }
            guard let link else { continue }
            link.pumpOutput()
            link.flushInput()
            let typed = fds.contains { $0.fd == 0 && $0.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 }
            for action in typed ? link.pumpInput() : [] {
                switch action {
                case .help: fputs("\n" + ConsoleEscape.help + "\n", stderr)
                case .stop:
                    stoppedBy = "Ctrl-A x"
                    status = RunningProcess(pid: pid).terminate()
                    break loop
                case .send, .detach: break
                }
            }
        }
        if console && link == nil { _ = copyNew(state.file(StateFile.recordConsole), from: consoleOffset) }
        link?.pumpOutput()
        terminal?.restore()
        state.remove(StateFile.recordPID)
        state.remove(StateFile.consoleSocket)
        let shm = try? PluginControlBlock.open(at: state.file(StateFile.recordShm))
        shm?.settle()   // QEMU is gone
        var exit: Int32? = nil
        if case .exited(let code)? = status { exit = code }
        var summary = Summary(exitStatus: exit, instructions: shm?.instructions ?? 0, branches: shm?.brctr ?? 0, signal: signal)
        if stoppedBy == nil, let line = terminationLine(state) { stoppedBy = "a signal to QEMU (\(line))" }
        summary.stoppedBy = stoppedBy
        if signal == 0, let why = incompleteness(summary, status: status, state: state) {
            summary.incomplete = why
            try state.write(StateFile.incomplete, why + "\n")
        }
        return summary
    }

    /// QEMU's "terminating on signal N from pid P" in the recording's log: it was stopped
    /// (tt record -S, Ctrl-A x) and closed the recording cleanly.
    static func terminationLine(_ state: StateDirectory) -> String? {
        (state.readIfPresent(StateFile.recordLog) ?? "").split(separator: "\n")
            .last { $0.contains("terminating on signal") }
            .map { String($0.drop { $0 != ":" }.dropFirst()).trimmingWhitespace }
    }

    /// Why a recording QEMU ended is not a clean end, or nil. The exit status alone cannot
    /// tell: the guest's isa-debug-exit with 0 gives status 1, as QEMU's own failures do. A
    /// clean recording ran guest instructions and left nothing but warnings in QEMU's log
    /// (which is empty then); otherwise QEMU's last message is the reason.
    static func incompleteness(_ summary: Summary, status: Subprocess.TerminationStatus?, state: StateDirectory) -> String? {
        let messages = (state.readIfPresent(StateFile.recordLog) ?? "")
            .split(separator: "\n").map { String($0).trimmingWhitespace }
            // Warnings and notes are not failures, nor is a stop by a signal (tt record -S,
            // Ctrl-A x: QEMU closes the recording on SIGTERM) nor the console socket's
            // "info: QEMU waiting for connection".
            .filter { !$0.isEmpty && !$0.contains("warning:") && !$0.contains("info:") && !$0.contains("terminating on signal") }
        if let last = messages.last { return "QEMU: \(last)" }
        guard let status else { return "QEMU ended without an exit status" }
        if case .signaled(let signal) = status { return "QEMU was killed by signal \(signal)" }
        if summary.instructions == 0 { return "QEMU ran no guest instruction (exit status \(summary.exitStatus ?? 0))" }
        return nil
    }

    /// Stop a recording in progress (tt record -S, Ctrl-A x in tt console), keeping its state.
    static func stop(_ state: StateDirectory) -> Bool {
        guard let pid = recordingPID(state) else { return false }
        RunningProcess(pid: pid).terminate()
        state.remove(StateFile.recordPID)
        return true
    }

    /// Stop a foreground recording, whose tt record holds the state directory's lock
    /// (`lockHolder`): its QEMU is stopped as `stop` stops a detached one (SIGTERM: QEMU
    /// closes the recording), then its tt record, seeing QEMU end, finishes the recording
    /// and exits. Returns the lock once that tt record released it; nil when `lockHolder`
    /// is not the tt record of a recording in progress here.
    public static func stopForeground(_ state: StateDirectory, lockHolder: Int32) throws -> StateLock? {
        guard lockHolder > 0, let (qemu, owner) = readOwnedPID(state, StateFile.recordPID), owner == lockHolder,
              isOurQEMU(qemu, state) else { return nil }
        RunningProcess(pid: qemu).terminate()
        let deadline = monotonicMilliseconds() + Int(QEMUMachine.answerTimeoutMS)
        while true {
            do {
                return try state.lock()
            } catch StateError.busy {
                guard monotonicMilliseconds() < deadline else {
                    throw QEMUError("\(state.path): QEMU stopped, but tt record (pid \(lockHolder)) did not finish the recording within \(QEMUMachine.answerTimeoutMS / 1000) s")
                }
                usleep(20_000)
            }
        }
    }

    static func runToCompletion(_ argv: [String], in state: StateDirectory, log: String = StateFile.recordLog) throws {
        let status = try Subprocess.run(.init(argv, workingDirectory: state.path, output: .append(state.file(log)),
                                              error: .sameAsOutput, deathSignal: SIGKILL)).status
        guard status.isSuccess else {
            throw QEMUError("\(argv[0]) failed: \(lastLine(of: state.file(log)) ?? "\(status)")")
        }
    }

    /// Copy a console file to stdout as it grows, until `pid` exits or a signal comes.
    /// `andWhile`: checked every 100 ms; following ends when it says false.
    public static func followConsole(_ file: FilePath, whileAlive pid: Int32, cancellation: Cancellation,
                                     andWhile running: () -> Bool = { true }) {
        var offset: off_t = 0
        while true {
            offset = copyNew(file, from: offset)
            guard RunningProcess(pid: pid).isAlive, running() else { break }
            var p = pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            if cancellation.isCancelled { break }
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
