import ArgumentParser
import Symbolize
import SystemPackage
import XenBackend
import QEMUBackend
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `-s STATEDIR` and `NAME`, shared by the session commands.
struct StateOptions: ParsableArguments {
    @Option(name: .customShort("s"), help: ArgumentHelp("State directory (default: <state base>/NAME; state base from etc/xentt/tt.conf or TT_STATE_BASE).", valueName: "STATEDIR"))
    var stateDirectory: String?

    @Argument(help: "Name of the recording.")
    var name: String

    func resolve() throws -> StateDirectory {
        try StateDirectory(name: name, explicit: stateDirectory, base: TTConfiguration.stateBase())
    }
}

/// The backend a session command uses. `--backend qemu|xen|auto` plugs in here (the
/// Xen backend registers itself); today every recording made by tt record is QEMU's.
enum SessionBackends {
    static func backend(for state: StateDirectory, debug: Bool, choice: BackendChoice? = nil) throws -> ReplayBackend {
        let kind = state.readIfPresent("backend")?.trimmingWhitespace ?? "qemu"
        if let choice, choice != .auto, choice.rawValue != kind {
            throw ValidationError("\(state.path): recorded with backend '\(kind)', not '\(choice.rawValue)'")
        }
        switch kind {
        case "xen":
            return try XenSessions.replayBackend(state: state)
        case "qemu":
            let b = QEMUReplayBackend(state: state)
            b.debug = debug
            return b
        default:
            throw ValidationError("\(state.path): recorded with backend '\(kind)', which this command cannot replay")
        }
    }

    /// Every file a backend creates in a state directory: all that tt record -D and -f remove.
    static let stateFiles = QEMUMachine.File.all + XenSessions.stateFiles

    /// Remove a recording's files (StateOwnership's rules); say what was kept and why.
    static func removeRecording(_ dir: StateDirectory, replacing: Bool = false) throws {
        let kept = try StateOwnership.remove(dir, files: stateFiles, replacing: replacing)
        if !kept.isEmpty {
            printError("tt: \(dir.path): kept the directory: it also holds files that are not tt's (\(kept.prefix(3).joined(separator: ", "))\(kept.count > 3 ? ", ..." : ""))")
        }
    }

    /// Resolve a location's symbol against the recording's `symfile`.
    static func resolve(_ text: String, in state: StateDirectory) throws -> ResolvedLocation {
        try Location(parsing: text).resolved(RecordingSymbols(state).address(ofSymbol:))
    }
}

/// The symbol file a recording names in its `symfile`, opened on first use.
final class RecordingSymbols {
    let state: StateDirectory
    /// The recorded path (nil: no `symfile`).
    private(set) lazy var path: String? = state.readIfPresent(QEMUMachine.File.symfile)?.trimmingWhitespace
    /// The symbol file, once a symbol was looked up.
    private(set) var file: SymbolFile?

    init(_ state: StateDirectory) { self.state = state }

    func address(ofSymbol name: String) throws -> UInt64 {
        if file == nil {
            guard let path, !path.isEmpty else {
                throw StateError.badFile(state.file(QEMUMachine.File.symfile), "no symbol file recorded; give an address instead")
            }
            file = try SymbolFile(path: FilePath(path))
        }
        return try file!.address(ofSymbol: name)
    }
}



/// Progress on stderr while the replay runs, only when stderr is a terminal.
func progressReporter(target: ResolvedLocation) -> ((UInt64) -> Void)? {
    guard isatty(2) != 0 else { return nil }
    var goal = ""
    if case .exact(let b, _) = target.condition { goal = " / \(b)" }
    return { brctr in
        fputs("\rtt: running to \(target): brctr \(brctr)\(goal)   ", stderr)
    }
}

func endProgressLine() {
    if isatty(2) != 0 { fputs("\r\u{1b}[K", stderr) }
}

func printLine(_ s: String) {
    print(s)
    fflush(stdout)
}
