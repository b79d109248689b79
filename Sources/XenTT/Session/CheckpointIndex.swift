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
    /// Host seconds the index pass took to replay from the previous checkpoint (or the
    /// start) to this one, its stops and the saving excluded; nil in indexes of format 1.
    /// What `--jobs` balances its segments by: a Linux boot replays about 490 M
    /// instructions a second in its decompressor and 2.3 M in its `rdtsc` delay loops.
    public var replaySeconds: Double?

    public init(fingerprint: Fingerprint, backendState: [UInt64], replaySeconds: Double? = nil) {
        self.fingerprint = fingerprint
        self.backendState = backendState
        self.replaySeconds = replaySeconds
    }

    public var icount: UInt64 { fingerprint.icount }
    public var checkpoint: Checkpoint {
        Checkpoint(icount: fingerprint.icount, brctr: fingerprint.landmark.brctr, backendState: backendState)
    }
}

/// How far apart an index pass takes its checkpoints.
public enum IndexSpacing: Hashable, Sendable, CustomStringConvertible {
    /// Exactly this many instructions apart.
    case instructions(UInt64)
    /// About this many host seconds of replay apart (measured as the pass goes).
    case seconds(Double)

    /// `spacing N` or `seconds S`: the index file's second line.
    public var description: String {
        switch self {
        case .instructions(let n): return "spacing \(n)"
        case .seconds(let s): return "seconds \(s)"
        }
    }
}

/// Where the index pass found the recording's end: its icount and branch count, and the
/// host seconds from the last checkpoint (or the start) to it.
public struct IndexedEnd: Hashable, Sendable {
    public var icount: UInt64
    public var brctr: UInt64
    public var replaySeconds: Double

    public init(icount: UInt64, brctr: UInt64, replaySeconds: Double) {
        self.icount = icount
        self.brctr = brctr
        self.replaySeconds = replaySeconds
    }
}

/// A recording's checkpoint index (`tt index`): checkpoints `spacing` apart (instructions or
/// seconds of replay), made once by a replay from the start, kept in `StateFile.index`
/// (text, versioned) with their snapshots in `StateFile.indexImage`, which later replays
/// boot from. It belongs to the recording, not to one replay VM: `tt record -f`/`-D` remove
/// it with the recording.
///
/// Format 2 (one record a line, fields separated by one space, numbers decimal unless 0x):
///
///     tt-checkpoint-index 2
///     spacing <instructions>          (or: seconds <S>)
///     checkpoint <icount> <brctr> 0x<ip> 0x<cx> 0x<register crc32c> <milliseconds> <backend word>...
///     end <icount> <brctr> <milliseconds>
///     unresumable <icount>
///
/// Checkpoints are in increasing icount order; `<milliseconds>` is the host time the index
/// pass replayed since the previous checkpoint (`IndexedCheckpoint.replaySeconds`). `end`
/// (at most one, absent when the pass stopped at its budget) is the recording's end.
/// `unresumable` lines (last) name checkpoints whose snapshot QEMU loaded but could not run
/// on from (found by a run that tried; they are still compared when passed, never
/// restored). Format 1 (still read) has neither the milliseconds nor `end`, and only
/// `spacing`. Other versions are refused (65).
public struct CheckpointIndex: Hashable, Sendable {
    public static let magic = "tt-checkpoint-index"
    public static let version = 2

    /// The spacing asked for when the index was made (the last checkpoint may be closer).
    public var spacing: IndexSpacing
    public var checkpoints: [IndexedCheckpoint]
    /// The recording's end as the index pass reached it (nil: it stopped before, or format 1).
    public var end: IndexedEnd?
    /// Checkpoints (by icount) that a replay cannot resume from after loading them.
    public var unresumable: Set<UInt64> = []

    public init(spacing: IndexSpacing, checkpoints: [IndexedCheckpoint] = [], end: IndexedEnd? = nil) {
        self.spacing = spacing
        self.checkpoints = checkpoints
        self.end = end
    }

