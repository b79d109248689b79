import TTSystem

/// A small pointer-addressed scratch buffer in front of an `OutputBuffer`.
///
/// The dump prints tens of millions of lines; building them here with unchecked
/// pointer stores and handing the OutputBuffer 64 KiB at a time costs one memcpy per
/// chunk instead of a bounds-checked call per field.
public struct LineSink {
    public let out: OutputBuffer
    private let base: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private var used = 0
    /// Flush to `out` when fewer than this many bytes are free (longest line we build
    /// without checking: two 16-digit addresses, counters, separators).
    private static let slack = 256

    public init(_ out: OutputBuffer, capacity: Int = 1 << 16) {
        self.out = out
        self.capacity = max(capacity, 4 * LineSink.slack)
        base = .allocate(capacity: self.capacity)
    }

    /// Release the scratch memory (after a final `flush()`).
    public func deallocate() { base.deallocate() }

    /// Hand everything built so far to the OutputBuffer (not to the fd: call out.flush()).
    public mutating func flush() throws {
        if used > 0 {
            try out.append(bytes: UnsafeRawBufferPointer(start: base, count: used))
            used = 0
        }
    }

    /// Call once per line before appending its fixed-size parts.
    @inline(__always)
    public mutating func beginLine() throws {
        if used > capacity - LineSink.slack { try flush() }
    }

    @inline(__always)
    public mutating func byte(_ b: UInt8) {
        base[used] = b
        used &+= 1
    }

    @inline(__always)
    public mutating func ascii(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        (base + used).update(from: s.utf8Start, count: n)
        used &+= n
    }

    /// Arbitrary bytes (symbol names): checks room, flushing or passing through when long.
    public mutating func bytes(_ p: UnsafeRawBufferPointer) throws {
        if used + p.count > capacity { try flush() }
        if p.count > capacity {
            try out.append(bytes: p)
            return
        }
        if p.count > 0 { (base + used).update(from: p.baseAddress!.assumingMemoryBound(to: UInt8.self), count: p.count) }
        used &+= p.count
    }

    public mutating func string(_ s: String) throws {
        var s = s
        try s.withUTF8 { try bytes(UnsafeRawBufferPointer($0)) }
    }

    /// `0x` and lower-case hex, at least `minDigits` digits.
    @inline(__always)
    public mutating func hex(_ v: UInt64, minDigits: Int = 8) {
        let significant = v == 0 ? 1 : (64 &- v.leadingZeroBitCount &+ 3) >> 2
        let n = significant > minDigits ? significant : minDigits
        base[used] = UInt8(ascii: "0")
        base[used &+ 1] = UInt8(ascii: "x")
        let p = base + (used &+ 2)
        var x = v
        var i = n &- 1
        let digits = hexDigitTable.utf8Start
        while i >= 0 {
            p[i] = digits[Int(truncatingIfNeeded: x & 0xf)]
            x >>= 4
            i &-= 1
        }
        used &+= n &+ 2
    }

    /// Decimal, zero-padded to `minDigits`.
    @inline(__always)
    public mutating func decimal(_ v: UInt64, minDigits: Int = 1) {
        var len = 1
        var t = v
        while t >= 10 { t /= 10; len &+= 1 }
        let n = len > minDigits ? len : minDigits
        let p = base + used
        var x = v
        var i = n &- 1
        while i >= 0 {
            p[i] = UInt8(truncatingIfNeeded: x % 10) &+ 48
            x /= 10
            i &-= 1
        }
        used &+= n
    }

    /// A JSON string literal's body (without quotes), escaping what JSON requires.
    public mutating func jsonEscaped(_ s: String) throws {
        var s = s
        try s.withUTF8 { u in
            var clean = true
            for c in u where c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { clean = false; break }
            if clean { try bytes(UnsafeRawBufferPointer(u)); return }
            for c in u {
                try beginLine()
                switch c {
                case UInt8(ascii: "\""): ascii("\\\"")
                case UInt8(ascii: "\\"): ascii("\\\\")
                case 0x0a: ascii("\\n")
                case 0..<0x20: ascii("\\u00"); byte(hexDigitTable.utf8Start[Int(c >> 4)]); byte(hexDigitTable.utf8Start[Int(c & 0xf)])
                default: byte(c)
                }
            }
        }
    }

    @inline(__always)
    public mutating func newline() { byte(0x0a) }
}

private let hexDigitTable: StaticString = "0123456789abcdef"
