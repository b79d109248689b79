// The replay log's on-disk format, version 1 (docs/replay-log-format.md is the
// authority; every offset below is named there).
import CCRC32C
import SystemPackage
import TTSystem

/// Constants of format version 1. All multi-byte fields are little-endian.
public enum ReplayLogFormat {
    /// Major version: a reader refuses a file with another one.
    public static let version: UInt16 = 1
    /// Minor version written by this code; readers accept any minor of their major.
    public static let minorVersion: UInt16 = 0
    /// File header magic: 0x89 "TTLOG" CR LF (the high byte and CR LF catch 7-bit and
    /// text-mode transfers, as PNG's does).
    public static let magic: [UInt8] = [0x89, 0x54, 0x54, 0x4C, 0x4F, 0x47, 0x0D, 0x0A]
    /// The byte-order mark as a u32; in the file its bytes are 04 03 02 01.
    public static let byteOrderMark: UInt32 = 0x0102_0304
    /// Bytes of the file header (it occupies the first slot; entries start at `slotSize`).
    public static let fileHeaderSize = 128
    /// Bytes of an entry header, at the start of the entry's first slot.
    public static let entryHeaderSize = 80
    /// The entry marker as a u32; in the file its bytes are E5 54 54 45 ("\u{E5}TTE").
    public static let entryMarker: UInt32 = 0x4554_54E5
    /// Largest payload an entry may carry.
    public static let maxPayloadLength = 1 << 20
    /// Allowed slot sizes: powers of two in this range.
    public static let minSlotSize = 128
    public static let maxSlotSize = 65536
    public static let defaultSlotSize: UInt32 = 128
    /// Largest vCPU count a header may declare.
    public static let maxVCPUs = 4096
    /// Domain ids at or above this are reserved by Xen (DOMID_FIRST_RESERVED).
    public static let domidLimit: UInt16 = 0x7FF0
    /// Sequence numbers are below 2^63 (so that index + 1 never wraps).
    public static let maxEntryIndex: UInt64 = 1 << 63
    /// Producer string field width (UTF-8, NUL-padded).
    public static let producerFieldSize = 64

    // Entry header field offsets.
    static let offMarker = 0, offLength = 4, offType = 8, offDomid = 10, offVCPU = 12, offFlags = 14
    static let offInfo = 16, offCRC = 20, offIndex = 24
    static let offIP = 32, offBrctr = 40, offRCX = 48, offTSC = 56, offCR3 = 64, offReserved = 72

    /// Slots an entry with `payloadLength` bytes of payload occupies.
    @inline(__always)
    public static func slotCount(payloadLength: Int, slotSize: Int) -> Int {
        (entryHeaderSize + payloadLength + slotSize - 1) / slotSize
    }
}

/// CRC-32C of byte ranges (Castagnoli; the same as iSCSI's and ext4's).
public enum CRC32C {
    @inline(__always)
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return tt_crc32c_update(crc, base, bytes.count)
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }

    /// The checksum of an entry laid out at `entry` (`byteCount` bytes, whole slots):
    /// every byte except the CRC field itself.
    @inline(__always)
    static func entryChecksum(_ entry: UnsafeRawPointer, byteCount: Int) -> UInt32 {
        let head = tt_crc32c_update(0, entry, ReplayLogFormat.offCRC)
        let rest = ReplayLogFormat.offCRC + 4
        return tt_crc32c_update(head, entry + rest, byteCount - rest)
    }
}

/// The vCPU state stamped on every entry.
public struct CPUState: Hashable, Sendable {
    /// Instruction pointer (rip/eip) when the entry was written.
    public var ip: UInt64
    /// The vCPU's branch counter: taken control transfers so far (see the format doc for
    /// branch entries' stamp rule).
    public var brctr: UInt64
    /// rcx/ecx: tells apart iterations of a `rep` instruction at one (ip, brctr).
    public var rcx: UInt64
    /// Time-stamp counter as the guest sees it.
    public var tsc: UInt64
    /// Page-table base (cr3): tells apart address spaces; 0 when the producer does not know it.
    public var cr3: UInt64

    public init(ip: UInt64 = 0, brctr: UInt64 = 0, rcx: UInt64 = 0, tsc: UInt64 = 0, cr3: UInt64 = 0) {
        self.ip = ip
        self.brctr = brctr
        self.rcx = rcx
        self.tsc = tsc
        self.cr3 = cr3
    }
}

