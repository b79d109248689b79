/// The ELF symbol table as GDB's "minimal symbols": sorted by address then name,
/// looked up by pc with GDB 13's rules (section match, zero-sized symbols, sizes).
struct MinimalSymbols {
    /// GDB's minimal_symbol_type, as far as ELF produces it.
    enum Kind: UInt8 {
        case text, fileText, textIFunc, data, fileData, bss, fileBss, abs, unknown
        var isText: Bool { self == .text || self == .fileText || self == .textIFunc }
    }

    struct Symbol {
        var address: UInt64
        var size: UInt64
        var name: String
        var kind: Kind
        var section: Int32 // ELF section index; -1 when none
    }

    private(set) var symbols: [Symbol] = []
    // The fields lookup reads, as plain arrays (no String traffic in the hot path).
    private var addresses: [UInt64] = []
    private var sizes: [UInt64] = []
    private var kinds: [Kind] = []
    private var sectionOf: [Int32] = []
    /// Allocated sections as (start, end, index), sorted, for find_pc_section.
    private var sectionStarts: [UInt64] = []
    private var sectionEnds: [UInt64] = []
    private var sectionIndexes: [Int32] = []

    init() {}

    init(raw: [ELFImage.RawSymbol], sections: [ELFImage.Section]) {
        var allocated = sections.filter { $0.isAllocated && $0.size > 0 && !($0.flags & 0x400 != 0 && $0.type == 8) } // skip .tbss
        allocated.sort { $0.address < $1.address }
        for s in allocated {
            sectionStarts.append(s.address)
            sectionEnds.append(s.address &+ s.size)
            sectionIndexes.append(Int32(s.index))
        }
        var byIndex: [Int: ELFImage.Section] = [:]
        for s in sections { byIndex[s.index] = s }
        var out: [Symbol] = []
        out.reserveCapacity(raw.count)
        for r in raw {
            // STT_SECTION, STT_FILE and undefined symbols are not minimal symbols.
            if r.type == 3 || r.type == 4 || r.sectionIndex == 0 { continue }
            if r.type == 6 { continue } // STT_TLS
            let local = r.binding == 0
            let kind: Kind
            var section: Int32 = Int32(r.sectionIndex)
            if r.sectionIndex == 0xfff1 { // SHN_ABS
                kind = .abs
                section = -1
            } else if r.sectionIndex >= 0xff00 {
                continue
            } else if let s = byIndex[r.sectionIndex] {
                if s.isCode {
                    kind = r.type == 10 ? .textIFunc : (local ? .fileText : .text)
                } else if s.isAllocated {
                    if s.hasFileBytes { kind = local ? .fileData : .data } else { kind = local ? .fileBss : .bss }
                } else {
                    continue
                }
            } else {
                continue
            }
            if kind == .fileText && (r.name == "gcc2_compiled." || r.name == "gcc_compiled." || r.name.hasPrefix("__gnu_compiled")) { continue }
            out.append(Symbol(address: r.value, size: r.size, name: r.name, kind: kind, section: section))
        }
        out.sort {
            if $0.address != $1.address { return $0.address < $1.address }
            return $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
        }
        // Compact duplicates (same address, name and section), as GDB does.
        var compacted: [Symbol] = []
        compacted.reserveCapacity(out.count)
        for s in out {
            if let last = compacted.last, last.address == s.address, last.section == s.section, last.name == s.name {
                if compacted[compacted.count - 1].kind == .unknown { compacted[compacted.count - 1].kind = s.kind }
                continue
            }
            compacted.append(s)
        }
        symbols = compacted
        addresses = compacted.map(\.address)
        sizes = compacted.map(\.size)
        kinds = compacted.map(\.kind)
        sectionOf = compacted.map(\.section)
    }

