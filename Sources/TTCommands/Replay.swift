import ArgumentParser
import XenBackend
import QEMUBackend
import XenTT

/// `tt replay`: start a replay VM that outlives the command.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start replaying a recording (the replay VM outlives this command).",
        discussion: """
            The replay VM's pid and control sockets live in the state directory; tt where
            and tt run-until drive it; tt replay -K kills it, keeping the state.
            """)

    @Flag(name: .customShort("c"), help: "Show the guest console: follow the replay's serial output until the replay ends or ^C (the VM keeps running).")
    var console = false
    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Flag(name: .customShort("f"), help: "Kill a replay VM of this recording that is already running, then start anew.")
    var force = false
    @Flag(name: .customShort("p"), help: "Leave the replay paused at its beginning.")
    var paused = false
    @Flag(name: .customShort("K"), help: "Kill the replay VM, keeping the state.")
    var kill = false
    @Option(help: ArgumentHelp("Hypervisor: xen or qemu (default: the one the recording was made with).", valueName: "xen|qemu|auto"))
    var backend: BackendChoice?
    @OptionGroup var state: StateOptions

    func run() throws {
        try reporting {
            // The one-line refusal comes before anything else is looked at.
            if backend == .xen { try XenSessions.requireAvailable() }
            let dir = try state.resolve()
            try dir.requireRecording()
            var lock: StateLock? = try dir.lock()
            defer { withExtendedLifetime(lock) {} }
            QEMURecorder.cleanStale(dir)
            let backend = try SessionBackends.backend(for: dir, debug: debug, choice: self.backend)
            let session = ReplaySession(name: dir.name, backend: backend)
            if kill {
                let live = backend.isLive
                try session.stop()
                printLine(live ? "tt: replay of \(dir.name) killed; state kept" : "tt: no replay of \(dir.name) was running")
                return
            }
            if backend.isLive {
                guard force else {
                    let pid = (backend as? QEMUReplayBackend)?.vmPID ?? 0
                    throw StateError.vmRunning(dir.path, pid: pid)
                }
                try session.stop()
            }
            SignalWatcher.install()
            let position: Position
            do {
                position = try session.start(paused: paused)
            } catch {
                try? session.stop()
                throw error
            }
            if SignalWatcher.pending != 0 {
                try? session.stop()
                throw ExitCode(SignalWatcher.exitStatus(SignalWatcher.pending))
            }
            try session.detach()
            let vm = (backend as? QEMUReplayBackend).map { "QEMU pid \($0.vmPID ?? 0)" } ?? (backend as? XenReplayBackend)?.domid.map { "Xen \($0)" } ?? backend.name
            printLine("tt: replaying \(dir.name) (\(vm)), \(paused ? "paused at" : "started from") \(session.describe(position))")
            if console && !paused, let qemu = backend as? QEMUReplayBackend, let pid = qemu.vmPID {
                lock = nil // others may drive the replay meanwhile
                QEMURecorder.followConsole(dir.file(QEMUMachine.File.replayConsole), whileAlive: pid)
            }
        }
    }
}
