/// The one definition of the 24-byte branch record — Intel's Branch Trace Store layout,
/// little-endian: from, to, and a third word (the CPU's flags, or in an extended BTS file
/// the branch counter). Replay-log hardware-branch entries carry these records as their
/// payload and BTS files are arrays of them, so the replay-log writer, its entry reader
/// and BTS's BranchRecord all encode and decode through here.
public enum BranchRecordLayout {
    @inlinable @inline(__always)
    public static var size: Int { 24 }

    @inlinable @inline(__always)
    public static func store(from: UInt64, to: UInt64, format: UInt64, at p: UnsafeMutableRawPointer) {
        p.storeBytes(of: from.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: to.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: format.littleEndian, toByteOffset: 16, as: UInt64.self)
    }

    @inlinable @inline(__always)
    public static func load(at p: UnsafeRawPointer) -> (from: UInt64, to: UInt64, format: UInt64) {
        (UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
         UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
         UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
    }
}
