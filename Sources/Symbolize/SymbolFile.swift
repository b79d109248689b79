import CLibDW
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// A function: where it starts and every contiguous part of its code.
public struct FunctionSymbol: Sendable, Equatable {
    public var name: String
    /// The entry point (the start of the first DWARF range, as GDB takes it).
    public var entry: UInt64
    /// The contiguous part that contains the queried address.
    public var range: Range<UInt64>
    /// All parts (hot and cold), in DWARF order.
    public var ranges: [Range<UInt64>]

    public init(name: String, entry: UInt64, range: Range<UInt64>, ranges: [Range<UInt64>]) {
        self.name = name
        self.entry = entry
        self.range = range
        self.ranges = ranges
    }
}

/// A position in the source.
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int = 0) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line)" }
}

/// One inlined instance around an address.
public struct InlineFrame: Sendable, Equatable {
    public var name: String
    /// The instance's entry: the start of its first DWARF range (its low pc when contiguous).
    public var entry: UInt64
    /// The contiguous part of the instance that contains the queried address.
    public var range: Range<UInt64>
    /// Where it was inlined (DW_AT_call_file / DW_AT_call_line).
    public var callSite: SourceLocation?

    public init(name: String, entry: UInt64, range: Range<UInt64>, callSite: SourceLocation?) {
        self.name = name
        self.entry = entry
        self.range = range
        self.callSite = callSite
    }
}

/// One ELF image (32- or 64-bit) with its symbols and, when available, its DWARF
/// (from the file itself, or a separate debug file found by build-id or .gnu_debuglink).
///
/// All tables are built once at load; lookups are binary searches. Addresses are the
/// image's link-time addresses (apply a load bias in `SymbolMapEntry`).
public final class SymbolFile {
    public let path: FilePath
    /// The file the DWARF came from, when it is a separate debug file.
    public let debugPath: FilePath?
    public let is64Bit: Bool

    let image: ELFImage
    private let debugImage: ELFImage?
    private let dwarf: OpaquePointer?
    private let dwarfImage: ELFImage?
    private let dropZero: Bool
    /// Functions, walked on the first query that needs DWARF (a name that the ELF symbol
    /// table answers alone does not: `tt trace-task --start NAME` on a 630 MB vmlinux would
    /// otherwise spend most of a second before the replay starts); inlined instances too
    /// after the first inline query.
    private(set) lazy var index: DWARFIndex = dwarf.map { walk($0, inlines: false) } ?? DWARFIndex()
    let minimal: MinimalSymbols
    private let mapped: MappedFile?
    private var names: NameTable?

    /// Function names, indexed on first use (only name lookups need them).
    var nameTable: NameTable {
        if let names { return names }
        let t = NameTable(index: index, minimal: minimal)
        names = t
        return t
    }

    /// The directories searched for separate debug files.
    public static let defaultDebugDirectories: [FilePath] = ["/usr/lib/debug"]

    /// Loads `path`; when it has no DWARF, a separate debug file is looked up by build-id
    /// and .gnu_debuglink under `debugDirectories`.
    public init(path: FilePath, debugDirectories: [FilePath] = SymbolFile.defaultDebugDirectories) throws {
        self.path = path
        let image = try ELFImage(path: path)
        self.image = image
        is64Bit = image.is64Bit

        var debugImage: ELFImage? = nil
        if !image.hasDebugInfo {
            for candidate in image.separateDebugCandidates(debugDirectories: debugDirectories) where candidate != path {
                if let d = try? ELFImage(path: candidate), d.hasDebugInfo {
                    debugImage = d
                    break
                }
            }
        }
        self.debugImage = debugImage
        debugPath = debugImage?.path

        let dwarfSource = debugImage ?? image
        let dwarf: OpaquePointer? = dwarfSource.hasDebugInfo ? dwarf_begin_elf(dwarfSource.elf, DWARF_C_READ, nil) : nil
        self.dwarf = dwarf

        var raw = image.symbols()
        if raw.isEmpty, let d = debugImage { raw = d.symbols() }
        raw += image.pltSymbols()
        let sections = image.sections
        minimal = MinimalSymbols(raw: raw, sections: sections)
        let sectionAtZero = sections.contains { $0.isAllocated && $0.address == 0 && $0.size > 0 }
        dropZero = !sectionAtZero
        dwarfImage = dwarf == nil ? nil : dwarfSource
        mapped = try? MappedFile(path: path)
    }