/// An entry's event type: a u16 in the file. Types this code does not know are kept as
/// numbers, named "unknown(N)", and skipped by length — never an error by themselves.
public struct ReplayEventType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let sessionStart = ReplayEventType(rawValue: 1)
    public static let sessionEnd = ReplayEventType(rawValue: 2)
    public static let traceOn = ReplayEventType(rawValue: 3)
    public static let traceOff = ReplayEventType(rawValue: 4)
    public static let landmark = ReplayEventType(rawValue: 5)
    public static let interrupt = ReplayEventType(rawValue: 6)
    public static let clockRead = ReplayEventType(rawValue: 7)
    public static let deviceInput = ReplayEventType(rawValue: 8)
    public static let consoleOutput = ReplayEventType(rawValue: 9)
    /// Branch records in the 32-bit flavour: N × 12 bytes (from u32, to u32, flags u32).
    public static let hardwareBranches32 = ReplayEventType(rawValue: 16)
    /// Branch records in the 64-bit flavour: N × 24 bytes (from u64, to u64, format u64).
    public static let hardwareBranches64 = ReplayEventType(rawValue: 17)

    /// Every type of format 1.0, in catalogue order.
    public static let known: [ReplayEventType] = [
        .sessionStart, .sessionEnd, .traceOn, .traceOff, .landmark, .interrupt, .clockRead,
        .deviceInput, .consoleOutput, .hardwareBranches32, .hardwareBranches64,
    ]

    private var knownName: String? {
        switch rawValue {
        case 1: return "session-start"
        case 2: return "session-end"
        case 3: return "trace-on"
        case 4: return "trace-off"
        case 5: return "landmark"
        case 6: return "interrupt"
        case 7: return "clock-read"
        case 8: return "device-input"
        case 9: return "console-output"
        case 16: return "hw-branches-32"
        case 17: return "hw-branches-64"
        default: return nil
        }
    }

    /// The catalogue name, or "unknown(N)".
    public var name: String { knownName ?? "unknown(\(rawValue))" }

    public var description: String { name }

    /// The type with this catalogue name (also accepts "unknown(N)" and plain numbers).
    public init?(name: String) {
        if let t = ReplayEventType.known.first(where: { $0.name == name }) { self = t; return }
        var s = Substring(name)
        if s.hasPrefix("unknown("), s.hasSuffix(")") { s = s.dropFirst(8).dropLast() }
        guard let n = UInt16(s) else { return nil }
        self.init(rawValue: n)
    }

    /// Bytes per branch record for the two branch flavours, nil for other types.
    @inlinable
    public var branchRecordSize: Int? {
        switch rawValue {
        case 16: return 12
        case 17: return BranchRecordLayout.size
        default: return nil
        }
    }

    /// The name of an entry's info value for this type: one token, no spaces.
    public func infoName(_ info: UInt32) -> String {
        switch rawValue {
        case 1: return info == 0 ? "record" : info == 1 ? "replay" : "mode(\(info))"
        case 2:
            switch info {
            case 0: return "guest-exit"
            case 1: return "stopped"
            case 2: return "error"
            default: return "reason(\(info))"
            }
        case 3, 4, 16, 17: return BranchSource(rawValue: info)?.name ?? "source(\(info))"
        case 5: return "#\(info)"
        case 6: return interruptVectorName(info)
        case 7: return ClockSource(rawValue: info)?.name ?? "clock(\(info))"
        case 8: return DeviceClass(rawValue: info)?.name ?? "device(\(info))"
        case 9: return info == 0 ? "serial0" : info == 1 ? "xen-console" : "console(\(info))"
        default: return "0x" + String(info, radix: 16)
        }
    }
}

/// Info of branch and trace-on/off entries: where the branch records come from.
public enum BranchSource: UInt32, CaseIterable, Sendable {
    case bts = 0          // Intel Branch Trace Store (the time-travel hypervisor)
    case processorTrace = 1  // Intel PT, decoded (Xen vmtrace)
    case tcgPlugin = 2    // QEMU's TCG plugin
    public var name: String {
        switch self {
        case .bts: return "bts"
        case .processorTrace: return "pt"
        case .tcgPlugin: return "tcg"
        }
    }
}

/// Info of clock-read entries: which clock the guest read.
public enum ClockSource: UInt32, CaseIterable, Sendable {
    case rdtsc = 0, rdtscp = 1, rtc = 2, pit = 3, hpet = 4, pvclock = 5
    public var name: String {
        switch self {
        case .rdtsc: return "rdtsc"
        case .rdtscp: return "rdtscp"
        case .rtc: return "rtc"
        case .pit: return "pit"
        case .hpet: return "hpet"
        case .pvclock: return "pvclock"
        }
    }
}

