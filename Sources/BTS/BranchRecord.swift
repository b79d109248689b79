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
    public static let size = 24

    /// The first record of an extended file: all three fields all ones.
    public static let extendedMagic = BranchRecord(from: .max, to: .max, format: .max)

    /// Decode the record at `offset` of `bytes` (caller guarantees 24 bytes are there).
    @inline(__always)
    public static func load(from bytes: UnsafeRawPointer, at offset: Int) -> BranchRecord {
        BranchRecord(
            from: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
            to: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)),
            format: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)))
    }

    /// Encode into 24 bytes at `p`.
    @inline(__always)
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: from.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: to.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: format.littleEndian, toByteOffset: 16, as: UInt64.self)
    }

    /// The record's 24 bytes.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: BranchRecord.size) { buf, n in
            store(to: UnsafeMutableRawPointer(buf.baseAddress!))
            n = BranchRecord.size
        }
    }
}
