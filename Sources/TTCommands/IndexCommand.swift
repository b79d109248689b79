import ArgumentParser
import QEMUBackend
import XenTT

extension DivergencePolicy: ExpressibleByArgument {}

/// `--on-divergence warn|abort` of the commands whose runs pass indexed checkpoints.
struct DivergenceOptions: ParsableArguments {
    @Option(name: .customLong("on-divergence"),
            help: ArgumentHelp("At an indexed checkpoint where the replay differs from the index (landmark, icount or register hash): warn (print expected vs actual, go on) or abort (exit status 3).",
                               valueName: "warn|abort"))
    var policy: DivergencePolicy = .abort

    func apply(to session: ReplaySession) { session.divergencePolicy = policy }
}

/// `tt index`: the recording's checkpoint index, made by one replay from the start.
struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Replay the recording once and keep checkpoints every S seconds of replay (or N instructions) for later replays.",
        discussion: """
            Each checkpoint is a QEMU snapshot in the index image (STATEDIR/index.qcow2, which \
            every later replay boots with) and, in STATEDIR/index.checkpoints, the plugin's \
            counters there and a fingerprint: the landmark (eip:brctr:cx), icount and a CRC-32C \
            of the registers. Runs to an exact WHERE:brctr then start from the latest checkpoint \
            before it; runs that pass a checkpoint compare the fingerprint (--on-divergence). \
            Each new checkpoint is loaded and run on a little: one QEMU cannot run on from is \
            marked unresumable (never restored, still compared). The replay time between \
            checkpoints is kept too: trace-task --jobs balances its segments by it. An existing \
            index is replaced. Needs no live replay (tt replay -K first). --list prints the \
            index without replaying.
            """)

    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Option(help: ArgumentHelp("Instead of --seconds: exactly N instructions between checkpoints.", valueName: "N"))
    var every: UInt64?
    @Option(help: ArgumentHelp("S seconds of replay between checkpoints (default 1): the replay is paused after S seconds wherever it is.", valueName: "S"))
    var seconds: Double?
    @Option(help: ArgumentHelp("Stop taking checkpoints once the index's images reach MB megabytes (the last one may pass it).", valueName: "MB"))
    var budget: UInt64 = 4096
    @Flag(help: "Print the recording's index (no replay).")
    var list = false
    @OptionGroup var state: StateOptions

    func validate() throws {
        if every != nil && seconds != nil { throw ValidationError("give --every or --seconds, not both") }
        if every == 0 { throw ValidationError("--every must be > 0") }
        if let seconds, !(seconds > 0) { throw ValidationError("--seconds must be > 0") }
        if budget == 0 { throw ValidationError("--budget must be > 0") }
    }

    func run() throws {
        let scope = try SessionScope(state, debug: debug)
        try scope.run { scope in
            let dir = scope.state
            if list {
                guard let index = try CheckpointIndex.load(dir) else {
                    printLine("tt: \(dir.name) has no checkpoint index (make one with tt index)")
                    return
                }
                for line in Self.listing(index, dir: dir) { printLine(line) }
                return
            }
            guard scope.backend.capabilities.contains(.seeking) else {
                throw SessionError.unsupported(operation: "make a checkpoint index", backend: scope.backend.name)
            }
            if let vm = scope.backend.vmDescription { throw StateError.vmRunning(dir.path, vm: vm) }
            // The old index goes first: the new replay must boot from the recording's own image.
            for f in [StateFile.index, StateFile.indexImage, StateFile.indexHits] + (0..<StateFile.maxDisks).map(StateFile.indexDiskOverlay) { dir.remove(f) }
            scope.session.timeline.setIndex(nil)
            let started = monotonicSeconds()
            try scope.bootOwn()
            let spacing: IndexSpacing = every.map { .instructions($0) } ?? .seconds(seconds ?? Self.defaultSeconds)
            let budgetBytes = budget * 1_048_576
            var overBudget = false
            let progress = ProgressLine()
            defer { progress.end() }
            let index = try scope.session.buildIndex(
                spacing: spacing,
                keepGoing: { _ in
                    overBudget = Self.imageBytes(dir) >= budgetBytes
                    return !overBudget
                },
                progress: progress.reporter("indexing \(dir.name)"))
            progress.end()
            try index.save(dir)
            let bytes = Self.imageBytes(dir, index: true)
            let last = index.checkpoints.last.map { ", the last at icount \($0.icount)" } ?? ""
            printLine("tt: indexed \(dir.name): \(index.checkpoints.count) checkpoints\(Self.apart(spacing))\(last); images \(bytes / 1_048_576) MB; \(String(format: "%.1f", monotonicSeconds() - started)) s")
            if !index.unresumable.isEmpty {
                let list = index.checkpoints.enumerated().filter { index.unresumable.contains($0.element.icount) }.map { String($0.offset + 1) }
                printLine("tt: \(index.unresumable.count) of \(index.checkpoints.count) checkpoints are unresumable (QEMU cannot run on from their snapshots; they are checked when passed, never restored): \(list.joined(separator: ", "))")
            }
            if overBudget { printLine("tt: stopped at the budget of \(budget) MB; later runs replay from the last checkpoint") }
        }
    }

    /// Seconds of replay between checkpoints when neither --every nor --seconds is given:
    /// any point of the recording is then about a second of replay from a checkpoint.
    static let defaultSeconds = 1.0

    /// " every N instructions" or " about S s of replay apart".
    static func apart(_ spacing: IndexSpacing) -> String {
        switch spacing {
        case .instructions(let n): return " every \(n) instructions"
        case .seconds(let s): return " about \(s) s of replay apart"
        }
    }

    /// Bytes of the replay's images (while indexing) or of the index's (`index: true`).
    static func imageBytes(_ dir: StateDirectory, index: Bool = false) -> UInt64 {
        let names = index ? [StateFile.indexImage] + (0..<StateFile.maxDisks).map(StateFile.indexDiskOverlay)
                          : [StateFile.replaySnapshot] + (0..<StateFile.maxDisks).map(StateFile.replayDiskOverlay)
        return names.compactMap { dir.size($0) }.reduce(0, +)
    }

    /// The index as `tt index --list` prints it (and `tt log summary` beside a recording's
    /// log): a head line (count, spacing, images), then one line per checkpoint (icount,
    /// brctr, landmark, register hash, the unresumable mark).
    static func listing(_ index: CheckpointIndex, dir: StateDirectory) -> [String] {
        var lines = ["checkpoint index of \(dir.name): \(index.checkpoints.count) checkpoints, \(index.spacing); images \(Self.imageBytes(dir, index: true) / 1_048_576) MB"]
        func took(_ s: Double?) -> String { s.map { String(format: " replayed %.3f s", $0) } ?? "" }
        for (i, c) in index.checkpoints.enumerated() {
            let mark = index.unresumable.contains(c.icount) ? " (unresumable: QEMU cannot run on from its snapshot)" : ""
            lines.append("checkpoint \(i + 1) icount \(c.icount) brctr \(c.fingerprint.landmark.brctr) at \(c.fingerprint.landmark) registers 0x\(String(c.fingerprint.registerHash, radix: 16))\(took(c.replaySeconds))\(mark)")
        }
        if let end = index.end { lines.append("end icount \(end.icount) brctr \(end.brctr)\(took(end.replaySeconds))") }
        return lines
    }
}
