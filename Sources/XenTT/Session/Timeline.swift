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
            loadHits(state)
        } catch {
            indexProblem = "\(error); index not used"
        }
    }

    /// Use `index` (tests; `tt index` after making one), or none.
    public func setIndex(_ index: CheckpointIndex?) {
        self.index = index
        indexProblem = nil
        hits = [:]
    }

    // MARK: arrivals counted up to indexed checkpoints (`WHERE#N`)

    /// hits[address][icount]: arrivals at the address from the start of the replay up to the
    /// indexed checkpoint at icount, as a `WHERE#N` run that passed it counted them. Kept in
    /// `StateFile.indexHits` (versioned text, 0600, written atomically):
    ///
    ///     tt-index-hits 1
    ///     hits 0x<address> <icount> <count>
    ///
    /// A malformed or other-version file is ignored (the runs count from the start).
    public private(set) var hits: [UInt64: [UInt64: UInt64]] = [:]
    public static let hitsMagic = "tt-index-hits 1"

    private func loadHits(_ state: StateDirectory) {
        guard let text = state.readIfPresent(StateFile.indexHits) else { return }
        var lines = text.split(separator: "\n")
        guard lines.first.map(String.init) == Self.hitsMagic else { return }
        lines.removeFirst()
        var loaded: [UInt64: [UInt64: UInt64]] = [:]
        for line in lines {
            let f = line.split(separator: " ")
            guard f.count == 4, f[0] == "hits", f[1].hasPrefix("0x"), let address = UInt64(f[1].dropFirst(2), radix: 16),
                  let icount = UInt64(f[2]), let count = UInt64(f[3]) else { return }
            loaded[address, default: [:]][icount] = count
        }
        hits = loaded
    }

    /// Whether arrivals at `address` counted up to `checkpoint` are unambiguous: the stop is
    /// not at the address itself (an arrival exactly there would be counted by one run and
    /// not by another, depending on where it resumed), and no transfer is pending there
    /// (the raw count is the landmark's: the next instruction executed is the landmark's).
    public static func hitsUsable(_ checkpoint: IndexedCheckpoint, for address: UInt64) -> Bool {
        checkpoint.fingerprint.landmark.ip != address && checkpoint.backendState.first == checkpoint.fingerprint.landmark.brctr
    }

    /// A run counting arrivals at `address` passed the indexed checkpoint at `icount` having
    /// counted `count`: keep it (when the checkpoint's count is usable).
    public func recordHits(_ address: UInt64, icount: UInt64, count: UInt64) throws {
        guard let (_, entry) = indexed(at: icount), Self.hitsUsable(entry, for: address), hits[address]?[icount] != count else { return }
        hits[address, default: [:]][icount] = count
        guard let state else { return }
        var text = Self.hitsMagic + "\n"
        for a in hits.keys.sorted() {
            for (i, c) in hits[a]!.sorted(by: { $0.key < $1.key }) { text += "hits 0x\(String(a, radix: 16)) \(i) \(c)\n" }
        }
        try state.write(StateFile.indexHits, text)
    }

    /// The latest resumable indexed checkpoint with fewer than `n` arrivals at `address`
    /// counted up to it, and that count: where the `n`-th arrival is counted from.
    public func latestHits(at address: UInt64, below n: UInt64) -> (checkpoint: Checkpoint, count: UInt64)? {
        guard let index, let counted = hits[address] else { return nil }
        let usable = index.checkpoints.filter { c in
            !index.unresumable.contains(c.icount) && !c.backendState.isEmpty && Self.hitsUsable(c, for: address)
                && (counted[c.icount].map { $0 < n } ?? false)
        }
        return usable.max { $0.icount < $1.icount }.map { ($0.checkpoint, counted[$0.icount]!) }
    }

    /// The indexed checkpoint at exactly `icount` and its 1-based number, if there is one.
    public func indexed(at icount: UInt64) -> (number: Int, checkpoint: IndexedCheckpoint)? {
        guard let index, let i = index.checkpoints.firstIndex(where: { $0.icount == icount }) else { return nil }
        return (i + 1, index.checkpoints[i])
    }

    /// The resumable indexed checkpoint taken exactly at `landmark`, if there is one.
    public func indexed(at landmark: Landmark) -> Checkpoint? {
        guard let index else { return nil }
        return index.checkpoints.first { $0.fingerprint.landmark == landmark && !index.unresumable.contains($0.icount) }?.checkpoint
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
