import SystemPackage
import TTSystem

/// A moment of a replay the VM can be brought back to: its instruction count, the branch
/// count of its landmark, and what the backend needs besides the VM's own state to resume
/// counting exactly there (QEMU: the plugin's counters, which are not in its snapshots).
public struct Checkpoint: Hashable, Sendable {
    /// Instructions executed since the replay began (0: its start).
    public var icount: UInt64
    /// The landmark's branch count there.
    public var brctr: UInt64
    /// Backend words, opaque to the timeline (stored and handed back as they are).
    public var backendState: [UInt64]

    public init(icount: UInt64, brctr: UInt64, backendState: [UInt64]) {
        self.icount = icount
        self.brctr = brctr
        self.backendState = backendState
    }

    /// The beginning of the recording: nothing executed, every counter 0.
    public static let start = Checkpoint(icount: 0, brctr: 0, backendState: [])

    /// `icount brctr word...`, one line of `StateFile.checkpoints`.
    var line: String { ([icount, brctr] + backendState).map { String($0) }.joined(separator: " ") }

    init?(line: Substring) {
        let f = line.split(separator: " ").map { UInt64($0) }
        guard f.count >= 2, !f.contains(nil) else { return nil }
        self.init(icount: f[0]!, brctr: f[1]!, backendState: f.dropFirst(2).map { $0! })
    }
}

/// The moments of one live replay that can be returned to, and the order of moments.
///
/// The session asks the timeline where to checkpoint (not closer than `spacing`
/// instructions after another) and which checkpoint to go back to (the latest one before
/// the wanted branch count); the backend only saves and restores. Two kinds of checkpoints:
/// the recording's index (`tt index`, `CheckpointIndex`), whose snapshots every replay VM
/// boots with, and landings of the live replay VM (their snapshots live in that VM's image,
/// so that list starts anew with each boot).
public final class Timeline {
    /// Where the list is kept between commands (nil: in memory only).
    public let state: StateDirectory?
    /// Landings closer than this many instructions after an earlier checkpoint get none.
    public var spacing: UInt64 = 500_000
    /// The recording's checkpoint index, when it has one (with its snapshot image).
    public private(set) var index: CheckpointIndex?
    /// Why the index could not be used (the timeline then works without it), for a warning.
    public private(set) var indexProblem: String?
    /// Checkpoints taken at landings of the live replay VM, in icount order.
    private var landings: [Checkpoint]

    /// Every checkpoint, in icount order; the first is always `Checkpoint.start`.
    public var checkpoints: [Checkpoint] {
        var all = [Checkpoint.start] + (index.map { i in i.checkpoints.filter { !i.unresumable.contains($0.icount) }.map(\.checkpoint) } ?? [])
        for l in landings where !all.contains(where: { $0.icount == l.icount }) { all.append(l) }
        return all.sorted { $0.icount < $1.icount }
    }

    public init(state: StateDirectory? = nil) {
        self.state = state
        let text = state?.readIfPresent(StateFile.checkpoints) ?? ""
        let saved = text.split(separator: "\n").compactMap(Checkpoint.init(line:)).filter { $0.icount > 0 }
        landings = saved.sorted { $0.icount < $1.icount }
        if let state { loadIndex(state) }
    }

    /// The index is used when both its file and its snapshot image are there; a damaged
    /// file is reported (`indexProblem`) and ignored: it costs speed, never exactness.
    private func loadIndex(_ state: StateDirectory) {
        do {
            guard let loaded = try CheckpointIndex.load(state) else { return }
            guard state.fileExists(StateFile.indexImage) else {
                indexProblem = "\(state.file(StateFile.index)): its snapshot image \(StateFile.indexImage) is missing; index not used (make it again with tt index)"
                return
            }
            index = loaded
        } catch {
            indexProblem = "\(error); index not used"
        }
    }

    /// Use `index` (tests; `tt index` after making one), or none.
    public func setIndex(_ index: CheckpointIndex?) {
        self.index = index
        indexProblem = nil
    }

    /// The indexed checkpoint at exactly `icount` and its 1-based number, if there is one.
    public func indexed(at icount: UInt64) -> (number: Int, checkpoint: IndexedCheckpoint)? {
        guard let index, let i = index.checkpoints.firstIndex(where: { $0.icount == icount }) else { return nil }
        return (i + 1, index.checkpoints[i])
    }

    /// QEMU loaded the checkpoint at `icount` but could not run on from it: never restore it
    /// again (an indexed one is marked in the index file; a landing is forgotten).
    public func markUnresumable(_ icount: UInt64) throws {
        if landings.contains(where: { $0.icount == icount }) {
            landings.removeAll { $0.icount == icount }
            if let state { try state.write(StateFile.checkpoints, landings.map { $0.line + "\n" }.joined()) }
        }
        if var index, index.checkpoints.contains(where: { $0.icount == icount }) {
            index.unresumable.insert(icount)
            self.index = index
            if let state { try index.save(state) }
        }
    }

    /// A new replay VM: only its start and the index's checkpoints can be returned to.
    public func reset() {
        landings = []
        state?.remove(StateFile.checkpoints)
    }

    /// Whether a checkpoint at `position` is worth its cost (a snapshot, ~0.1 s).
    public func wantsCheckpoint(at position: Position) -> Bool {
        guard let icount = position.icount, icount > 0 else { return false }
        return !checkpoints.contains { $0.icount <= icount && icount - $0.icount < spacing }
    }

    public func add(_ checkpoint: Checkpoint) throws {
        landings.append(checkpoint)
        landings.sort { $0.icount < $1.icount }
        guard let state else { return }
        try state.write(StateFile.checkpoints, landings.map { $0.line + "\n" }.joined())
    }

    /// The latest checkpoint strictly before branch count `brctr` (the start for 0): from
    /// there, running forwards reaches every moment with that count.
    public func latest(before brctr: UInt64) -> Checkpoint {
        checkpoints.filter { $0.icount == 0 || $0.brctr < brctr }.max { $0.icount < $1.icount } ?? .start
    }

    /// The latest checkpoint at or before instruction count `icount`.
    public func latest(atOrBeforeICount icount: UInt64) -> Checkpoint {
        checkpoints.filter { $0.icount <= icount }.max { $0.icount < $1.icount } ?? .start
    }

    /// Whether the exact point (address, brctr, cx) comes before `landmark` in the run: the
    /// one ordering of moments. Across branch counts the count decides; within one, code
    /// runs straight, so addresses only go up, and a `rep` instruction's count register only
    /// goes down. A point without cx at the landmark's address is not before it.
    public static func isBefore(address: UInt64, brctr: UInt64, cx: UInt64?, _ landmark: Landmark) -> Bool {
        if brctr != landmark.brctr { return brctr < landmark.brctr }
        if address != landmark.ip { return address < landmark.ip }
        if let cx { return cx > landmark.cx }
        return false
    }
}
