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
    static let directoryHelp = ArgumentHelp("State directory (default: <state base>/NAME; state base from etc/xentt/tt.conf or TT_STATE_BASE).", valueName: "STATEDIR")
    static let nameHelp = ArgumentHelp("Name of the recording.")

    @Option(name: .customShort("s"), help: directoryHelp)
    var stateDirectory: String?

    @Argument(help: nameHelp)
    var name: String

    func resolve() throws -> StateDirectory { try Self.resolve(name: name, explicit: stateDirectory) }

    static func resolve(name: String, explicit: String?) throws -> StateDirectory {
        try StateDirectory(name: name, explicit: explicit, base: TTConfiguration.stateBase())
    }
}

/// `-s STATEDIR` and `NAME` for a command some of whose modes name no recording
/// (`tt trace-task --plan DIR --segment K`, `--merge DIR`).
struct OptionalStateOptions: ParsableArguments {
    @Option(name: .customShort("s"), help: StateOptions.directoryHelp)
    var stateDirectory: String?

    @Argument(help: StateOptions.nameHelp)
    var name: String?

    func resolve() throws -> StateDirectory {
        guard let name else { throw ValidationError("Missing expected argument '<name>'") }
        return try StateOptions.resolve(name: name, explicit: stateDirectory)
    }
}

/// The backends, by the kind a recording names or `--backend` asks for.
enum SessionBackends {
    static func backend(for state: StateDirectory, debug: Bool, choice: BackendChoice? = nil) throws -> ReplayBackend {
        let kind = try BackendKind(recordedIn: state)
        if let choice, choice != .auto, choice.rawValue != kind.rawValue {
            throw ValidationError("\(state.path): recorded with backend '\(kind.rawValue)', not '\(choice.rawValue)'")
        }
        switch kind {
        case .xen:
            return try XenSessions.replayBackend(state: state)
        case .qemu:
            let b = QEMUReplayBackend(state: state)
            b.debug = debug
            return b
        }
    }

    static func recorder(_ kind: BackendKind, arch: QEMUMachine.Arch) throws -> Recorder {
        switch kind {
        case .xen: return try XenRecorder()
        case .qemu: return QEMURecorder(arch: arch)
        }
    }

    /// Remove a recording's files (StateOwnership's rules); say what was kept and why.
    static func removeRecording(_ dir: StateDirectory, replacing: Bool = false) throws {
        let kept = try StateOwnership.remove(dir, replacing: replacing)
        if !kept.isEmpty {
            printError("tt: \(dir.path): kept the directory: it also holds files that are not tt's (\(kept.prefix(3).joined(separator: ", "))\(kept.count > 3 ? ", ..." : ""))")
        }
    }

    /// Resolve a location's symbol against the recording's `symfile`.
    static func resolve(_ text: String, in state: StateDirectory) throws -> ResolvedLocation {
        try Location(parsing: text).resolved(RecordingSymbols(state).address(ofSymbol:))
    }
}

/// One session command's hold on a state directory, from its start to its end — the one
/// place of the sequence every session command needs: the recording must exist; the
/// directory is locked (one command at a time); what a dead command left is cleaned up;
/// signals cancel the replay's runs; and at the end the VM's fate follows who made it:
/// a VM this command booted dies with it, a live replay it attached to is let go, paused.
final class SessionScope {
    let state: StateDirectory
    let session: ReplaySession
    var backend: ReplayBackend { session.backend }
    var cancellation: Cancellation { session.cancellation }
    private let lock: StateLock
    /// This command booted the VM (and kills it at the end).
    private(set) var bootedVM = false

    convenience init(_ options: StateOptions, debug: Bool, choice: BackendChoice? = nil) throws {
        try self.init(state: try options.resolve(), debug: debug, choice: choice)
    }

    init(state: StateDirectory, debug: Bool, choice: BackendChoice? = nil) throws {
        self.state = state
        // Whether it can be replayed is the backend's boot to check: tt replay -K and a
        // live replay's commands work on an incomplete recording too.
        try state.requireRecording(complete: false)
        lock = try state.lock()
        let backend = try SessionBackends.backend(for: state, debug: debug, choice: choice)
        backend.cleanUpAfterDeadOwners()
        session = ReplaySession(name: state.name, backend: backend, timeline: Timeline(state: state),
                                cancellation: .onSignals())
        if let problem = session.timeline.indexProblem { printError("tt: warning: \(problem)") }
    }

    /// A new replay that this command owns (killed at the end), even if a live one exists.
    func bootOwn() throws {
        bootedVM = true
        try session.start(paused: true)
    }

    /// Take control of the live replay (`tt replay` started it).
    func attachLive() throws {
        try session.attach()
    }

    /// The live replay if there is one, otherwise a new one that this command owns.
    func attachOrBoot() throws {
        if backend.isLive {
            try session.attach()
        } else {
            bootedVM = true
            try session.start(paused: true)
        }
    }

    /// Give the VM up as its maker wants: kill one this command booted, let go of one it
    /// attached to (it stays alive and paused). Then the lock is released.
    func end() {
        switch session.state {
        case .active:
            if bootedVM { try? session.destroy() } else { try? session.detach() }
        case .initialized:
            // The VM ended under us; a booted one may have left files.
            if bootedVM { try? session.stop() }
        case .invalid:
            break
        }
        withExtendedLifetime(lock) {}
    }

