import CLibDW

/// Everything Symbolize needs from DWARF, read by walking each unit's DIE tree
/// (skipping types and variables) through libdw: functions with all their ranges, and,
/// when asked for, inlined instances with their ranges and call sites. Line tables stay
/// in libdw and are read lazily per unit.
struct DWARFIndex {
    struct Function {
        var name: Int32        // index into names
        /// The name GDB prints for it (differs for C++: the linkage name, or the
        /// qualified name with its parameter list).
        var gdbName: Int32
        var entry: UInt64
        var firstRange: Int32  // index into ranges
        var rangeCount: Int32
        var unit: Int32
    }

    struct Inline {
        var name: Int32
        var entry: UInt64
        var firstRange: Int32
        var rangeCount: Int32
        var parent: Int32      // enclosing inline instance, or -1
        var function: Int32    // enclosing function
        var unit: Int32
        var callFile: UInt32
        var callLine: UInt32
        var callColumn: UInt32
    }

    struct Unit {
        var dieOffset: UInt64
        var name: String
        /// The unit's DIE handle, kept so lookups skip dwarf_offdie's search.
        var die: Dwarf_Die
    }

    var names: [String] = []
    var functions: [Function] = []
    var inlines: [Inline] = []
    var ranges: [Range<UInt64>] = []
    var units: [Unit] = []
    var functionTable = RangeTable()
    var inlineTable = RangeTable()

    init() {}

    /// Whether inlined instances were collected.
    private(set) var hasInlines = false

    /// Walks every compile unit of `dwarf`. `dropZero` discards ranges starting at
    /// address 0 (functions the linker discarded), as GDB does when no section is at 0.
    /// `inlines`: also collect inlined instances (the functions are the same either way,
    /// with the same ids). `walked` is called now and then with the .debug_info offset the
    /// walk has passed (the caller may release those file pages).
    init(dwarf: OpaquePointer, dropZero: Bool, inlines: Bool = true, walked: ((UInt64) -> Void)? = nil) {
        var builder = Builder(dropZero: dropZero, inlines: inlines)
        var cu: OpaquePointer? = nil
        var reported: UInt64 = 0
        while true {
            var next: OpaquePointer? = nil
            var version: Dwarf_Half = 0
            var unitType: UInt8 = 0
            var cudie = Dwarf_Die()
            if dwarf_get_units(dwarf, cu, &next, &version, &unitType, &cudie, nil) != 0 { break }
            cu = next
            guard unitType == UInt8(DW_UT_compile) || unitType == UInt8(DW_UT_partial) || unitType == UInt8(DW_UT_skeleton) else { continue }
            let unitName = dwarf_diename(&cudie).map { String(cString: $0) } ?? "?"
            builder.unit = Int32(builder.index.units.count)
            builder.index.units.append(Unit(dieOffset: dwarf_dieoffset(&cudie), name: unitName, die: cudie))
            var lang: Dwarf_Word = 0
            var langAttr = Dwarf_Attribute()
            if dwarf_attr(&cudie, UInt32(DW_AT_language), &langAttr) != nil { _ = dwarf_formudata(&langAttr, &lang) }
            builder.cxx = [0x4, 0x19, 0x1a, 0x21].contains(lang)
            builder.scope = []
            builder.beginUnit(&cudie)
            builder.walkChildren(of: &cudie, function: -1, inline: -1, depth: 0)
            builder.resolvePendingNames()
            builder.endUnit()
            if let walked {
                let offset = dwarf_dieoffset(&cudie)
                if offset &- reported >= 16 << 20 {
                    walked(offset)
                    reported = offset
                }
            }
        }
        self = builder.finish()
        hasInlines = inlines
    }

