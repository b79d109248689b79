import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The one memory mapper: a file's bytes (all of it, or a window at an offset) mapped
/// into memory, unmapped when this object goes away.
///
/// - `MappedFile(path:)`: a whole regular file, read-only — zero-copy access whose
///   resident memory stays bounded whatever the file's size (the kernel pages it in and out).
/// - `MappedFile(_:path:offset:count:access:)` with `.readOnly`: a window of an open file
///   (the replay log maps 16 MiB at a time), optionally prefaulted in one system call.
/// - `.sharedReadWrite`: a mapping whose stores reach the file and every other process
///   mapping it (the QEMU plugin's control block).
public final class MappedFile {
    public enum Access {
        /// PROT_READ, MAP_PRIVATE.
        case readOnly
        /// PROT_READ|PROT_WRITE, MAP_SHARED.
        case sharedReadWrite
    }

    /// The system's page size: window offsets must be multiples of it.
    public static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    public let path: FilePath
    /// The file offset of the first mapped byte.
    public let offset: Int64
    public let count: Int
    /// nil for an empty mapping (mmap refuses length 0).
    public let base: UnsafeMutableRawPointer?

    /// The whole regular file at `path`, read-only.
    public convenience init(path: FilePath) throws {
        // A regular file only (a FIFO would block, a /proc file maps as empty).
        let (fd, size) = try SafeFiles.openForReading(path)
        defer { try? fd.close() }
        try self.init(fd, path: path, count: size, access: .readOnly)
    }

    /// `count` bytes of the open file `fd` from `offset` (a multiple of `pageSize`).
    /// `prefault` populates the pages now (MAP_POPULATE), cheaper than taking their
    /// faults one by one when all of them will be read. `fd` may be closed afterwards.
    public init(_ fd: FileDescriptor, path: FilePath, offset: Int64 = 0, count: Int, access: Access, prefault: Bool = false) throws {
        precondition(offset % Int64(MappedFile.pageSize) == 0, "mapping offset not page-aligned")
        self.path = path
        self.offset = offset
        self.count = count
        guard count > 0 else { base = nil; return }
        let protection = access == .readOnly ? PROT_READ : PROT_READ | PROT_WRITE
        let flags = (access == .readOnly ? MAP_PRIVATE : MAP_SHARED) | (prefault ? MAP_POPULATE : 0)
        let p = mmap(nil, count, protection, flags, fd.rawValue, off_t(offset))
        guard let p, p != MAP_FAILED else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "mmap") }
        base = p
    }

    deinit {
        if let base { munmap(base, count) }
    }

    /// The mapped bytes; valid while this object lives.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Tell the kernel the mapping will be read front to back once (read ahead, drop behind).
    public func adviseSequential() {
        if let base { _ = madvise(base, count, MADV_SEQUENTIAL) }
    }
}
