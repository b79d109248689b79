import ArgumentParser
import QEMUBackend
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `tt console NAME`: attach this terminal to the console of a detached interactive
/// recording (`tt record --detach -c`).
struct Console: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach to the serial console of a recording made with tt record --detach -c.",
        discussion: """
            Shows what the guest wrote since the recording began (console.record), then its
            output as it comes; what you type goes to the guest and is recorded, as with
            tt record -c. The terminal is raw while attached and restored however this ends.
            Ctrl-A d detaches (the recording goes on), Ctrl-A x ends the recording (as
            tt record -S; it stays replayable), Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A h
            prints the keys. Returns when the recording ends.

            Exit status 69 with one line when NAME has no recording in progress (it ended,
            or never started) or the recording in progress has no console to attach to (it
            was not made with --detach -c); 66 when the attach socket is not a socket of
            this user.
            """)

    @Flag(help: .hidden)
    var keep = false
    @OptionGroup var state: StateOptions

    func run() throws {
        let dir = try state.resolve()
        guard dir.exists, StateOwnership.isRecording(dir) else { throw StateError.missing(dir.path) }
        let cancellation = Cancellation.onSignals()
        if keep {
            // Started by tt record --detach -c (ConsoleKeeper.start), in its own session.
            guard let qemu = QEMURecorder.detachedRecordingPID(dir) else {
                throw ValidationError("--keep: \(dir.path) has no detached recording in progress (tt record --detach -c starts the keeper)")
            }
            try ConsoleKeeper.keep(dir, qemu: qemu, cancellation: cancellation) {
                // Ready: tt record returns; nothing of this process may reach its terminal.
                let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
                if null >= 0 { dup2(null, 2); close(null) }
            }
            return
        }
        switch try ConsoleAttachment.attach(dir, cancellation: cancellation) {
        case .ended: printError("tt: recording \(dir.name) ended; tt replay -c \(dir.name) replays it")
        case .detached: printError("tt: detached from \(dir.name); it records on (tt console \(dir.name) attaches again, tt record -S \(dir.name) stops it)")
        case .stopped: printError("tt: recording \(dir.name) stopped by Ctrl-A x; state kept in \(dir.path)")
        }
    }
}