    /// Run `body` within the scope; `end()` whatever happens.
    func run<T>(_ body: (SessionScope) throws -> T) throws -> T {
        defer { end() }
        try cancellation.check()
        return try body(self)
    }
}

/// The symbol file a recording names in its `symfile`, opened on first use.
final class RecordingSymbols {
    let state: StateDirectory
    /// The recorded path (nil: no `symfile`).
    private(set) lazy var path: String? = state.readIfPresent(StateFile.symfile)?.trimmingWhitespace
    /// The symbol file, once a symbol was looked up.
    private(set) var file: SymbolFile?

    init(_ state: StateDirectory) { self.state = state }

    func address(ofSymbol name: String) throws -> UInt64 {
        try opened().address(ofSymbol: name)
    }

    /// `return` is exact only from a function's first instruction, where the stack's top
    /// word is the return address: refuse any other place.
    func requireFunctionEntry(_ address: UInt64, for what: String) throws {
        let symbols = try opened()
        guard symbols.function(startingAt: address) == nil else { return }
        let name = symbols.function(containing: address).map { " (inside \($0.name))" } ?? ""
        throw Location.ParseError(text: "return", problem: "\(what) 0x\(String(address, radix: 16))\(name) is not a function's entry, where the return address is on the stack")
    }

    /// The guest's word size from the symbol file's ELF class (nil: not an ELF file, e.g. a bzImage).
    var elfWordSize: UInt8? { path.flatMap { Self.elfWordSize(FilePath($0)) } }

    /// 32 or 64 from an ELF file's class byte (nil if it is not ELF, e.g. a bzImage).
    static func elfWordSize(_ path: FilePath) -> UInt8? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) else { return nil }
        defer { try? fd.close() }
        var ident = [UInt8](repeating: 0, count: 5)
        guard (try? ident.withUnsafeMutableBytes({ try fd.read(into: $0) })) == 5,
              ident[0..<4] == [0x7f, 0x45, 0x4c, 0x46] else { return nil }
        return ident[4] == 1 ? 32 : ident[4] == 2 ? 64 : nil
    }

    private func opened() throws -> SymbolFile {
        if let file { return file }
        guard let path, !path.isEmpty else {
            throw StateError.badFile(state.file(StateFile.symfile), "no symbol file recorded; give an address instead")
        }
        let opened = try SymbolFile(path: FilePath(path))
        file = opened
        return opened
    }
}


/// One progress line on stderr while a replay runs, redrawn in place — only when stderr
/// is a terminal (scripts and logs get nothing). It shows the phase, the live branch count
/// against the target when there is one, the rate, and the time left at that rate.
final class ProgressLine {
    private let enabled = isatty(2) != 0
    private var started = monotonicSeconds()
    private var phase = ""
    private var first: UInt64?

    /// What a count is: the live branch count of a replay, or a recording's instructions.
    enum Count {
        case brctr, instructions
        var label: (prefix: String, suffix: String, rate: String) {
            switch self {
            case .brctr: return ("brctr ", "", "branches/s")
            case .instructions: return ("", " instructions", "instructions/s")
            }
        }
    }

    /// The reporter for one phase ("running to fib#3"), or nil when stderr is not a terminal.
    func reporter(_ phase: String, target: UInt64? = nil, counting count: Count = .brctr) -> ((UInt64) -> Void)? {
        guard enabled else { return nil }
        return { [self] n in show(phase, n, target, count.label) }
    }

    private func show(_ phase: String, _ brctr: UInt64, _ target: UInt64?, _ label: (prefix: String, suffix: String, rate: String)) {
        if phase != self.phase || first == nil || brctr < first! {
            self.phase = phase
            first = brctr
            started = monotonicSeconds()
        }
        let elapsed = max(monotonicSeconds() - started, 0.001)
        let rate = Double(brctr - first!) / elapsed
        var line = "tt: \(phase): \(label.prefix)\(brctr)\(label.suffix)"
        if let target, target > brctr {
            line += " / \(target) (\(Int(Double(brctr) * 100 / Double(max(target, 1))))%)"
            if rate > 0 { line += ", \(Int(Double(target - brctr) / rate)) s left" }
        }
        if rate > 0 { line += ", \(Self.human(rate)) \(label.rate)" }
        if target == nil { line += ", \(Int(elapsed)) s so far" }
        fputs("\r\u{1b}[K" + line, stderr)
    }

    /// Clear the line (before the command prints its result or an error).
    func end() {
        if enabled { fputs("\r\u{1b}[K", stderr) }
    }

    private static func human(_ rate: Double) -> String {
        rate >= 1e6 ? "\((rate / 1e5).rounded() / 10) M" : rate >= 1e3 ? "\((rate / 1e2).rounded() / 10) k" : "\(Int(rate))"
    }
}

/// The branch count a location names, if it names one (the progress line's target).
func targetBrctr(_ location: ResolvedLocation) -> UInt64? {
    if case .exact(let b, _) = location.condition { return b }
    return nil
}

func printLine(_ s: String) {
    print(s)
    fflush(stdout)
}
