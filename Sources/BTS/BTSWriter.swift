import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Writes branch records, raw or extended, through a large buffer.
public final class BTSWriter {
    private let out: OutputBuffer
    private let ownsDescriptor: Bool
    public let extended: Bool
    /// Records written, not counting the magic.
    public private(set) var count = 0
    private var closed = false

    /// Write to an open descriptor (e.g. 1 for stdout); the descriptor stays open.
    public convenience init(fd: Int32, extended: Bool) throws {
        try self.init(fd: fd, ownsDescriptor: false, extended: extended)
    }

    /// Create `path` anew, mode 0600 (a stale regular file there is replaced; a symlink or
    /// anything else is refused, never written through). Callers write to a temporary and
    /// rename it with `SafeFiles.commit` once the output is complete.
    public convenience init(creating path: FilePath, extended: Bool) throws {
        let fd = try SafeFiles.createTemporary(path)
        try self.init(fd: fd.rawValue, ownsDescriptor: true, extended: extended, path: path)
    }

    /// The file written, for error messages (nil: a descriptor such as stdout).
    private let path: FilePath?

    private init(fd: Int32, ownsDescriptor: Bool, extended: Bool, path: FilePath? = nil) throws {
        self.path = path
        out = OutputBuffer(fd: fd, capacity: 1 << 20)
        self.ownsDescriptor = ownsDescriptor
        self.extended = extended
        if extended { try writeRaw(.extendedMagic) }
    }

    deinit {
        if !closed { try? close() }
    }

    @inline(__always)
    private func writeRaw(_ r: BranchRecord) throws {
        try named { try out.reserve(BranchRecord.size) }
        out.put(count: BranchRecord.size) { r.store(to: $0) }
    }

    /// Append one record. In an extended file `format` must carry the branch counter.
    @inline(__always)
    public func append(_ r: BranchRecord) throws {
        try writeRaw(r)
        count += 1
    }

    /// Append records already encoded as 24-byte little-endian records.
    public func append(encoded bytes: UnsafeRawBufferPointer) throws {
        precondition(bytes.count % BranchRecord.size == 0)
        try named { try out.append(bytes: bytes) }
        count += bytes.count / BranchRecord.size
    }

    public func flush() throws { try named { try out.flush() } }

    /// A write error names the file (OutputBuffer knows only its descriptor).
    @inline(__always)
    private func named(_ body: () throws -> Void) throws {
        guard let path else { return try body() }
        try SystemError.naming(path, "write", body)
    }

    /// Flush and, if this writer opened the file, close it.
    public func close() throws {
        guard !closed else { return }
        closed = true
        try flush()
        if ownsDescriptor, Glibc.close(out.fd) != 0 {
            throw SystemError.last(path, doing: "close")
        }
    }
}
