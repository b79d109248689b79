/// The one hex and decimal digit writer: every number tt prints as text (OutputBuffer's
/// appendHex/putHex, JSON's \u00XX escapes, byte-array renderers such as the symbolizer's)
/// goes through these, so there is one digit table and one way to pad.
///
/// The writers store through a raw pointer the caller has made room behind; they return
/// how many bytes they wrote. They are inlinable so the BTS dump loops, in another module,
/// compile to straight-line stores.
public enum Digits {
    /// Lower-case, as `String(_:radix: 16)` and the original XenTT tools print.
    @inlinable @inline(__always)
    static var hexTable: StaticString { "0123456789abcdef" }

    /// The most bytes `writeHex`/`writeDecimal` write for a UInt64 at `minDigits` padding.
    @inlinable @inline(__always)
    public static func maxHexCount(minDigits: Int) -> Int { minDigits > 16 ? minDigits : 16 }
    @inlinable @inline(__always)
    public static func maxDecimalCount(minDigits: Int) -> Int { minDigits > 20 ? minDigits : 20 }

    /// The lower-case hex digit of `nibble` (0…15).
    @inlinable @inline(__always)
    public static func hexDigit(_ nibble: UInt8) -> UInt8 { hexTable.utf8Start[Int(nibble & 0xf)] }

    /// Hex digits of `value` (no prefix), zero-padded to at least `minDigits`.
    @inlinable @inline(__always)
    public static func writeHex(_ value: UInt64, minDigits: Int, to p: UnsafeMutablePointer<UInt8>) -> Int {
        let significant = value == 0 ? 1 : (64 &- value.leadingZeroBitCount &+ 3) &>> 2
        let n = significant > minDigits ? significant : minDigits
        let table = hexTable.utf8Start
        var v = value
        var i = n &- 1
        while i >= 0 {
            p[i] = table[Int(truncatingIfNeeded: v & 0xf)]
            v &>>= 4
            i &-= 1
        }
        return n
    }

    /// Decimal digits of `value`, zero-padded to at least `minDigits`.
    @inlinable @inline(__always)
    public static func writeDecimal(_ value: UInt64, minDigits: Int, to p: UnsafeMutablePointer<UInt8>) -> Int {
        var significant = 1
        var t = value
        while t >= 10 { t /= 10; significant &+= 1 }
        let n = significant > minDigits ? significant : minDigits
        var v = value
        var i = n &- 1
        while i >= 0 {
            p[i] = UInt8(truncatingIfNeeded: v % 10) &+ UInt8(ascii: "0")
            v /= 10
            i &-= 1
        }
        return n
    }

    /// Hex digits appended to a byte array (for texts built before they are printed).
    public static func appendHex(_ value: UInt64, minDigits: Int = 1, to bytes: inout [UInt8]) {
        append(maxHexCount(minDigits: minDigits), to: &bytes) { writeHex(value, minDigits: minDigits, to: $0) }
    }

    /// Decimal digits appended to a byte array, with a `-` for negative values.
    public static func appendDecimal(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        append(20, to: &bytes) { writeDecimal(value.magnitude, minDigits: 1, to: $0) }
    }

    private static func append(_ most: Int, to bytes: inout [UInt8], _ write: (UnsafeMutablePointer<UInt8>) -> Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: most) { scratch in
            let n = write(scratch.baseAddress!)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: scratch[0..<n]))
        }
    }
}
