import Symbolize
import SystemPackage

/// The symbol maps of `tt symbolize`, `bts-dump` and the other commands that print
/// addresses: `--map`s first, then `-U` for user space (`User:`, the lower half of the
/// address space: below 0xc0000000 for a 32-bit image, below 0x800000000000 for 64-bit),
/// then `--symbols` for everything else (no prefix). The first map containing an address
/// wins. A file named by several maps is loaded once.
func makeSymbolizer(symbols: String?, user: String?, maps: [String]) throws -> Symbolizer {
    var entries: [SymbolMapEntry] = []
    var opened: [String: SymbolFile] = [:]
    func load(_ path: String) throws -> SymbolFile {
        if let f = opened[path] { return f }
        let f = try SymbolFile(path: FilePath(path))
        opened[path] = f
        return f
    }
    for spec in maps {
        let m = try MapSpec(parsing: spec)
        entries.append(SymbolMapEntry(range: m.range, file: try load(m.file), prefix: m.prefix, bias: m.bias))
    }
    if let user {
        let f = try load(user)
        let top: UInt64 = f.is64Bit ? 0x7fff_ffff_ffff : 0xbfff_ffff
        entries.append(SymbolMapEntry(range: 0...top, file: f, prefix: "User:"))
    }
    if let symbols {
        entries.append(SymbolMapEntry(range: 0...UInt64.max, file: try load(symbols)))
    }
    return Symbolizer(maps: entries)
}

/// `LO-HI=FILE[,prefix=P][,bias=B]`.
struct MapSpec {
    var range: ClosedRange<UInt64>
    var file: String
    var prefix: String = ""
    var bias: Int64 = 0

    init(parsing spec: String) throws {
        func bad(_ why: String) -> SymbolizeError { SymbolizeError(.data, "--map '\(spec)': \(why)") }
        guard let eq = spec.firstIndex(of: "=") else { throw bad("expected LO-HI=FILE") }
        let rangeText = spec[..<eq]
        let parts = spec[spec.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false)
        guard let dash = rangeText.firstIndex(of: "-"),
              let lo = parseAddress(String(rangeText[..<dash])), let hi = parseAddress(String(rangeText[rangeText.index(after: dash)...])) else {
            throw bad("range must be LO-HI in hex")
        }
        guard lo <= hi else { throw bad("range start is above its end") }
        range = lo...hi
        guard let first = parts.first, !first.isEmpty else { throw bad("no file") }
        file = String(first)
        for option in parts.dropFirst() {
            if option.hasPrefix("prefix=") {
                prefix = String(option.dropFirst(7))
                guard !prefix.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "<" || $0 == ">" }) else { throw bad("bad prefix") }
            } else if option.hasPrefix("bias=") {
                var v = option.dropFirst(5)
                let negative = v.hasPrefix("-")
                if negative { v = v.dropFirst() }
                guard let magnitude = parseAddress(String(v)), magnitude <= UInt64(Int64.max) else { throw bad("bias must be hex") }
                bias = negative ? -Int64(magnitude) : Int64(magnitude)
            } else {
                throw bad("unknown option '\(option)'")
            }
        }
    }
}

