import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory mapping of a whole file: zero-copy access to its bytes.
///
/// The kernel pages the file in and out on demand, so resident memory stays
/// bounded whatever the file's size; `adviseSequential()` lets it read ahead and drop behind.
public final class MappedFile {
    public let path: FilePath
    public let count: Int
    private let base: UnsafeRawPointer?

    public init(path: FilePath) throws {
        self.path = path
        let (fd, size) = try SafeFiles.openForReading(path)
        defer { try? fd.close() }
        count = size
        if count == 0 {
            base = nil
        } else {
            let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd.rawValue, 0)
            guard let p, p != MAP_FAILED else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "mmap") }
            base = UnsafeRawPointer(p)
        }
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// The file's bytes; valid while this object lives.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Tell the kernel the file will be read front to back once.
    public func adviseSequential() {
        if let base { _ = madvise(UnsafeMutableRawPointer(mutating: base), count, MADV_SEQUENTIAL) }
    }
}
