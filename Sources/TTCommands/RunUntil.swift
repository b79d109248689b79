import ArgumentParser
import QEMUBackend
import XenTT

/// `tt run-until`: run the live replay to an exact location.
struct RunUntil: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-until",
        abstract: "Run the live replay until a location and print where it stopped.",
        discussion: """
            LOCATION is WHERE[:brctr[:cx]] or WHERE#N; WHERE is 0x-hex, decimal or a symbol of
            the recording's symbol file. A location before the current one is reached by
            going back through snapshots; with a checkpoint index (tt index), WHERE:brctr starts
            from the latest indexed checkpoint before it. A location never reached ends with
            "not reached; replay ended at ..." (exit status 2).
            """)

    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Flag(name: .long, help: "Also print the registers after landing.")
    var registers = false
    @OptionGroup var divergence: DivergenceOptions
    @OptionGroup var state: StateOptions
    @Argument(help: "Where to stop: WHERE[:brctr[:cx]] or WHERE#N.")
    var location: String

    func run() throws {
        _ = try Location(parsing: location) // syntax errors before touching anything
        let scope = try SessionScope(state, debug: debug)
        try scope.run { scope in
            let target = try SessionBackends.resolve(location, in: scope.state)
            try scope.attachLive()
            let session = scope.session
            divergence.apply(to: session)
            if case .callReturn = target.condition {
                let recording = RecordingSymbols(scope.state)
                try recording.requireFunctionEntry(try session.position().landmark.ip, for: "the replay's position")
                session.guestWordSize = recording.elfWordSize ?? 64
            }
            let progress = ProgressLine()
            defer { progress.end() }
            let position = try session.runUntil(target, progress: progress.reporter("running to \(target)", target: targetBrctr(target)))
            progress.end()
            printLine(session.describe(position))
            if registers {
                for r in try session.registers() { printLine("\(r.name) 0x\(String(r.value, radix: 16))") }
            }
        }
    }
}