    private struct Builder {
        var index = DWARFIndex()
        var unit: Int32 = 0
        let dropZero: Bool
        /// The unit is C++: GDB names its functions differently.
        var cxx = false
        /// Enclosing namespaces and classes, for C++ qualified names.
        var scope: [String] = []
        /// C++ declarations seen inside namespaces/classes: DIE offset → scope.
        var scopeByDeclaration: [UInt64: [String]] = [:]
        /// C++ definitions whose declaration's scope is resolved at the end of the unit.
        var pendingNames: [(function: Int, declaration: UInt64, suffix: String)] = []
        var nameIDs: [String: Int32] = [:]
        /// Names by the DIE offset that carries them (abstract origins are shared).
        var nameByOrigin: [UInt64: Int32] = [:]
        var functionIntervals: [RangeTable.Interval] = []
        var inlineIntervals: [RangeTable.Interval] = []
        var scratch: [Range<UInt64>] = []
        let inlines: Bool
        /// The current unit's first function interval, and whether GDB's block vector for
        /// the unit has an address map (see endUnit).
        var unitFirstInterval = 0
        var unitHasAddressMap = false

        init(dropZero: Bool, inlines: Bool) {
            self.dropZero = dropZero
            self.inlines = inlines
        }

        /// GDB looks up a unit's blocks through an address map when any block of the unit
        /// (the unit itself, a function, lexical block or inlined instance) has ranges other
        /// than its one [lowest, highest) span (buildsym's m_pending_addrmap_interesting),
        /// else by binary search over the blocks sorted by start.
        mutating func noteRanges() {
            if scratch.count > 1 { unitHasAddressMap = true }
        }

        mutating func beginUnit(_ cudie: inout Dwarf_Die) {
            unitFirstInterval = functionIntervals.count
            unitHasAddressMap = false
            if dwarf_hasattr(&cudie, UInt32(DW_AT_ranges)) != 0 {
                readRanges(&cudie)
                noteRanges()
            }
        }

        /// Functions of one unit covering the same addresses (assembler aliases: gas emits a
        /// DW_TAG_subprogram per function symbol) are ranked as GDB finds them: through the
        /// address map, the first block recorded wins (blocks are recorded children first, in
        /// DIE order, and never overwrite); by binary search, the last block among those with
        /// the same start wins (its stable sort keeps later DIEs at higher indexes).
        mutating func endUnit() {
            guard unitHasAddressMap else { return }
            for i in unitFirstInterval..<functionIntervals.count {
                functionIntervals[i].rank = -functionIntervals[i].rank
            }
        }

        mutating func intern(_ s: String) -> Int32 {
            if let id = nameIDs[s] { return id }
            let id = Int32(index.names.count)
            index.names.append(s)
            nameIDs[s] = id
            return id
        }

        /// The DIE's name, following DW_AT_abstract_origin / DW_AT_specification.
        mutating func nameID(of die: inout Dwarf_Die) -> Int32 {
            var attr = Dwarf_Attribute()
            var originKey: UInt64 = 0
            if dwarf_attr(&die, UInt32(DW_AT_abstract_origin), &attr) != nil || dwarf_attr(&die, UInt32(DW_AT_specification), &attr) != nil {
                var origin = Dwarf_Die()
                if dwarf_formref_die(&attr, &origin) != nil {
                    originKey = dwarf_dieoffset(&origin)
                    if let id = nameByOrigin[originKey] { return id }
                }
            }
            var nameAttr = Dwarf_Attribute()
            var name: String
            if dwarf_attr_integrate(&die, UInt32(DW_AT_name), &nameAttr) != nil, let s = dwarf_formstring(&nameAttr) {
                name = String(cString: s)
            } else if dwarf_attr_integrate(&die, UInt32(DW_AT_linkage_name), &nameAttr) != nil, let s = dwarf_formstring(&nameAttr) {
                name = String(cString: s)
            } else {
                name = "??"
            }
            let id = intern(name)
            if originKey != 0 { nameByOrigin[originKey] = id }
            return id
        }

