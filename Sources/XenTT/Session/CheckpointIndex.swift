import SystemPackage
import TTSystem

/// What a replay looked like at one moment, to tell whether another replay passing the same
/// instruction count is the same run: the landmark (ip, brctr, cx), icount, and a hash of
/// the registers the backend reads (QEMU: CRC-32C of the gdbstub's `g` packet bytes).
public struct Fingerprint: Hashable, Sendable, CustomStringConvertible {
    public var landmark: Landmark
    public var icount: UInt64
    public var registerHash: UInt32

    public init(landmark: Landmark, icount: UInt64, registerHash: UInt32) {
        self.landmark = landmark
        self.icount = icount
        self.registerHash = registerHash
    }

    /// `0x<ip>:<brctr>:0x<cx> icount N registers 0x<crc>`.
    public var description: String {
        "\(landmark) icount \(icount) registers 0x\(String(registerHash, radix: 16))"
    }
}

/// One checkpoint of a recording's index: a snapshot in the index image at `icount`, the
/// backend's counters there (`Checkpoint.backendState`, as `saveCheckpoint` made them) and
/// the fingerprint every later replay passing that icount is compared with.
public struct IndexedCheckpoint: Hashable, Sendable {
    public var fingerprint: Fingerprint
    public var backendState: [UInt64]

    public init(fingerprint: Fingerprint, backendState: [UInt64]) {
        self.fingerprint = fingerprint
        self.backendState = backendState
    }

    public var icount: UInt64 { fingerprint.icount }
    public var checkpoint: Checkpoint {
        Checkpoint(icount: fingerprint.icount, brctr: fingerprint.landmark.brctr, backendState: backendState)
    }
}

/// A recording's checkpoint index (`tt index`): checkpoints every `spacing` instructions,
/// made once by a replay from the start, kept in `StateFile.index` (text, versioned) with
/// their snapshots in `StateFile.indexImage`, which later replays boot from. It belongs to
/// the recording, not to one replay VM: `tt record -f`/`-D` remove it with the recording.
///
/// Format (one record a line, fields separated by one space, numbers decimal unless 0x):
///
///     tt-checkpoint-index 1
///     spacing <instructions>
///     checkpoint <icount> <brctr> 0x<ip> 0x<cx> 0x<register crc32c> <backend word>...
///     unresumable <icount>
///
/// Checkpoints are in increasing icount order. `unresumable` lines (after them) name
/// checkpoints whose snapshot QEMU loaded but could not run on from (found by a run that
/// tried; they are still compared when passed, never restored). Unknown versions are refused (65).
public struct CheckpointIndex: Hashable, Sendable {
    public static let magic = "tt-checkpoint-index"
    public static let version = 1

    /// Instructions between checkpoints asked for when the index was made (the last one may be closer).
    public var spacing: UInt64
    public var checkpoints: [IndexedCheckpoint]
    /// Checkpoints (by icount) that a replay cannot resume from after loading them.
    public var unresumable: Set<UInt64> = []

    public init(spacing: UInt64, checkpoints: [IndexedCheckpoint] = []) {
        self.spacing = spacing
        self.checkpoints = checkpoints
    }

    public var text: String {
        var s = "\(Self.magic) \(Self.version)\nspacing \(spacing)\n"
        for c in checkpoints {
            let f = c.fingerprint
            s += "checkpoint \(f.icount) \(f.landmark.brctr) 0x\(String(f.landmark.ip, radix: 16)) 0x\(String(f.landmark.cx, radix: 16)) 0x\(String(f.registerHash, radix: 16))"
            for w in c.backendState { s += " \(w)" }
            s += "\n"
        }
        for i in unresumable.sorted() { s += "unresumable \(i)\n" }
        return s
    }

    public struct FormatError: Error, CustomStringConvertible, ExitStatusProviding {
        public let file: String
        public let line: Int
        public let problem: String
        public var description: String { "\(file): line \(line): \(problem)" }
        public var exitStatus: Int32 { ExitStatus.dataError }
    }

