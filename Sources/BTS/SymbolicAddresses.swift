import Symbolize
import TTSystem

/// Address text in Symbolize's formats (`0x<addr> <name+off>` or `<inl+off @ outer+off>`),
/// memoised in a direct-mapped cache: branch streams revisit relatively few distinct
/// addresses, so nearly every lookup is a hash and a copy of ready-made bytes.
///
/// The cache is one flat allocation of fixed-size slots (key, length, text) reached through
/// a pointer, so a hit costs no reference counting, exclusivity checks or bounds checks.
/// Texts too long for a slot are kept in a dictionary.
public final class SymbolicAddresses {
    public let symbolizer: Symbolizer
    public let style: SymbolStyle

    /// Slot layout: key u64 at 0, text length u16 at 8 (0xffff = empty, 0xfffe = long), text at 10.
    private static let slotSize = 96
    private static let textCapacity = slotSize - 10
    private let slots: UnsafeMutableRawPointer
    private let mask: Int
    private var long: [UInt64: [UInt8]] = [:]

    /// `cacheSlots` is rounded up to a power of two; memory is 96 bytes per slot.
    public init(symbolizer: Symbolizer, style: SymbolStyle, cacheSlots: Int = 1 << 17) {
        self.symbolizer = symbolizer
        self.style = style
        var n = 1
        while n < cacheSlots { n <<= 1 }
        mask = n - 1
        slots = .allocate(byteCount: n * SymbolicAddresses.slotSize, alignment: 16)
        for i in 0..<n { slots.storeBytes(of: 0xffff, toByteOffset: i * SymbolicAddresses.slotSize + 8, as: UInt16.self) }
    }

    deinit { slots.deallocate() }

    /// The full text of `address` (hex, then ` <name>` when a symbol applies).
    @inline(__always)
    public func write(_ address: UInt64, to out: OutputBuffer) throws {
        // Fibonacci hashing spreads nearby code addresses over the table.
        let slot = slots + (Int(truncatingIfNeeded: (address &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask) &* SymbolicAddresses.slotSize
        let length = slot.load(fromByteOffset: 8, as: UInt16.self)
        if length < 0xfffe && slot.load(as: UInt64.self) == address {
            try out.append(bytes: UnsafeRawBufferPointer(start: slot + 10, count: Int(length)))
            return
        }
        try miss(address, slot: slot, out: out)
    }

    private func miss(_ address: UInt64, slot: UnsafeMutableRawPointer, out: OutputBuffer) throws {
        if slot.load(fromByteOffset: 8, as: UInt16.self) == 0xfffe, slot.load(as: UInt64.self) == address,
           let text = long[address] {
            try text.withUnsafeBytes { try out.append(bytes: $0) }
            return
        }
        var text = symbolizer.describe(address, style: style)
        try text.withUTF8 { u in
            slot.storeBytes(of: address, as: UInt64.self)
            if u.count <= SymbolicAddresses.textCapacity {
                slot.storeBytes(of: UInt16(u.count), toByteOffset: 8, as: UInt16.self)
                if u.count > 0 { (slot + 10).copyMemory(from: u.baseAddress!, byteCount: u.count) }
            } else {
                slot.storeBytes(of: 0xfffe, toByteOffset: 8, as: UInt16.self)
                if long.count > 1 << 16 { long.removeAll(keepingCapacity: true) }
                long[address] = Array(u)
            }
            try out.append(bytes: UnsafeRawBufferPointer(u))
        }
    }

    /// The name part alone (for JSON and call trees), or nil for a bare address.
    public func name(_ address: UInt64) -> String? {
        symbolizer.symbolicName(address, style: style)
    }
}