/// Info of device-input entries: the kind of access that brought the input in.
public enum DeviceClass: UInt32, CaseIterable, Sendable {
    case ioPort = 0, mmio = 1, dma = 2, network = 3, block = 4, serial = 5
    public var name: String {
        switch self {
        case .ioPort: return "pio"
        case .mmio: return "mmio"
        case .dma: return "dma"
        case .network: return "net"
        case .block: return "block"
        case .serial: return "serial"
        }
    }
}

private let exceptionNames = ["#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO",
                              "#TS", "#NP", "#SS", "#GP", "#PF", "vec15", "#MF", "#AC", "#MC", "#XM",
                              "#VE", "#CP"]

/// x86 vectors 0–21 by their mnemonics, the rest as `vec0xNN`.
func interruptVectorName(_ v: UInt32) -> String {
    if v < exceptionNames.count { return exceptionNames[Int(v)] }
    return "vec0x" + String(v, radix: 16)
}

/// The file header (128 bytes at offset 0; the rest of the first slot is zero).
public struct ReplayLogHeader: Equatable, Sendable {
    public var magic: [UInt8] { ReplayLogFormat.magic }
    public var version: UInt16
    public var minorVersion: UInt16
    /// Bytes per slot: a power of two, 128…65536.
    public var slotSize: UInt32
    /// Who wrote the log: backend and version, e.g. "qemu 7.2.22" or "xen".
    public var producer: String
    /// 32 or 64.
    public var guestWordSize: UInt8
    public var vcpuCount: UInt16

    public init(producer: String, guestWordSize: UInt8, vcpuCount: UInt16,
                slotSize: UInt32 = ReplayLogFormat.defaultSlotSize) {
        self.version = ReplayLogFormat.version
        self.minorVersion = ReplayLogFormat.minorVersion
        self.slotSize = slotSize
        self.producer = producer
        self.guestWordSize = guestWordSize
        self.vcpuCount = vcpuCount
    }

    /// Why this header cannot be written or read, or nil when it is sound.
    public func problem() -> String? { fieldProblem()?.message }

    /// The problem and the byte offset of the header field it concerns.
    private func fieldProblem() -> (offset: UInt64, message: String)? {
        let s = Int(slotSize)
        if s < ReplayLogFormat.minSlotSize || s > ReplayLogFormat.maxSlotSize || s & (s - 1) != 0 {
            return (16, "slot size \(slotSize) is not a power of two in 128...65536")
        }
        if guestWordSize != 32 && guestWordSize != 64 { return (20, "guest word size \(guestWordSize) is neither 32 nor 64") }
        if vcpuCount == 0 || Int(vcpuCount) > ReplayLogFormat.maxVCPUs {
            return (22, "vCPU count \(vcpuCount) is not in 1...\(ReplayLogFormat.maxVCPUs)")
        }
        if producer.utf8.count > ReplayLogFormat.producerFieldSize { return (32, "producer name is longer than 64 bytes") }
        if producer.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return (32, "producer name contains a control character")
        }
        return nil
    }

    /// The 128 header bytes.
    public func encoded() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: ReplayLogFormat.fileHeaderSize)
        b.withUnsafeMutableBytes { p in
            p.copyBytes(from: ReplayLogFormat.magic)
            p.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt16.self)
            p.storeBytes(of: minorVersion.littleEndian, toByteOffset: 10, as: UInt16.self)
            p.storeBytes(of: ReplayLogFormat.byteOrderMark.littleEndian, toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: slotSize.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: UInt16(guestWordSize).littleEndian, toByteOffset: 20, as: UInt16.self)
            p.storeBytes(of: vcpuCount.littleEndian, toByteOffset: 22, as: UInt16.self)
            let name = Array(producer.utf8.prefix(ReplayLogFormat.producerFieldSize))
            for (i, c) in name.enumerated() { p[32 + i] = c }
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<124]))
            p.storeBytes(of: crc.littleEndian, toByteOffset: 124, as: UInt32.self)
        }
        return b
    }

    /// Decodes and checks the 128 header bytes; `fail` builds the error for a problem.
    static func decode(_ p: UnsafeRawBufferPointer, fail: (UInt64, String) -> ReplayLogError) throws -> ReplayLogHeader {
        precondition(p.count >= ReplayLogFormat.fileHeaderSize)
        if !ReplayLogFormat.magic.elementsEqual(p[0..<8]) {
            throw fail(0, "not a tt replay log (bad magic \(hexBytes(p[0..<8])))")
        }
        let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 124, as: UInt32.self))
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<124]))
        let major = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        if major != ReplayLogFormat.version && stored == computed {
            throw fail(8, "format version \(major) is not supported (this reader knows version \(ReplayLogFormat.version))")
        }
        if stored != computed {
            throw fail(124, "file header checksum mismatch (stored 0x\(hex32(stored)), computed 0x\(hex32(computed)))")
        }
        let bom = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        if bom != ReplayLogFormat.byteOrderMark { throw fail(12, "byte-order mark 0x\(hex32(bom)) is not 0x01020304") }
        let word = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 20, as: UInt16.self))
        let nameBytes = p[32..<96]
        let nameEnd = nameBytes.firstIndex(of: 0) ?? 96
        if nameBytes[nameEnd...].contains(where: { $0 != 0 }) { throw fail(32, "producer field has bytes after its NUL terminator") }
        guard let name = String(validating: Array(p[32..<nameEnd]), as: UTF8.self) else {
            throw fail(32, "producer field is not UTF-8")
        }
        var h = ReplayLogHeader(producer: name, guestWordSize: UInt8(truncatingIfNeeded: word),
                                vcpuCount: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 22, as: UInt16.self)),
                                slotSize: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        h.version = major
        h.minorVersion = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
        if word > 255 { throw fail(20, "guest word size \(word) is neither 32 nor 64") }
        if let bad = h.fieldProblem() { throw fail(bad.offset, bad.message) }
        return h
    }
}

