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
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw SystemError(path: path, message: "not a regular file") }
        count = Int(st.st_size)
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