    /// One walk over the DWARF, releasing the .debug_info pages it has passed.
    private func walk(_ dwarf: OpaquePointer, inlines: Bool) -> DWARFIndex {
        let image = dwarfImage
        let result = DWARFIndex(dwarf: dwarf, dropZero: dropZero, inlines: inlines) {
            image?.releasePages(section: ".debug_info", below: $0)
        }
        image?.releasePages(section: ".debug_info", below: .max)
        return result
    }

    /// Inlined instances are collected by a second walk, on the first query that needs
    /// them (GDB-style names don't).
    func ensureInlines() {
        if index.hasInlines { return }
        guard let dwarf else { return }
        index = walk(dwarf, inlines: true)
    }

    deinit {
        if let dwarf { dwarf_end(dwarf) }
    }

    /// Whether the image has DWARF (its own or a separate debug file's).
    public var hasDebugInfo: Bool { dwarf != nil }

    // MARK: functions

    func functionSymbol(_ id: Int32, containing address: UInt64?) -> FunctionSymbol {
        let f = index.functions[Int(id)]
        let ranges = Array(index.ranges[Int(f.firstRange)..<Int(f.firstRange + f.rangeCount)])
        let part = address.flatMap { a in ranges.first { $0.contains(a) } } ?? ranges[0]
        return FunctionSymbol(name: index.names[Int(f.name)], entry: f.entry, range: part, ranges: ranges)
    }

    /// The DWARF function (not an inlined instance) whose code contains `address`.
    func dwarfFunction(containing address: UInt64) -> Int32? {
        index.functionTable.item(containing: address)
    }

    /// The real (not inlined) function containing `address`: from DWARF, or from the
    /// ELF symbol table (respecting symbol sizes) when DWARF does not cover it.
    public func function(containing address: UInt64) -> FunctionSymbol? {
        if let id = dwarfFunction(containing: address) {
            return functionSymbol(id, containing: address)
        }
        guard let i = minimal.lookup(pc: address) else { return nil }
        let s = minimal.symbols[i]
        guard s.kind.isText else { return nil }
        let end = s.size > 0 ? s.address &+ s.size : nextSymbolAddress(after: i) ?? (address &+ 1)
        guard address < end else { return nil }
        let r = s.address..<end
        return FunctionSymbol(name: s.name, entry: s.address, range: r, ranges: [r])
    }

    private func nextSymbolAddress(after i: Int) -> UInt64? {
        var j = i + 1
        let syms = minimal.symbols
        while j < syms.count {
            if syms[j].address > syms[i].address && syms[j].section == syms[i].section { return syms[j].address }
            j += 1
        }
        return nil
    }

    /// The function whose entry point is `address`.
    public func function(startingAt address: UInt64) -> FunctionSymbol? {
        if let id = dwarfFunction(containing: address), index.functions[Int(id)].entry == address {
            return functionSymbol(id, containing: address)
        }
        // The last text symbol at the address (symbols at one address are sorted by name).
        guard let i = minimal.indexes(at: address).last(where: { minimal.symbols[$0].kind.isText }) else { return nil }
        if let f = function(containing: address), f.entry == address { return f }
        let s = minimal.symbols[i]
        // Saturating: a symbol at the top of the address space (a corrupt or hostile file)
        // must not make an upper bound below the lower one (found by fuzz/SymbolFileFuzz).
        let (end, wrapped) = s.address.addingReportingOverflow(max(s.size, 1))
        let r = s.address..<(wrapped ? UInt64.max : end)
        return FunctionSymbol(name: s.name, entry: s.address, range: r, ranges: [r])
    }

    // MARK: inlining

