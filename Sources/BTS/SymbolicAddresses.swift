import Symbolize
import TTSystem

/// Address text in Symbolize's formats (`0x<addr> <name+off>` or `<inl+off @ outer+off>`),
/// memoised in a direct-mapped cache: branch streams revisit few distinct addresses, so
/// nearly every lookup is a hash and a copy of ready-made bytes into the line.
public final class SymbolicAddresses {
    public let symbolizer: Symbolizer
    public let style: SymbolStyle
    private var keys: [UInt64]
    private var valid: [Bool]
    private var texts: [[UInt8]]
    private let mask: Int

    public init(symbolizer: Symbolizer, style: SymbolStyle, cacheSlots: Int = 1 << 16) {
        self.symbolizer = symbolizer
        self.style = style
        var n = 1
        while n < cacheSlots { n <<= 1 }
        mask = n - 1
        keys = Array(repeating: 0, count: n)
        valid = Array(repeating: false, count: n)
        texts = Array(repeating: [], count: n)
    }

    /// The full text of `address` (hex, then ` <name>` when a symbol applies).
    @inline(__always)
    public func write(_ address: UInt64, into sink: inout LineSink) throws {
        // Fibonacci hashing spreads nearby code addresses over the table.
        let slot = Int(truncatingIfNeeded: (address &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
        if !(valid[slot] && keys[slot] == address) {
            keys[slot] = address
            valid[slot] = true
            texts[slot] = Array(symbolizer.describe(address, style: style).utf8)
        }
        try texts[slot].withUnsafeBytes { try sink.bytes($0) }
    }

    /// The name part alone (for JSON and call trees), or nil for a bare address.
    public func name(_ address: UInt64) -> String? {
        symbolizer.symbolicName(address, style: style)
    }
}
