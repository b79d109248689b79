import XenTT

/// One Intel Branch Trace Store record: 24 bytes, little-endian.
///
/// `format` is the CPU's flags word in a raw file; in an *extended* file it holds
/// the vCPU's retired-branch counter at that branch instead.
public struct BranchRecord: Equatable, Hashable, Sendable {
    public var from: UInt64
    public var to: UInt64
    public var format: UInt64

    public init(from: UInt64, to: UInt64, format: UInt64 = 0) {
        self.from = from
        self.to = to
        self.format = format
    }

    /// Size of one record on disk.
    public static var size: Int { BranchRecordLayout.size }

    /// The first record of an extended file: all three fields all ones.
    public static let extendedMagic = BranchRecord(from: .max, to: .max, format: .max)

    /// Decode the record at `offset` of `bytes` (caller guarantees 24 bytes are there).
    @inline(__always)
    public static func load(from bytes: UnsafeRawPointer, at offset: Int) -> BranchRecord {
        let r = BranchRecordLayout.load(at: bytes + offset)
        return BranchRecord(from: r.from, to: r.to, format: r.format)
    }

    /// Encode into 24 bytes at `p`.
    @inline(__always)
    public func store(to p: UnsafeMutableRawPointer) {
        BranchRecordLayout.store(from: from, to: to, format: format, at: p)
    }

    /// The record's 24 bytes.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: BranchRecord.size) { buf, n in
            store(to: UnsafeMutableRawPointer(buf.baseAddress!))
            n = BranchRecord.size
        }
    }
}
