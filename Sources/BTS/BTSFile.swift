import SystemPackage
import TTSystem

/// A BTS file, raw or extended, read through a memory mapping: zero-copy, constant
/// memory whatever the file's size (the kernel pages it in and drops it behind).
///
/// A size that is not a multiple of 24 is tolerated: the records up to the last
/// whole one are read and `warning` names the bytes left over.
public final class BTSFile {
    public let path: FilePath
    /// True if the file starts with the all-ones magic record (then `format` is the branch counter).
    public let isExtended: Bool
    /// Number of branch records, not counting the magic record.
    public let count: Int
    /// Bytes after the last whole record (0 for a well-formed file).
    public let leftoverBytes: Int

    private let mapping: MappedFile
    /// Byte offset of record 0 (24 in an extended file, past the magic).
    public let firstRecordOffset: Int

    public init(path: FilePath) throws {
        self.path = path
        do {
            mapping = try MappedFile(path: path)
        } catch let e as Errno {
            throw BTSError.missing("\(path): cannot open: \(e.description)")
        } catch let e as SystemError {
            throw BTSError.missing(e.description)
        }
        mapping.adviseSequential()
        let whole = mapping.count / BranchRecord.size
        leftoverBytes = mapping.count - whole * BranchRecord.size
        if whole > 0, let base = mapping.bytes.baseAddress,
           BranchRecord.load(from: base, at: 0) == BranchRecord.extendedMagic {
            isExtended = true
            firstRecordOffset = BranchRecord.size
            count = whole - 1
        } else {
            isExtended = false
            firstRecordOffset = 0
            count = whole
        }
    }

    /// One line for stderr when the file had a partial record at its end.
    public var warning: String? {
        guard leftoverBytes > 0 else { return nil }
        let at = mapping.count - leftoverBytes
        return "\(path): warning: size \(mapping.count) is not a multiple of \(BranchRecord.size); "
            + "ignoring the last \(leftoverBytes) byte\(leftoverBytes == 1 ? "" : "s") (from byte offset \(at))"
    }

    /// Record `i` (0-based, magic excluded).
    @inline(__always)
    public subscript(i: Int) -> BranchRecord {
        precondition(i >= 0 && i < count, "record index out of range")
        return BranchRecord.load(from: mapping.bytes.baseAddress!, at: firstRecordOffset + i * BranchRecord.size)
    }


    /// Visit every record in order with its index.
    @inline(__always)
    public func forEach(_ body: (Int, BranchRecord) throws -> Void) rethrows {
        guard count > 0, let base = mapping.bytes.baseAddress else { return }
        var off = firstRecordOffset
        for i in 0..<count {
            try body(i, BranchRecord.load(from: base, at: off))
            off += BranchRecord.size
        }
    }

    /// The records' bytes (magic and leftover excluded), for bulk copies.
    public var recordBytes: UnsafeRawBufferPointer {
        guard count > 0, let base = mapping.bytes.baseAddress else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + firstRecordOffset, count: count * BranchRecord.size)
    }
}
