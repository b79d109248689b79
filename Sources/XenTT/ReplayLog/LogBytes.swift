import SystemPackage
import TTSystem

/// The bytes of a log, reachable by offset without copying: either a file mapped in
/// windows (constant memory whatever its size) or a buffer in memory (tests, fuzzing).
final class LogBytes {
    let name: String
    let size: UInt64
    private let path: FilePath
    private let fd: FileDescriptor?
    private let memory: UnsafeMutableRawBufferPointer?
    /// The current window and, for the hot path, its base and extent.
    @exclusivity(unchecked) private var mapping: MappedFile?
    @exclusivity(unchecked) private var window: UnsafeRawPointer?
    @exclusivity(unchecked) private var windowStart: UInt64 = 0
    @exclusivity(unchecked) private var windowLength = 0
    /// Bytes mapped at a time. Each window is prefaulted (MAP_POPULATE) in one system call,
    /// which is cheaper than taking page faults one by one; the previous window is unmapped,
    /// so resident memory stays near one window.
    static let windowSize = 16 << 20
    private static let pageMask = UInt64(MappedFile.pageSize - 1)

    /// Opens `path` read-only. ENOENT and EACCES are "no input"; a non-regular file is refused.
    init(path: FilePath) throws {
        name = path.string
        self.path = path
        // A regular file only: a FIFO would block, a /proc file reads as empty.
        let opened: (fd: FileDescriptor, size: Int)
        do {
            opened = try SafeFiles.openForReading(path)
        } catch let e as SystemError {
            if let errno = e.errno { throw ReplayLogError.system(errno, path: path, doing: "open") }
            throw ReplayLogError(.noInput, path: name, e.message)
        }
        self.fd = opened.fd
        self.size = UInt64(opened.size)
        self.memory = nil
    }

    /// A private copy of `bytes`, named `name` in errors.
    init(bytes: UnsafeRawBufferPointer, name: String) {
        self.name = name
        self.path = FilePath(name)
        self.fd = nil
        self.size = UInt64(bytes.count)
        let m = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        if bytes.count > 0 { m.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        self.memory = m
    }

    deinit {
        if let memory { memory.deallocate() }
        try? fd?.close()
    }

    /// A pointer to bytes [offset, offset + count), valid until the next call.
    /// The caller has checked that the range lies inside the file.
    @inline(__always)
    func bytes(at offset: UInt64, count: Int) throws -> UnsafeRawPointer {
        if let memory { return UnsafeRawPointer(memory.baseAddress! + Int(offset)) }
        if let window, offset >= windowStart, offset + UInt64(count) <= windowStart + UInt64(windowLength) {
            return window + Int(offset - windowStart)
        }
        return try remap(offset: offset, count: count)
    }

    private func remap(offset: UInt64, count: Int) throws -> UnsafeRawPointer {
        mapping = nil
        window = nil
        let start = offset & ~LogBytes.pageMask
        let wanted = max(UInt64(LogBytes.windowSize), offset + UInt64(count) - start)
        let length = Int(min(wanted, size - start))
        let m: MappedFile
        do {
            m = try MappedFile(fd!, path: path, offset: Int64(start), count: length, access: .readOnly, prefault: true)
        } catch let e as SystemError {
            throw ReplayLogError(.io, path: name, offset: offset, e.message)
        }
        mapping = m
        window = UnsafeRawPointer(m.base!)
        windowStart = start
        windowLength = length
        return window! + Int(offset - start)
    }

    /// Copies bytes into a fresh array (for the header and small reads).
    func copy(at offset: UInt64, count: Int) throws -> [UInt8] {
        let p = try bytes(at: offset, count: count)
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
}