    /// Parse an index file's text; `file` names it in errors.
    public init(parsing text: String, file: String) throws {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0 }
        if lines.last == "" { lines.removeLast() }
        func fail(_ n: Int, _ why: String) -> FormatError { FormatError(file: file, line: n, problem: why) }
        guard let head = lines.first else { throw fail(1, "empty, not a checkpoint index") }
        let h = head.split(separator: " ")
        guard h.count == 2, h[0] == Self.magic, let v = Int(h[1]) else { throw fail(1, "not a checkpoint index (no '\(Self.magic) \(Self.version)')") }
        guard v == Self.version else { throw fail(1, "checkpoint index format \(v); this tt reads format \(Self.version) (make it again with tt index)") }
        guard lines.count >= 2, case let s = lines[1].split(separator: " "), s.count == 2, s[0] == "spacing", let spacing = UInt64(s[1]), spacing > 0 else {
            throw fail(2, "expected 'spacing N' with N > 0")
        }
        self.spacing = spacing
        checkpoints = []
        for (i, line) in lines.enumerated().dropFirst(2) {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            if f.first == "unresumable" {
                guard f.count == 2, let icount = UInt64(f[1]), checkpoints.contains(where: { $0.icount == icount }) else {
                    throw fail(i + 1, "expected 'unresumable ICOUNT' naming a checkpoint")
                }
                unresumable.insert(icount)
                continue
            }
            guard unresumable.isEmpty else { throw fail(i + 1, "a checkpoint after the 'unresumable' lines") }
            func hex(_ s: Substring) -> UInt64? { s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : nil }
            guard f.count >= 6, f[0] == "checkpoint", let icount = UInt64(f[1]), let brctr = UInt64(f[2]),
                  let ip = hex(f[3]), let cx = hex(f[4]), let crc = hex(f[5]), crc <= UInt64(UInt32.max) else {
                throw fail(i + 1, "expected 'checkpoint ICOUNT BRCTR 0xIP 0xCX 0xCRC WORD...'")
            }
            let words = f.dropFirst(6).map { UInt64($0) }
            guard !words.contains(nil) else { throw fail(i + 1, "a backend word is not a decimal number") }
            guard icount > (checkpoints.last?.icount ?? 0) else { throw fail(i + 1, "icount \(icount) not after the previous checkpoint's") }
            checkpoints.append(IndexedCheckpoint(
                fingerprint: Fingerprint(landmark: Landmark(ip: ip, brctr: brctr, cx: cx), icount: icount, registerHash: UInt32(crc)),
                backendState: words.map { $0! }))
        }
    }

    /// The index of `state`, nil when it has none.
    public static func load(_ state: StateDirectory) throws -> CheckpointIndex? {
        guard state.fileExists(StateFile.index) else { return nil }
        return try CheckpointIndex(parsing: try state.read(StateFile.index), file: state.file(StateFile.index).string)
    }

    public func save(_ state: StateDirectory) throws {
        try state.write(StateFile.index, text)
    }

    /// The checkpoint at exactly `icount`, if there is one.
    public func checkpoint(at icount: UInt64) -> IndexedCheckpoint? {
        checkpoints.first { $0.icount == icount }
    }
}

/// A replay that is not the run its index was made from: at `expected.icount` it found `actual`.
public struct Divergence: Error, CustomStringConvertible, ExitStatusProviding, Sendable {
    public var expected: Fingerprint
    public var actual: Fingerprint
    /// 1-based number of the checkpoint in the index.
    public var number: Int

    public init(expected: Fingerprint, actual: Fingerprint, number: Int) {
        self.expected = expected
        self.actual = actual
        self.number = number
    }

    /// What differs: "landmark", "icount", "registers".
    public var differences: [String] {
        var d: [String] = []
        if expected.landmark != actual.landmark { d.append("landmark") }
        if expected.icount != actual.icount { d.append("icount") }
        if expected.registerHash != actual.registerHash { d.append("registers") }
        return d
    }

    public var description: String {
        "divergence at checkpoint \(number) (icount \(expected.icount)): \(differences.joined(separator: ", ")) differ: expected \(expected), actual \(actual)"
    }

    public var exitStatus: Int32 { ExitStatus.divergence }
}

/// What a replay does when it finds itself diverging from the index (`--on-divergence`).
public enum DivergencePolicy: String, Sendable, CaseIterable {
    /// Print expected vs actual on stderr and go on.
    case warn
    /// Stop with `Divergence` (exit status `ExitStatus.divergence`).
    case abort
}