    public var text: String {
        var s = "\(Self.magic) \(Self.version)\n\(spacing)\n"
        func ms(_ seconds: Double?) -> String { String(Int64(((seconds ?? 0) * 1000).rounded())) }
        for c in checkpoints {
            let f = c.fingerprint
            s += "checkpoint \(f.icount) \(f.landmark.brctr) 0x\(String(f.landmark.ip, radix: 16)) 0x\(String(f.landmark.cx, radix: 16)) 0x\(String(f.registerHash, radix: 16)) \(ms(c.replaySeconds))"
            for w in c.backendState { s += " \(w)" }
            s += "\n"
        }
        if let end { s += "end \(end.icount) \(end.brctr) \(ms(end.replaySeconds))\n" }
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

    /// Parse an index file's text (format 1 or 2); `file` names it in errors.
    public init(parsing text: String, file: String) throws {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0 }
        if lines.last == "" { lines.removeLast() }
        func fail(_ n: Int, _ why: String) -> FormatError { FormatError(file: file, line: n, problem: why) }
        guard let head = lines.first else { throw fail(1, "empty, not a checkpoint index") }
        let h = head.split(separator: " ")
        guard h.count == 2, h[0] == Self.magic, let v = Int(h[1]) else { throw fail(1, "not a checkpoint index (no '\(Self.magic) \(Self.version)')") }
        guard v == 1 || v == Self.version else { throw fail(1, "checkpoint index format \(v); this tt reads formats 1 and \(Self.version) (make it again with tt index)") }
        let timed = v >= 2
        guard lines.count >= 2, case let s = lines[1].split(separator: " "), s.count == 2 else {
            throw fail(2, "expected 'spacing N' with N > 0\(timed ? " or 'seconds S' with S > 0" : "")")
        }
        if s[0] == "spacing", let n = UInt64(s[1]), n > 0 {
            spacing = .instructions(n)
        } else if timed, s[0] == "seconds", let seconds = Double(s[1]), seconds > 0, seconds.isFinite {
            spacing = .seconds(seconds)
        } else {
            throw fail(2, "expected 'spacing N' with N > 0\(timed ? " or 'seconds S' with S > 0" : "")")
        }
        checkpoints = []
        end = nil
        func hex(_ s: Substring) -> UInt64? { s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : nil }
        func seconds(_ s: Substring) -> Double? { UInt64(s).map { Double($0) / 1000 } }
        for (i, line) in lines.enumerated().dropFirst(2) {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            if f.first == "unresumable" {
                guard f.count == 2, let icount = UInt64(f[1]), checkpoints.contains(where: { $0.icount == icount }) else {
                    throw fail(i + 1, "expected 'unresumable ICOUNT' naming a checkpoint")
                }
                unresumable.insert(icount)
                continue
            }
            guard unresumable.isEmpty else { throw fail(i + 1, "a \(f.first ?? "") line after the 'unresumable' lines") }
            if timed, f.first == "end" {
                guard end == nil, f.count == 4, let icount = UInt64(f[1]), let brctr = UInt64(f[2]), let s = seconds(f[3]) else {
                    throw fail(i + 1, "expected one 'end ICOUNT BRCTR MILLISECONDS'")
                }
                guard icount > (checkpoints.last?.icount ?? 0), brctr >= (checkpoints.last?.fingerprint.landmark.brctr ?? 0) else {
                    throw fail(i + 1, "the end (icount \(icount), brctr \(brctr)) is not after the last checkpoint")
                }
                end = IndexedEnd(icount: icount, brctr: brctr, replaySeconds: s)
                continue
            }
            guard end == nil else { throw fail(i + 1, "a checkpoint after the 'end' line") }
            let fixed = timed ? 7 : 6
            guard f.count >= fixed, f[0] == "checkpoint", let icount = UInt64(f[1]), let brctr = UInt64(f[2]),
                  let ip = hex(f[3]), let cx = hex(f[4]), let crc = hex(f[5]), crc <= UInt64(UInt32.max) else {
                throw fail(i + 1, "expected 'checkpoint ICOUNT BRCTR 0xIP 0xCX 0xCRC\(timed ? " MILLISECONDS" : "") WORD...'")
            }
            var took: Double?
            if timed {
                guard let s = seconds(f[6]) else { throw fail(i + 1, "the milliseconds are not a decimal number") }
                took = s
            }
            let words = f.dropFirst(fixed).map { UInt64($0) }
            guard !words.contains(nil) else { throw fail(i + 1, "a backend word is not a decimal number") }
            guard icount > (checkpoints.last?.icount ?? 0) else { throw fail(i + 1, "icount \(icount) not after the previous checkpoint's") }
            guard brctr >= (checkpoints.last?.fingerprint.landmark.brctr ?? 0) else {
                throw fail(i + 1, "brctr \(brctr) below the previous checkpoint's")
            }
            checkpoints.append(IndexedCheckpoint(
                fingerprint: Fingerprint(landmark: Landmark(ip: ip, brctr: brctr, cx: cx), icount: icount, registerHash: UInt32(crc)),
                backendState: words.map { $0! }, replaySeconds: took))
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

    /// The host seconds the index pass took to replay from the start to a point (given by
    /// its icount when known, else by its branch count), interpolated linearly between the
    /// checkpoints' measured times, and past the last one at the last stretch's pace. Nil
    /// when the index holds no times (format 1).
    public func replaySeconds(toICount icount: UInt64?, brctr: UInt64) -> Double? {
        // (icount, brctr, seconds since the start), from the start on.
        var points: [(icount: UInt64, brctr: UInt64, seconds: Double)] = [(0, 0, 0)]
        for c in checkpoints {
            guard let s = c.replaySeconds else { return nil }
            points.append((c.icount, c.fingerprint.landmark.brctr, points.last!.seconds + s))
        }
        if let end { points.append((end.icount, end.brctr, points.last!.seconds + end.replaySeconds)) }
        guard points.count >= 2 else { return nil }
        func position(_ p: (icount: UInt64, brctr: UInt64, seconds: Double)) -> Double { Double(icount != nil ? p.icount : p.brctr) }
        let x = Double(icount ?? brctr)
        // The stretch holding x (the last one for an x past it).
        var k = 1
        while k < points.count - 1 && position(points[k]) < x { k += 1 }
        let a = points[k - 1], b = points[k]
        let width = position(b) - position(a)
        guard width > 0 else { return b.seconds }
        return max(0, a.seconds + (b.seconds - a.seconds) * (x - position(a)) / width)
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