    /// The inlined instances containing `address`, innermost first (empty outside any).
    public func inlineChain(at address: UInt64) -> [InlineFrame] {
        ensureInlines()
        guard var id = index.inlineTable.item(containing: address) else { return [] }
        var chain: [InlineFrame] = []
        while id >= 0 {
            let inl = index.inlines[Int(id)]
            let ranges = index.ranges[Int(inl.firstRange)..<Int(inl.firstRange + inl.rangeCount)]
            let part = ranges.first { $0.contains(address) } ?? ranges[ranges.startIndex]
            chain.append(InlineFrame(name: index.names[Int(inl.name)], entry: inl.entry, range: part,
                                     callSite: callSite(of: inl)))
            id = inl.parent
        }
        return chain
    }

    private func unitDIE(_ unit: Int32) -> Dwarf_Die? {
        guard dwarf != nil, unit >= 0, Int(unit) < index.units.count else { return nil }
        return index.units[Int(unit)].die
    }

    /// File names by libdw's string pointer: one String per distinct file.
    private var fileNames: [UnsafePointer<CChar>: String] = [:]

    private func fileName(_ p: UnsafePointer<CChar>) -> String {
        if let s = fileNames[p] { return s }
        let s = String(cString: p)
        fileNames[p] = s
        return s
    }

    private func callSite(of inl: DWARFIndex.Inline) -> SourceLocation? {
        guard inl.callLine != 0, var cudie = unitDIE(inl.unit) else { return nil }
        var files: OpaquePointer? = nil
        var count = 0
        guard dwarf_getsrcfiles(&cudie, &files, &count) == 0, let files, Int(inl.callFile) < count,
              let name = dwarf_filesrc(files, Int(inl.callFile), nil, nil) else { return nil }
        return SourceLocation(file: String(cString: name), line: Int(inl.callLine), column: Int(inl.callColumn))
    }

    // MARK: lines

    /// The source line of the instruction at `address` (from the unit's line table).
    public func sourceLocation(at address: UInt64) -> SourceLocation? {
        guard let dwarf else { return nil }
        var cudie: Dwarf_Die
        if let id = dwarfFunction(containing: address), let die = unitDIE(index.functions[Int(id)].unit) {
            cudie = die
        } else {
            var die = Dwarf_Die()
            guard dwarf_addrdie(dwarf, address, &die) != nil else { return nil }
            cudie = die
        }
        guard let line = dwarf_getsrc_die(&cudie, address) else { return nil }
        var number: Int32 = 0, column: Int32 = 0
        // A negative line only comes from a corrupt line program (lines are unsigned in
        // DWARF; libdw's int wraps): no line then, rather than "-51" or a trap downstream.
        guard let file = dwarf_linesrc(line, nil, nil), dwarf_lineno(line, &number) == 0, number >= 0 else { return nil }
        _ = dwarf_linecol(line, &column)
        return SourceLocation(file: fileName(file), line: Int(number), column: Int(column))
    }

    // MARK: code bytes

    /// `count` bytes of the loaded image at `address`, from the allocated sections with
    /// file contents; nil when any of them is outside such a section.
    public func code(at address: UInt64, count: Int) -> [UInt8]? {
        guard count >= 0, let mapped else { return nil }
        guard let s = image.sections.first(where: {
            $0.isAllocated && $0.hasFileBytes && address >= $0.address && address < $0.address &+ $0.size
        }) else { return nil }
        // Checked sums: a corrupt section header (an offset near 2^64) must give nil, not a
        // trap (found by fuzz/SymbolFileFuzz).
        let offsetInSection = address - s.address
        let (inSection, o1) = offsetInSection.addingReportingOverflow(UInt64(count))
        guard !o1, inSection <= s.size else { return nil }
        let (start, o2) = s.fileOffset.addingReportingOverflow(offsetInSection)
        let (end, o3) = start.addingReportingOverflow(UInt64(count))
        guard !o2, !o3, end <= UInt64(mapped.count) else { return nil }
        let bytes = mapped.bytes
        return Array(UnsafeRawBufferPointer(rebasing: bytes[Int(start)..<Int(start) + count]))
    }
}
