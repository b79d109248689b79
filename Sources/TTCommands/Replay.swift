import ArgumentParser
import SystemPackage
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
        // The one-line refusal comes before anything else is looked at.
        if backend == .xen { try XenSessions.requireAvailable() }
        let scope = try SessionScope(state, debug: debug, choice: backend)
        let follow = try scope.run { scope -> Bool in
            let session = scope.session, name = scope.state.name
            if kill {
                let live = scope.backend.isLive
                try session.stop()
                printLine(live ? "tt: replay of \(name) killed; state kept" : "tt: no replay of \(name) was running")
                return false
            }
            if let vm = scope.backend.vmDescription {
                guard force else { throw StateError.vmRunning(scope.state.path, vm: vm) }
                try session.stop()
            }
            let position: Position
            do {
                position = try session.start(paused: paused, outlivesCommand: true)
                try scope.cancellation.check()
            } catch {
                try? session.stop()
                throw error
            }
            let vm = scope.backend.vmDescription ?? scope.backend.name
            // The replay outlives this command, like a Xen domain.
            try session.detach()
            printLine("tt: replaying \(name) in \(vm), \(paused ? "paused at" : "started from") \(session.describe(position))")
            return console && !paused
        }
        // Outside the scope (unlocked): others may drive the replay meanwhile.
        if follow { try scope.backend.followConsole(until: scope.cancellation) }
    }
}