        /// GDB's linkage name for a function, which print/a shows: DW_AT_linkage_name when
        /// there is one (any language; printed mangled), else for C++ the qualified name with
        /// parameter types, else DW_AT_name.
        mutating func gdbName(_ die: inout Dwarf_Die, plain: Int32) -> Int32 {
            var attr = Dwarf_Attribute()
            if (dwarf_attr_integrate(&die, UInt32(DW_AT_linkage_name), &attr) != nil
                || dwarf_attr_integrate(&die, UInt32(DW_AT_MIPS_linkage_name), &attr) != nil),
               let s = dwarf_formstring(&attr) {
                return intern(String(cString: s))
            }
            guard cxx else { return plain }
            var params: [String] = []
            var child = Dwarf_Die()
            if dwarf_child(&die, &child) == 0 {
                repeat {
                    if dwarf_tag(&child) == Int32(DW_TAG_formal_parameter) {
                        var flag = false
                        var a = Dwarf_Attribute()
                        if dwarf_attr_integrate(&child, UInt32(DW_AT_artificial), &a) != nil { _ = dwarf_formflag(&a, &flag) }
                        if !flag { params.append(typeName(&child, depth: 0)) }
                    }
                    var next = Dwarf_Die()
                    if dwarf_siblingof(&child, &next) != 0 { break }
                    child = next
                } while true
            }
            let suffix = index.names[Int(plain)] + "(" + params.joined(separator: ", ") + ")"
            // A definition outside its namespace names its declaration by DW_AT_specification,
            // a concrete instance its abstract instance by DW_AT_abstract_origin (which may
            // in turn name the declaration).
            var current = die
            for _ in 0..<3 {
                var link = Dwarf_Attribute()
                guard dwarf_attr(&current, UInt32(DW_AT_abstract_origin), &link) != nil
                        || dwarf_attr(&current, UInt32(DW_AT_specification), &link) != nil else { break }
                var target = Dwarf_Die()
                guard dwarf_formref_die(&link, &target) != nil else { break }
                let key = dwarf_dieoffset(&target)
                if let s = scopeByDeclaration[key] { return intern((s + [suffix]).joined(separator: "::")) }
                var further = Dwarf_Attribute()
                if dwarf_attr(&target, UInt32(DW_AT_specification), &further) == nil
                    && dwarf_attr(&target, UInt32(DW_AT_abstract_origin), &further) == nil {
                    pendingNames.append((index.functions.count, key, suffix))
                    break
                }
                current = target
            }
            return intern((scope + [suffix]).joined(separator: "::"))
        }

        /// The C++ spelling of a DIE's DW_AT_type, as GDB writes it in names.
        func typeName(_ die: inout Dwarf_Die, depth: Int) -> String {
            var attr = Dwarf_Attribute()
            var type = Dwarf_Die()
            guard depth < 16, dwarf_attr_integrate(&die, UInt32(DW_AT_type), &attr) != nil,
                  dwarf_formref_die(&attr, &type) != nil else { return "void" }
            switch dwarf_tag(&type) {
            case Int32(DW_TAG_pointer_type): return typeName(&type, depth: depth + 1) + "*"
            case Int32(DW_TAG_reference_type): return typeName(&type, depth: depth + 1) + "&"
            case Int32(DW_TAG_rvalue_reference_type): return typeName(&type, depth: depth + 1) + "&&"
            case Int32(DW_TAG_const_type): return typeName(&type, depth: depth + 1) + " const"
            case Int32(DW_TAG_volatile_type): return typeName(&type, depth: depth + 1) + " volatile"
            default: return dwarf_diename(&type).map { String(cString: $0) } ?? "?"
            }
        }

        mutating func readRanges(_ die: inout Dwarf_Die) {
            scratch.removeAll(keepingCapacity: true)
            var base: Dwarf_Addr = 0, start: Dwarf_Addr = 0, end: Dwarf_Addr = 0
            var offset = dwarf_ranges(&die, 0, &base, &start, &end)
            while offset > 0 {
                if start < end && !(dropZero && start == 0) { scratch.append(start..<end) }
                offset = dwarf_ranges(&die, offset, &base, &start, &end)
            }
        }

        mutating func walkChildren(of parent: inout Dwarf_Die, function: Int32, inline: Int32, depth: Int32) {
            var child = Dwarf_Die()
            guard dwarf_child(&parent, &child) == 0 else { return }
            while true {
                visit(&child, function: function, inline: inline, depth: depth)
                var sibling = Dwarf_Die()
                if dwarf_siblingof(&child, &sibling) != 0 { break }
                child = sibling
            }
        }

