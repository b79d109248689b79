import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A byte buffer in front of a file descriptor, for output of millions of lines
/// without per-line String formatting: append bytes, hex and decimal digits directly.
public final class OutputBuffer {
    public let fd: Int32
    private var storage: UnsafeMutableRawBufferPointer
    private var used = 0
    /// Write through after every `endLine()` (for interactive pipes).
    public var lineBuffered: Bool

    public init(fd: Int32 = 1, capacity: Int = 1 << 16, lineBuffered: Bool = false) {
        self.fd = fd
        self.lineBuffered = lineBuffered
        storage = .allocate(byteCount: max(capacity, 256), alignment: 8)
    }

    /// Unflushed bytes are written on deinit; call `flush()` to see write errors.
    deinit {
        try? flush()
        storage.deallocate()
    }

    @inline(__always)
    private func reserve(_ n: Int) throws {
        if used + n > storage.count { try flush() }
        if n > storage.count {
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 8)
            storage.deallocate()
            storage = bigger
        }
    }

    public func flush() throws {
        var off = 0
        while off < used {
            let n = write(fd, storage.baseAddress! + off, used - off)
            if n < 0 {
                if errno == EINTR { continue }
                let e = Errno(rawValue: errno)
                used = 0
                // Named here for the standard streams; BTSWriter names the files it opened.
                let stream: FilePath? = fd == 1 ? "standard output" : fd == 2 ? "standard error" : nil
                throw SystemError(path: stream, errno: e, doing: "write")
            }
            off += n
        }
        used = 0
    }

    @inline(__always)
    public func append(byte: UInt8) throws {
        try reserve(1)
        storage[used] = byte
        used += 1
    }

    public func append(_ string: String) throws {
        var s = string
        try s.withUTF8 { try append(bytes: UnsafeRawBufferPointer($0)) }
    }

    public func append(bytes: UnsafeRawBufferPointer) throws {
        try reserve(bytes.count)
        if bytes.count > 0 {
            (storage.baseAddress! + used).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        used += bytes.count
    }

    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append(bytes: $0) }
    }

    /// Lower-case hex digits of `value`, at least `minDigits` of them (zero-padded).
    @inline(__always)
    public func appendHex(_ value: UInt64, minDigits: Int = 1) throws {
        let digits = max(minDigits, value == 0 ? 1 : (64 - value.leadingZeroBitCount + 3) / 4)
        try reserve(digits)
        let p = storage.baseAddress!.assumingMemoryBound(to: UInt8.self) + used
        var v = value
        var i = digits - 1
        while i >= 0 {
            p[i] = hexDigits[Int(v & 0xf)]
            v >>= 4
            i -= 1
        }
        used += digits
    }

    /// Decimal digits of `value`, right-aligned with leading zeros to `minDigits`.
    @inline(__always)
    public func appendDecimal(_ value: UInt64, minDigits: Int = 1) throws {
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes scratch, enough for 20 digits
        try withUnsafeMutableBytes(of: &tmp) { scratch in
            var v = value
            var n = 0
            repeat {
                scratch[23 - n] = UInt8(ascii: "0") &+ UInt8(v % 10)
                v /= 10
                n += 1
            } while v != 0
            while n < minDigits && n < 24 {
                scratch[23 - n] = UInt8(ascii: "0")
                n += 1
            }
            try append(bytes: UnsafeRawBufferPointer(rebasing: scratch[(24 - n)...]))
        }
    }

    public func appendDecimal(_ value: Int64) throws {
        if value < 0 {
            try append(byte: UInt8(ascii: "-"))
            try appendDecimal(value.magnitude)
        } else {
            try appendDecimal(UInt64(value))
        }
    }

    public func endLine() throws {
        try append(byte: 0x0a)
        if lineBuffered { try flush() }
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
