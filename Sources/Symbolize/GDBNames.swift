/// GDB 13's choice of name for an address (`print/a`, `x/i`): build_address_symbolic
/// with prefer_sym_over_minsym off.
///
/// GDB takes the DWARF function containing the address (inlined instances don't count)
/// and the ELF "minimal symbol" covering it. The DWARF function wins, measured from its
/// entry (the start of its first DW_AT_ranges entry, so a cold part placed before the hot
/// part gets a negative offset), except where a minimal symbol starts exactly at the
/// address and the function does not — that is how `<foo.cold>` appears at the start of a
/// cold part. Without a DWARF function the minimal symbol is used; with neither (padding
/// after a sized symbol, no section) there is no name.
extension SymbolFile {
    /// The name GDB would print, as an index into the DWARF names or the ELF symbols,
    /// and the address its offset is measured from.
    struct GDBName {
        var dwarfName: Int32   // index into index.names, or -1
        var elfSymbol: Int32   // index into minimal.symbols, or -1
        var location: UInt64
    }

    func gdbName(at address: UInt64) -> GDBName? {
        var result: GDBName? = nil
        if let id = dwarfFunction(containing: address) {
            let f = index.functions[Int(id)]
            result = GDBName(dwarfName: f.gdbName, elfSymbol: -1, location: f.entry)
        }
        if let m = minimal.lookup(pc: address) {
            // Zero-sized non-code symbols are labels, not names for code.
            if !(minimal.size(m) == 0 && !minimal.kind(m).isText) {
                let start = minimal.address(m)
                if result == nil || (start == address && result!.location != address) {
                    return GDBName(dwarfName: -1, elfSymbol: Int32(m), location: start)
                }
            }
        }
        guard let r = result else { return nil }
        // GDB refuses names more than max-symbolic-offset (UINT_MAX) before the address.
        if address > r.location && address - r.location > UInt64(UInt32.max) { return nil }
        return r
    }

    @inline(__always)
    func appendName(_ n: GDBName, to bytes: inout [UInt8]) {
        if n.dwarfName >= 0 {
            bytes.append(contentsOf: index.names[Int(n.dwarfName)].utf8)
        } else {
            bytes.append(contentsOf: minimal.symbols[Int(n.elfSymbol)].name.utf8)
        }
    }

    /// Innermost inlined instance at `address`: its name index and entry.
    func innermostInlineName(at address: UInt64) -> (name: Int32, entry: UInt64)? {
        ensureInlines()
        guard let id = index.inlineTable.item(containing: address) else { return nil }
        let inl = index.inlines[Int(id)]
        return (inl.name, inl.entry)
    }
}

/// Name → address.
extension SymbolFile {
    struct NameCandidate {
        var address: UInt64
        var unit: String
        var fromELF: Bool
    }