    /// The allocated section containing `pc` (GDB's find_pc_section).
    func section(containing pc: UInt64) -> Int32? {
        var lo = 0, hi = sectionStarts.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if sectionStarts[mid] <= pc { lo = mid + 1 } else { hi = mid }
        }
        var i = lo - 1
        // Sections may be nested or zero-gapped; scan back over a few.
        while i >= 0 {
            if pc < sectionEnds[i] { return sectionIndexes[i] }
            if lo - 1 - i > 4 { break }
            i -= 1
        }
        return nil
    }

    /// GDB 13's lookup_minimal_symbol_by_pc_section(pc, NULL) for one objfile.
    func lookup(pc: UInt64) -> Int? {
        guard !addresses.isEmpty, let section = section(containing: pc) else { return nil }
        return addresses.withUnsafeBufferPointer { address in
            sizes.withUnsafeBufferPointer { size in
                kinds.withUnsafeBufferPointer { kind in
                    sectionOf.withUnsafeBufferPointer { sec in
                        Self.lookup(pc: pc, section: section, address: address, size: size, kind: kind, sec: sec)
                    }
                }
            }
        }
    }

    private static func lookup(pc: UInt64, section: Int32, address: UnsafeBufferPointer<UInt64>, size: UnsafeBufferPointer<UInt64>,
                               kind: UnsafeBufferPointer<Kind>, sec: UnsafeBufferPointer<Int32>) -> Int? {
        guard pc >= address[0] else { return nil }
        // Last symbol with address <= pc (the highest index among equal addresses).
        var lo = 0, hiBound = address.count
        while lo < hiBound {
            let mid = (lo + hiBound) >> 1
            if address[mid] <= pc { lo = mid + 1 } else { hiBound = mid }
        }
        var hi = lo - 1
        var bestZeroSized = -1
        while hi >= 0 {
            if kind[hi] == .abs { hi -= 1; continue }
            if sec[hi] >= 0 && sec[hi] != section { hi -= 1; continue }
            // Prefer a global text symbol to an otherwise identical one of another type.
            if hi > 0 && kind[hi] != .text && kind[hi - 1] == .text && size[hi] == size[hi - 1]
                && address[hi] == address[hi - 1] && sec[hi] == sec[hi - 1] {
                hi -= 1
                continue
            }
            if size[hi] == 0 {
                if bestZeroSized == -1 { bestZeroSized = hi }
                hi -= 1
                continue
            }
            // Past this symbol's end but inside the previous one's (nested sized symbols).
            if hi > 0 && pc >= address[hi] &+ size[hi] && pc < address[hi - 1] &+ size[hi - 1] {
                hi -= 1
                continue
            }
            break
        }
        if bestZeroSized != -1 && (hi < 0 || size[hi] == 0) { hi = bestZeroSized }
        if hi >= 0 && size[hi] != 0 && pc >= address[hi] &+ size[hi] {
            if bestZeroSized != -1 { hi = bestZeroSized } else { return nil }
        }
        return hi >= 0 ? hi : nil
    }

    @inline(__always) func address(_ i: Int) -> UInt64 { addresses[i] }
    @inline(__always) func size(_ i: Int) -> UInt64 { sizes[i] }
    @inline(__always) func kind(_ i: Int) -> Kind { kinds[i] }

    /// The address of the text symbols named `name` when they all have one (nil: none, or
    /// several addresses). A scan: one name lookup does not pay for a table.
    func uniqueTextAddress(named name: String) -> UInt64? {
        var found: UInt64?
        for s in symbols where s.kind.isText && s.name == name {
            if let f = found, f != s.address { return nil }
            found = s.address
        }
        return found
    }

    /// Indexes of symbols exactly at `address`.
    func indexes(at address: UInt64) -> Range<Int> {
        var lo = 0, hi = symbols.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if symbols[mid].address < address { lo = mid + 1 } else { hi = mid }
        }
        var end = lo
        while end < symbols.count && symbols[end].address == address { end += 1 }
        return lo..<end
    }
}
