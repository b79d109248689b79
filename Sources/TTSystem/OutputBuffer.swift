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
        placement = nil
    }

    /// Output placed in a file rather than streamed: the bytes go to `fd` from byte
    /// `offset` on (positioned writes, so that other writers may fill other parts of the
    /// same file at once), and with `direct`, a descriptor of the same file opened
    /// O_DIRECT, every whole aligned block goes through it: the page cache is bypassed.
    /// Why: a trace of 100 M records is gigabytes, written once and not read back soon;
    /// through the page cache it cost 2.5 s of CPU a GB here (measured with dd: 2 GB
    /// took 5.2 s of system time buffered, 0.43 s with O_DIRECT), and that CPU is
    /// taken from the replays. The unaligned edges go through `fd`.
    public init(file fd: Int32, at offset: UInt64, direct: Int32?, capacity: Int = 4 << 20) {
        self.fd = fd
        lineBuffered = false
        let block = OutputBuffer.directBlock
        self.capacity = max(capacity, 4 * block) / block * block
        base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: block).bindMemory(to: UInt8.self, capacity: self.capacity)
        // Buffer index 0 is the aligned file offset at or before `offset`; the bytes before
        // `offset` in that block are not ours and are never written.
        let skip = direct == nil ? 0 : Int(offset % UInt64(block))
        placement = Placement(fileBase: Int64(offset) - Int64(skip), written: skip, direct: direct)
        used = skip
    }

    /// Block size and alignment of direct writes (the page size; any device's logical
    /// block divides it).
    public static let directBlock = 4096

    struct Placement {
        /// The file offset of buffer index 0 (block-aligned with a direct descriptor).
        var fileBase: Int64
        /// Buffer bytes before this index are in the file already.
        var written: Int
        var direct: Int32?
    }
    private var placement: Placement?

    /// Unflushed bytes are written on deinit; call `flush()` to see write errors.
    deinit {
        try? flush()
        base.deallocate()
    }

    /// Write everything buffered to the descriptor (or its place in the file).
    public func flush() throws {
        guard placement != nil else {
            let pending = used
            used = 0
            try writeAll(UnsafeRawBufferPointer(start: base, count: pending))
            return
        }
        try drainPlaced(all: true)
    }

    /// Placed output: the whole blocks through the direct descriptor (the first one
    /// buffered if part of it is not ours) and, with `all`, the rest too, buffered. A
    /// partial last block stays at the front of the buffer (already written, with `all`)
    /// so that it is written whole, directly, once full.
    private func drainPlaced(all: Bool) throws {
        guard var p = placement else { return }
        defer { placement = p }
        let block = OutputBuffer.directBlock
        guard let direct = p.direct else {
            try writePlaced(fd, from: p.written, to: used, fileBase: p.fileBase)
            p.fileBase += Int64(used)
            p.written = 0
            used = 0
            return
        }
        let whole = used / block * block
        if whole > 0 {
            var from = 0
            if p.written > 0 {
                try writePlaced(fd, from: p.written, to: block, fileBase: p.fileBase)
                from = block
            }
            if whole > from { try writePlaced(direct, from: from, to: whole, fileBase: p.fileBase) }
            base.update(from: base + whole, count: used - whole)
            p.fileBase += Int64(whole)
            p.written = 0
            used -= whole
        }
        if all && used > p.written {
            try writePlaced(fd, from: p.written, to: used, fileBase: p.fileBase)
            p.written = used
        }
    }

    private func writePlaced(_ descriptor: Int32, from: Int, to: Int, fileBase: Int64) throws {
        var off = from
        while off < to {
            let n = pwrite(descriptor, base + off, to - off, Int(fileBase) + off)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(path: nil, errno: Errno(rawValue: errno), doing: "write")
            }
            off += n
        }
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
        guard placement != nil else {
            try flush()
            if count > capacity {
                base.deallocate()
                capacity = count
                base = .allocate(capacity: count)
            }
            return
        }
        try drainPlaced(all: false)
        if capacity - used < count {
            let block = OutputBuffer.directBlock
            let grown = (used + count + block - 1) / block * block
            let new = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: block).bindMemory(to: UInt8.self, capacity: grown)
            new.update(from: base, count: used)
            base.deallocate()
            base = new
            capacity = grown
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
        if placement != nil {
            // Through the buffer, a capacity at a time: direct writes need its alignment.
            var rest = bytes
            while !rest.isEmpty {
                if capacity == used { try makeRoom(1) }
                let n = min(rest.count, capacity - used)
                put(bytes: UnsafeRawBufferPointer(rebasing: rest[0..<n]))
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            }
            return
        }
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
