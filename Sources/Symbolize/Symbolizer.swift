import TTSystem

/// How an address is shown.
public enum SymbolStyle: Sendable {
    /// `<func+off>`: exactly what GDB prints for `print/a`; inlining is ignored.
    case gdb
    /// `<inl+off @ outer+off>` inside an inlined instance, where inl's offset is measured
    /// from the innermost instance's entry (the start of its first range; negative when
    /// the address is in a part placed before it) and `outer+off` is the GDB-style name.
    /// Otherwise as `.gdb`.
    case inline
}

/// One image in an address space: the addresses it covers, what to print before its
/// names, and its load bias (run-time address = file address + bias).
public struct SymbolMapEntry {
    public var range: ClosedRange<UInt64>
    public var file: SymbolFile
    public var prefix: String
    public var bias: Int64

    public init(range: ClosedRange<UInt64>, file: SymbolFile, prefix: String = "", bias: Int64 = 0) {
        self.range = range
        self.file = file
        self.prefix = prefix
        self.bias = bias
    }

    /// The image's link-time address for run-time `address`.
    @inline(__always)
    public func fileAddress(_ address: UInt64) -> UInt64 { address &- UInt64(bitPattern: bias) }
}

/// Addresses → text through a set of symbol maps, with a small per-address cache for
/// the hot loops of trace printing.
public final class Symbolizer {
    public let maps: [SymbolMapEntry]

    private struct CacheSlot {
        var address: UInt64 = 0
        var style: UInt8 = 0xff
        var text: [UInt8] = []
    }
    private var cache: [CacheSlot]
    private let cacheMask = 4095

    public init(maps: [SymbolMapEntry]) {
        self.maps = maps
        cache = Array(repeating: CacheSlot(), count: 4096)
    }

    /// The whole address space, one image, no prefix.
    public convenience init(symbols: SymbolFile) {
        self.init(maps: [SymbolMapEntry(range: 0...UInt64.max, file: symbols)])
    }

    private func map(for address: UInt64) -> SymbolMapEntry? {
        maps.first { $0.range.contains(address) }
    }

    /// The map covering `address` and the function containing it (file addresses).
    public func resolve(_ address: UInt64) -> (entry: SymbolMapEntry, function: FunctionSymbol?)? {
        guard let m = map(for: address) else { return nil }
        return (m, m.file.function(containing: m.fileAddress(address)))
    }

    /// The source line at `address`, through its map's image.
    public func sourceLocation(_ address: UInt64) -> SourceLocation? {
        guard let m = map(for: address) else { return nil }
        return m.file.sourceLocation(at: m.fileAddress(address))
    }

    /// Writes `0x<addr, at least 8 digits> <...>`, or the bare hex when no name applies.
    /// No newline.
    public func append(_ address: UInt64, style: SymbolStyle, to out: OutputBuffer) throws {
        let styleTag: UInt8 = style == .gdb ? 0 : 1
        let slot = Int(truncatingIfNeeded: (address >> 0) ^ (address >> 12)) & cacheMask
        if cache[slot].style == styleTag && cache[slot].address == address {
            try cache[slot].text.withUnsafeBytes { try out.append(bytes: $0) }
            return
        }
        let text = render(address, style: style)
        cache[slot] = CacheSlot(address: address, style: styleTag, text: text)
        try text.withUnsafeBytes { try out.append(bytes: $0) }
    }

    /// The same text as a String.
    public func describe(_ address: UInt64, style: SymbolStyle) -> String {
        String(decoding: render(address, style: style), as: UTF8.self)
    }

    /// The name part alone (`func+off` or `inl+off @ outer+off`, with prefix), or nil.
    public func symbolicName(_ address: UInt64, style: SymbolStyle) -> String? {
        var bytes: [UInt8] = []
        guard appendName(address, style: style, to: &bytes) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the name part; false (and nothing appended) when there is none.
    private func appendName(_ address: UInt64, style: SymbolStyle, to bytes: inout [UInt8]) -> Bool {
        guard let m = map(for: address) else { return false }
        let file = m.file
        let a = m.fileAddress(address)
        // Before any name index is taken: the first inline query re-walks the DWARF.
        if style == .inline { file.ensureInlines() }
        guard let outer = file.gdbName(at: a) else { return false }
        bytes.append(contentsOf: m.prefix.utf8)
        if style == .inline, let inl = file.innermostInlineName(at: a) {
            bytes.append(contentsOf: file.index.names[Int(inl.name)].utf8)
            appendOffset(Int64(bitPattern: a &- inl.entry), to: &bytes)
            bytes.append(contentsOf: " @ ".utf8)
        }
        file.appendName(outer, to: &bytes)
        appendOffset(Int64(bitPattern: a &- outer.location), to: &bytes)
        return true
    }

    private func render(_ address: UInt64, style: SymbolStyle) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        bytes.append(UInt8(ascii: "0"))
        bytes.append(UInt8(ascii: "x"))
        Digits.appendHex(address, minDigits: 8, to: &bytes)
        let mark = bytes.count
        bytes.append(UInt8(ascii: " "))
        bytes.append(UInt8(ascii: "<"))
        if appendName(address, style: style, to: &bytes) {
            bytes.append(UInt8(ascii: ">"))
        } else {
            bytes.removeSubrange(mark...)
        }
        return bytes
    }
}

/// GDB prints offsets as `%+d` of an int, leaving out zero.
@inline(__always)
func appendOffset(_ offset: Int64, to bytes: inout [UInt8]) {
    if offset == 0 { return }
    let gdbInt = Int64(Int32(truncatingIfNeeded: offset))
    if gdbInt > 0 { bytes.append(UInt8(ascii: "+")) }
    Digits.appendDecimal(gdbInt, to: &bytes)
}
