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
/// the wanted branch count); the backend only saves and restores. The list belongs to the
/// live replay VM (its snapshots live in that VM's image), so it starts anew with each boot.
public final class Timeline {
    /// Where the list is kept between commands (nil: in memory only).
    public let state: StateDirectory?
    /// Landings closer than this many instructions after an earlier checkpoint get none.
    public var spacing: UInt64 = 500_000
    /// Every checkpoint, in icount order; the first is always `Checkpoint.start`.
    public private(set) var checkpoints: [Checkpoint]

    public init(state: StateDirectory? = nil) {
        self.state = state
        let text = state?.readIfPresent(StateFile.checkpoints) ?? ""
        let saved = text.split(separator: "\n").compactMap(Checkpoint.init(line:)).filter { $0.icount > 0 }
        checkpoints = [.start] + saved.sorted { $0.icount < $1.icount }
    }

    /// A new replay VM: only its start can be returned to.
    public func reset() {
        checkpoints = [.start]
        state?.remove(StateFile.checkpoints)
    }

    /// Whether a checkpoint at `position` is worth its cost (a snapshot, ~0.1 s).
    public func wantsCheckpoint(at position: Position) -> Bool {
        guard let icount = position.icount, icount > 0 else { return false }
        return !checkpoints.contains { $0.icount <= icount && icount - $0.icount < spacing }
    }

    public func add(_ checkpoint: Checkpoint) throws {
        checkpoints.append(checkpoint)
        checkpoints.sort { $0.icount < $1.icount }
        guard let state else { return }
        try state.write(StateFile.checkpoints, checkpoints.dropFirst().map { $0.line + "\n" }.joined())
    }

    /// The latest checkpoint strictly before branch count `brctr` (the start for 0): from
    /// there, running forwards reaches every moment with that count.
    public func latest(before brctr: UInt64) -> Checkpoint {
        checkpoints.filter { $0.icount == 0 || $0.brctr < brctr }.max { $0.icount < $1.icount } ?? .start
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