        mutating func visit(_ die: inout Dwarf_Die, function: Int32, inline: Int32, depth: Int32) {
            let tag = dwarf_tag(&die)
            switch tag {
            case Int32(DW_TAG_subprogram):
                readRanges(&die)
                if scratch.isEmpty {
                    if cxx && !scope.isEmpty { scopeByDeclaration[dwarf_dieoffset(&die)] = scope }
                    // A declaration or an abstract instance: nothing at any address, but
                    // C++ classes may nest definitions; no code below it either way.
                    return
                }
                let id = Int32(index.functions.count)
                let first = Int32(index.ranges.count)
                index.ranges.append(contentsOf: scratch)
                let plain = nameID(of: &die)
                index.functions.append(Function(name: plain, gdbName: gdbName(&die, plain: plain), entry: scratch[0].lowerBound,
                                                firstRange: first, rangeCount: Int32(scratch.count), unit: unit))
                noteRanges()
                for r in scratch {
                    functionIntervals.append(.init(start: r.lowerBound, end: r.upperBound, item: id, depth: depth, rank: id))
                }
                if dwarf_haschildren(&die) != 0 {
                    walkChildren(of: &die, function: id, inline: -1, depth: depth + 1)
                }
            case Int32(DW_TAG_inlined_subroutine):
                readRanges(&die)
                noteRanges()
                var next = inline
                if inlines && !scratch.isEmpty && function >= 0 {
                    let id = Int32(index.inlines.count)
                    let first = Int32(index.ranges.count)
                    index.ranges.append(contentsOf: scratch)
                    var file: Dwarf_Word = 0, line: Dwarf_Word = 0, column: Dwarf_Word = 0
                    var attr = Dwarf_Attribute()
                    if dwarf_attr(&die, UInt32(DW_AT_call_file), &attr) != nil { _ = dwarf_formudata(&attr, &file) }
                    if dwarf_attr(&die, UInt32(DW_AT_call_line), &attr) != nil { _ = dwarf_formudata(&attr, &line) }
                    if dwarf_attr(&die, UInt32(DW_AT_call_column), &attr) != nil { _ = dwarf_formudata(&attr, &column) }
                    index.inlines.append(Inline(name: nameID(of: &die), entry: scratch[0].lowerBound, firstRange: first,
                                                rangeCount: Int32(scratch.count), parent: inline, function: function, unit: unit,
                                                callFile: UInt32(truncatingIfNeeded: file), callLine: UInt32(truncatingIfNeeded: line),
                                                callColumn: UInt32(truncatingIfNeeded: column)))
                    for r in scratch {
                        inlineIntervals.append(.init(start: r.lowerBound, end: r.upperBound, item: id, depth: depth, rank: 0))
                    }
                    next = id
                }
                if dwarf_haschildren(&die) != 0 {
                    walkChildren(of: &die, function: function, inline: next, depth: depth + 1)
                }
            case Int32(DW_TAG_namespace), Int32(DW_TAG_class_type), Int32(DW_TAG_structure_type), Int32(DW_TAG_union_type):
                // Only C++ defines functions inside these.
                guard cxx, dwarf_haschildren(&die) != 0 else { return }
                scope.append(dwarf_diename(&die).map { String(cString: $0) } ?? "(anonymous namespace)")
                walkChildren(of: &die, function: function, inline: inline, depth: depth + 1)
                scope.removeLast()
            case Int32(DW_TAG_lexical_block), Int32(DW_TAG_try_block), Int32(DW_TAG_catch_block), Int32(DW_TAG_module):
                if tag == Int32(DW_TAG_lexical_block) && !unitHasAddressMap && dwarf_hasattr(&die, UInt32(DW_AT_ranges)) != 0 {
                    readRanges(&die)
                    noteRanges()
                }
                if dwarf_haschildren(&die) != 0 {
                    walkChildren(of: &die, function: function, inline: inline, depth: depth + 1)
                }
            default:
                return
            }
        }

        mutating func resolvePendingNames() {
            for p in pendingNames {
                if let s = scopeByDeclaration[p.declaration] {
                    index.functions[p.function].gdbName = intern((s + [p.suffix]).joined(separator: "::"))
                }
            }
            pendingNames.removeAll()
            scopeByDeclaration.removeAll()
        }

        mutating func finish() -> DWARFIndex {
            index.functionTable = RangeTable(functionIntervals)
            index.inlineTable = RangeTable(inlineIntervals)
            functionIntervals = []
            inlineIntervals = []
            return index
        }
    }
}