/// Any problem with a replay log or its index: one line naming the file, the byte offset
/// and the entry index where they are known.
public struct ReplayLogError: Error, ExitStatusProviding, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The bytes break a rule of the format.
        case malformed
        /// The last entry is incomplete: the writer stopped mid-write.
        case tornTail
        /// A read or write failed.
        case io
        /// The file does not exist or cannot be opened.
        case noInput
        /// The caller asked for something the log refuses (overwrite, bad argument).
        case refused
        /// An output (the sidecar index) cannot be created.
        case cannotCreate
    }

    public let kind: Kind
    public let path: String
    public let offset: UInt64?
    public let entry: UInt64?
    public let message: String

    public init(_ kind: Kind, path: String, offset: UInt64? = nil, entry: UInt64? = nil, _ message: String) {
        self.kind = kind
        self.path = path
        self.offset = offset
        self.entry = entry
        self.message = message
    }

    public var exitStatus: Int32 {
        switch kind {
        case .malformed, .tornTail: return ExitStatus.dataError
        case .io: return ExitStatus.ioError
        case .noInput: return ExitStatus.noInput
        case .refused: return ExitStatus.failure
        case .cannotCreate: return ExitStatus.cannotCreate
        }
    }

    public var description: String {
        var s = path
        if let offset { s += ": byte \(offset)" }
        if let entry { s += offset == nil ? ": entry \(entry)" : ", entry \(entry)" }
        return s + ": " + message
    }

    /// From a failed system call on `path`.
    static func system(_ errno: Errno, path: FilePath, doing: String) -> ReplayLogError {
        let kind: Kind = (errno == .noSuchFileOrDirectory || errno == .permissionDenied || errno == .notDirectory) && doing == "open"
            ? .noInput : .io
        return ReplayLogError(kind, path: path.string, "\(doing): \(errno.description)")
    }
}

/// What a salvaging reader skipped.
public struct ReplayLogSalvageReport: Sendable {
    public struct Skip: Sendable, Equatable, CustomStringConvertible {
        /// Byte range skipped, [start, end); empty when only entry indices are missing.
        public var start: UInt64
        public var end: UInt64
        /// Index the next entry was expected to have when the skip began.
        public var entry: UInt64
        public var reason: String
        public var description: String {
            if start == end { return "nothing at byte \(start), entry \(entry): \(reason)" }
            return "bytes \(start)..<\(end) (\(end - start) bytes) at entry \(entry): \(reason)"
        }
    }

    public var skips: [Skip] = []
    public var skippedBytes: UInt64 { skips.reduce(0) { $0 + ($1.end - $1.start) } }
    public var isEmpty: Bool { skips.isEmpty }
}

@inline(__always)
func hex32(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 8 - s.count)) + s
}

func hexBytes<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
}