    /// The entry point of function `name`. `unit::name` picks a static function of a
    /// given compile unit (its file name or path suffix). Unknown or ambiguous names throw
    /// a one-line error with close names or the units that define it.
    public func address(ofSymbol query: String) throws -> UInt64 {
        var name = query
        var unitFilter: String? = nil
        let split = lastDoubleColon(in: query)
        // A name with one address among the ELF text symbols is that address whatever the
        // DWARF says (below, a DWARF clone of it loses to the ELF symbol of the name itself),
        // so the DWARF need not be walked for it.
        if split == nil, let address = minimal.uniqueTextAddress(named: query) { return address }
        if let split, split > 0 {
            let utf8 = Array(query.utf8)
            let unit = String(decoding: utf8[..<split], as: UTF8.self)
            if unit.contains(".") {
                unitFilter = unit
                name = String(decoding: utf8[(split + 2)...], as: UTF8.self)
            }
        }
        var candidates = nameCandidates(name)
        if let unitFilter {
            candidates = candidates.filter { !$0.fromELF && ($0.unit == unitFilter || $0.unit.hasSuffix("/" + unitFilter)) }
        }
        if candidates.isEmpty {
            let close = closeNames(to: name)
            let hint = close.isEmpty ? "" : "; did you mean \(close.joined(separator: ", "))?"
            throw SymbolizeError(.data, "\(path): no function named '\(query)'\(hint)", suggestions: close)
        }
        // Clones (foo.isra.0, foo.part.0) carry the DWARF name of their origin; when the
        // name is also an ELF symbol, the ELF symbol's address is the function itself.
        if Set(candidates.map(\.address)).count > 1 {
            let exact = candidates.filter { c in
                minimal.indexes(at: c.address).contains { minimal.symbols[$0].name == name && minimal.symbols[$0].kind.isText }
            }
            let exactAddresses = Set(exact.map(\.address))
            if exactAddresses.count == 1 { return exactAddresses.first! }
            if !exact.isEmpty { candidates = exact }
        }
        let addresses = Set(candidates.map(\.address))
        if addresses.count == 1 { return addresses.first! }
        var seen = Set<UInt64>()
        let listing = candidates.filter { seen.insert($0.address).inserted }
            .sorted { $0.address < $1.address }
            .map { "\($0.unit)::\(name) at 0x\(String($0.address, radix: 16))" }
        throw SymbolizeError(.data, "\(path): '\(query)' is ambiguous: \(listing.joined(separator: ", ")) (use UNIT::NAME)",
                             suggestions: listing)
    }

    private func nameCandidates(_ name: String) -> [NameCandidate] {
        var out: [NameCandidate] = []
        for id in nameTable.dwarf[name] ?? [] {
            let f = index.functions[Int(id)]
            out.append(NameCandidate(address: f.entry, unit: index.units[Int(f.unit)].name, fromELF: false))
        }
        let known = Set(out.map(\.address))
        for i in nameTable.elf[name] ?? [] where !known.contains(minimal.symbols[Int(i)].address) {
            out.append(NameCandidate(address: minimal.symbols[Int(i)].address, unit: "ELF symbol", fromELF: true))
        }
        return out
    }

    func closeNames(to name: String, limit: Int = 5) -> [String] {
        let target = Array(name.utf8)
        let maxDistance = max(1, min(3, target.count / 3))
        var scored: [(Int, String)] = []
        for candidate in nameTable.all {
            let c = candidate.utf8
            if abs(c.count - target.count) > maxDistance {
                if target.count >= 4 && candidate.contains(name) { scored.append((maxDistance + 1, candidate)) }
                continue
            }
            let d = editDistance(target, Array(c), limit: maxDistance)
            if d <= maxDistance { scored.append((d, candidate)) }
        }
        scored.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        return scored.prefix(limit).map(\.1)
    }
}

/// Byte offset of the last "::" in `s`.
private func lastDoubleColon(in s: String) -> Int? {
    let u = Array(s.utf8)
    var i = u.count - 2
    while i >= 0 {
        if u[i] == UInt8(ascii: ":") && u[i + 1] == UInt8(ascii: ":") { return i }
        i -= 1
    }
    return nil
}

/// Levenshtein distance, giving up early once it exceeds `limit`.
func editDistance(_ a: [UInt8], _ b: [UInt8], limit: Int) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        var rowMin = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            rowMin = min(rowMin, current[j])
        }
        if rowMin > limit { return limit + 1 }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// Function names → functions, built on the first name lookup.
final class NameTable {
    var dwarf: [String: [Int32]] = [:]
    var elf: [String: [Int32]] = [:]
    var all: [String] = []

    init(index: DWARFIndex, minimal: MinimalSymbols) {
        for (i, f) in index.functions.enumerated() {
            dwarf[index.names[Int(f.name)], default: []].append(Int32(i))
            // C++: also by the name GDB prints (linkage or qualified name).
            if f.gdbName != f.name { dwarf[index.names[Int(f.gdbName)], default: []].append(Int32(i)) }
        }
        for (i, s) in minimal.symbols.enumerated() where s.kind.isText {
            elf[s.name, default: []].append(Int32(i))
        }
        all = Array(Set(dwarf.keys).union(elf.keys)).sorted()
    }
}
