import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// tt's one output path: a byte buffer in front of a file descriptor, for output of
/// millions of lines without per-line String formatting.
///
/// Two levels of the same buffer:
/// - checked `append…` calls, each making room for what it writes;
/// - for hot loops, `reserve(n)` once per line followed by unchecked `put…` calls that
///   together write at most `n` bytes: pointer stores with no capacity check per field.
///   A text of unknown length (a symbol name) in such a line goes through `append…`, and
///   the line reserves again after it.
///
/// The hot members are inlinable and the storage is exclusivity-unchecked so that the BTS
/// dumps, in other modules, compile to the same stores a C printf loop would.
public final class OutputBuffer {
    public let fd: Int32
    @usableFromInline @exclusivity(unchecked) var base: UnsafeMutablePointer<UInt8>
    @usableFromInline @exclusivity(unchecked) var capacity: Int
    @usableFromInline @exclusivity(unchecked) var used = 0
    /// Write through after every `endLine()` (for interactive pipes).
    public var lineBuffered: Bool

    /// The longest line the hot loops build between reservations: two addresses,
    /// counters and separators, well under this.
    @inlinable public static var lineReserve: Int { 256 }

    public init(fd: Int32 = 1, capacity: Int = 1 << 16, lineBuffered: Bool = false) {
        self.fd = fd
        self.lineBuffered = lineBuffered
        self.capacity = max(capacity, 4 * OutputBuffer.lineReserve)
        base = .allocate(capacity: self.capacity)
    }

    /// Unflushed bytes are written on deinit; call `flush()` to see write errors.
    deinit {
        try? flush()
        base.deallocate()
    }

    /// Write everything buffered to the descriptor.
    public func flush() throws {
        let pending = used
        used = 0
        try writeAll(UnsafeRawBufferPointer(start: base, count: pending))
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                // Named here for the standard streams; BTSWriter names the files it opened.
                let stream: FilePath? = fd == 1 ? "standard output" : fd == 2 ? "standard error" : nil
                throw SystemError(path: stream, errno: Errno(rawValue: errno), doing: "write")
            }
            off += n
        }
    }

    // MARK: Reservation and unchecked writes

    /// Make room for `count` more bytes (flushing, or growing for a count beyond the
    /// capacity): the `put…` calls that follow may write that many without checks.
    @inlinable @inline(__always)
    public func reserve(_ count: Int) throws {
        if _slowPath(capacity &- used < count) { try makeRoom(count) }
    }

    @usableFromInline
    func makeRoom(_ count: Int) throws {
        try flush()
        if count > capacity {
            base.deallocate()
            capacity = count
            base = .allocate(capacity: count)
        }
    }

    /// Unchecked: only after `reserve`.
    @inlinable @inline(__always)
    public func put(byte: UInt8) {
        base[used] = byte
        used &+= 1
    }

    /// Unchecked: only after `reserve`.
    @inlinable @inline(__always)
    public func put(_ text: StaticString) {
        let n = text.utf8CodeUnitCount
        (base + used).update(from: text.utf8Start, count: n)
        used &+= n
    }

    /// Unchecked: only after `reserve`.
    @inlinable @inline(__always)
    public func put(bytes: UnsafeRawBufferPointer) {
        if let p = bytes.baseAddress { (base + used).update(from: p.assumingMemoryBound(to: UInt8.self), count: bytes.count) }
        used &+= bytes.count
    }

    /// Unchecked: only after `reserve`. `write` stores exactly `count` bytes at the pointer
    /// (a binary record encoded in place).
    @inlinable @inline(__always)
    public func put(count: Int, _ write: (UnsafeMutableRawPointer) -> Void) {
        write(UnsafeMutableRawPointer(base + used))
        used &+= count
    }

    /// Unchecked (`reserve(Digits.maxHexCount(minDigits:))`): lower-case hex, no prefix.
    @inlinable @inline(__always)
    public func putHex(_ value: UInt64, minDigits: Int = 1) {
        used &+= Digits.writeHex(value, minDigits: minDigits, to: base + used)
    }

    /// Unchecked (`reserve(Digits.maxDecimalCount(minDigits:))`): decimal, zero-padded.
    @inlinable @inline(__always)
    public func putDecimal(_ value: UInt64, minDigits: Int = 1) {
        used &+= Digits.writeDecimal(value, minDigits: minDigits, to: base + used)
    }

    // MARK: Checked writes

    @inlinable
    public func append(byte: UInt8) throws {
        try reserve(1)
        put(byte: byte)
    }

    public func append(_ string: String) throws {
        var s = string
        try s.withUTF8 { try append(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Bytes of any length: copied into the buffer, or written straight through when
    /// they would not fit in it anyway.
    @inlinable
    public func append(bytes: UnsafeRawBufferPointer) throws {
        if _fastPath(capacity &- used >= bytes.count) {
            put(bytes: bytes)
        } else {
            try appendLarge(bytes)
        }
    }

    @usableFromInline
    func appendLarge(_ bytes: UnsafeRawBufferPointer) throws {
        try flush()
        if bytes.count >= capacity {
            try writeAll(bytes)
        } else {
            put(bytes: bytes)
        }
    }

    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append(bytes: $0) }
    }

    /// Lower-case hex digits of `value`, at least `minDigits` of them (zero-padded).
    @inlinable
    public func appendHex(_ value: UInt64, minDigits: Int = 1) throws {
        try reserve(Digits.maxHexCount(minDigits: minDigits))
        putHex(value, minDigits: minDigits)
    }

    /// Decimal digits of `value`, right-aligned with leading zeros to `minDigits`.
    @inlinable
    public func appendDecimal(_ value: UInt64, minDigits: Int = 1) throws {
        try reserve(Digits.maxDecimalCount(minDigits: minDigits))
        putDecimal(value, minDigits: minDigits)
    }

    public func appendDecimal(_ value: Int64) throws {
        if value < 0 { try append(byte: UInt8(ascii: "-")) }
        try appendDecimal(value.magnitude)
    }

    /// `text` as a JSON string literal, quotes included (escaped by `JSONString`).
    public func appendJSONString(_ text: String) throws {
        var text = text
        try reserve(1)
        put(byte: UInt8(ascii: "\""))
        try text.withUTF8 { u in try JSONString.escape(u) { try append(bytes: $0) } }
        try append(byte: UInt8(ascii: "\""))
    }

    public func endLine() throws {
        try append(byte: 0x0a)
        if lineBuffered { try flush() }
    }
}
