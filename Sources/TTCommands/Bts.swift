// `tt bts …`: branch records — extraction from the replay log, dumps, call trees, exports.
import ArgumentParser
import BTS
import Symbolize
import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

public struct Bts: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bts",
        abstract: "Branch Trace Store records: extract, dump, call trees, exports, statistics.",
        subcommands: [BtsExtract.self, BtsDump.self, BtsTrace.self, BtsExport.self, BtsStats.self])

    public init() {}
}


/// Open a BTS file and print its warning, if any, on stderr.
func openBTS(_ path: String) throws -> BTSFile {
    let file = try BTSFile(path: FilePath(path))
    if let w = file.warning { printError(w) }
    return file
}

/// Run `body` with an OutputBuffer on standard output, then flush everything it wrote.
func writingToStandardOutput(_ body: (OutputBuffer) throws -> Void) throws {
    let out = OutputBuffer(fd: 1, capacity: 1 << 20)
    try body(out)
    try out.flush()
}

/// Where addresses get their names: `--symbols` for everything not covered otherwise
/// (the guest kernel, no prefix), `-U` for user space (`User:` prefix, the lower half of
/// the address space: below 0xc0000000 for a 32-bit image, below 0x800000000000 for 64-bit),
/// and `--map` for any other image (e.g. `--map ffff830000000000-ffff87ffffffffff=xen-syms,prefix=Xen:`).
/// The first map containing an address wins: `--map`s, then `-U`, then `--symbols`.
struct BtsSymbolOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Debug-symbol file (e.g. vmlinux) for addresses no other map covers.", valueName: "file"))
    var symbols: String?
    @Option(name: [.customShort("U"), .customLong("user")], help: ArgumentHelp("Debug-symbol file for user-space addresses (names prefixed `User:`).", valueName: "file"))
    var user: String?
    @Option(name: .customLong("map"), help: ArgumentHelp("An image for the range LO-HI (hex), with a name prefix and a load bias.", valueName: "LO-HI=FILE[,prefix=P][,bias=B]"))
    var maps: [String] = []

    var any: Bool { symbols != nil || user != nil || !maps.isEmpty }

    func symbolizer() throws -> Symbolizer? {
        guard any else { return nil }
        return try makeSymbolizer(symbols: symbols, user: user, maps: maps)
    }
}

public struct BtsDump: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print branch records, optionally with symbols.",
        discussion: """
            Each record prints as `N: 0x<from> -> 0x<to>` (N counting from 0); in an extended \
            file (first record all ones) the branch counter, as 12 zero-padded decimal digits, \
            replaces N. Several files are printed one after another, each preceded by \
            `==> FILE <==` when there is more than one.
            """)

    @Flag(name: .short, help: "Print a summary of each file on stderr.")
    var debug = false
    @Flag(name: .customShort("x"), help: "Treat the third field as the branch counter even without the magic record.")
    var extended = false
    @Flag(name: [.customShort("G"), .customLong("gdb")], help: "Name addresses as GDB does (containing function only), not showing inlining.")
    var gdbStyle = false
    @Flag(help: "One JSON object per record instead of text.")
    var json = false
    @OptionGroup var symbolOptions: BtsSymbolOptions
    @Argument(help: "BTS files (raw or extended).")
    var files: [String]

    public init() {}

    public func run() throws {
        let symbolic = try symbolOptions.symbolizer().map {
            SymbolicAddresses(symbolizer: $0, style: gdbStyle ? .gdb : .inline)
        }
        var dumper = BranchDump(forceExtended: extended)
        if let symbolic {
            dumper.annotate = { a, out in try symbolic.write(a, to: out) }
        }
        try writingToStandardOutput { out in
            for path in files {
                let file = try openBTS(path)
                if debug {
                    printError("\(path): \(file.count) records, \(file.isExtended ? "extended" : "raw")")
                }
                if files.count > 1 {
                    try out.append("==> \(path) <==\n")
                }
                if json {
                    try dumper.dumpJSONLines(file, symbol: symbolic.map { s in { s.name($0) } }, to: out)
                } else {
                    try dumper.dump(file, to: out)
                }
            }
        }
    }
}

public struct BtsStats: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Count records, distinct targets, and the hottest targets and edges.")

    @Option(name: .short, help: "How many of the hottest entries to list.")
    var top = 10
    @OptionGroup var symbolOptions: BtsSymbolOptions
    @Argument(help: "A BTS file.")
    var file: String

    public init() {}

    public func run() throws {
        let symbolizer = try symbolOptions.symbolizer()
        let bts = try openBTS(file)
        var stats = BranchStats()
        bts.forEach { _, r in stats.add(r) }
        try writingToStandardOutput { out in
            try out.append("records: \(stats.records)\n")
            try out.append("format: \(bts.isExtended ? "extended" : "raw")\n")
            if bts.isExtended, let r = stats.formatRange {
                try out.append("bctr range: \(r.lowerBound)-\(r.upperBound)\n")
            }
            try out.append("unique targets: \(stats.uniqueTargets)\n")
            try out.append("unique edges: \(stats.uniqueEdges)\n")
            let symbolic = symbolizer.map { SymbolicAddresses(symbolizer: $0, style: .gdb) }
            func address(_ a: UInt64) throws {
                if let symbolic {
                    try symbolic.write(a, to: out)
                } else {
                    try out.append("0x")
                    try out.appendHex(a, minDigits: 8)
                }
            }
            if let symbolizer {
                // Branches *into* each function (calls, returns, jumps within it), by target.
                let tree = CallTree(symbolizer: symbolizer)
                let byFunction = stats.hottest(top) { a -> String? in
                    tree.function(containing: a).map { $0.name }
                }
                try out.append("hottest functions (branches landing in them):\n")
                for (name, c) in byFunction {
                    try out.appendDecimal(UInt64(c)); try out.append(" "); try out.append(name); try out.endLine()
                }
            }
            try out.append("hottest targets:\n")
            for (a, c) in stats.hottestTargets(top) {
                try out.appendDecimal(UInt64(c)); try out.append(" "); try address(a); try out.endLine()
            }
            try out.append("hottest edges:\n")
            for (e, c) in stats.hottestEdges(top) {
                try out.appendDecimal(UInt64(c)); try out.append(" "); try address(e.from); try out.append(" -> "); try address(e.to); try out.endLine()
            }
        }
    }
}

public struct BtsTrace: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Rebuild the call tree of a branch trace.",
        discussion: """
            A branch from a call instruction to a function's entry is a call (`Call to f`, \
            indented by depth); a branch to the byte after a call instruction on the stack is a \
            return (`Return from f`, several levels at once after tail calls); a jump to a \
            function's entry is a tail call; any other branch leaving the current function's \
            DWARF ranges prints `*** branch from X to Y out of range [lo-hi]`. Extended files \
            add ` (bctr=N)` to each line.
            """)

    @Flag(name: .short, help: "Also print each branch record (as `# N: from -> to`).")
    var debug = false
    @Flag(name: .customShort("I"), help: "Treat inlined functions as frames.")
    var inlines = false
    @OptionGroup var symbolOptions: BtsSymbolOptions
    @Argument(help: "A BTS file (raw or extended).")
    var file: String

    public init() {}

    public func validate() throws {
        if !symbolOptions.any { throw ValidationError("a call tree needs symbols: give --symbols FILE (or -U/--map)") }
    }

    public func run() throws {
        guard let symbolizer = try symbolOptions.symbolizer() else { return }
        let bts = try openBTS(file)
        let tree = CallTree(symbolizer: symbolizer, inlineFrames: inlines)
        try writingToStandardOutput { out in
            try CallTreePrinter(showCounter: bts.isExtended, debug: debug).run(bts, tree: tree, to: out)
        }
        if tree.undecodableCallSites > 0 {
            printError("\(file): warning: \(tree.undecodableCallSites) branch sources had no code in the symbol files; branches from them to function entries were taken as jumps")
        }
    }
}

public struct BtsExport: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a branch trace for viewers: Chrome trace JSON, folded stacks, JSON lines.",
        discussion: """
            chrome: trace-event JSON for ui.perfetto.dev or chrome://tracing; calls are nested \
            slices on a timeline of branch counts (the branch counter in extended files, the \
            record number otherwise; one branch shows as 1 µs).
            folded: `outer;inner;leaf N` lines for flamegraph.pl or speedscope, N the branches \
            taken in that stack.
            jsonl: one JSON object per record, with symbols when given.
            chrome and folded rebuild the call tree as `tt bts trace` does and need symbols.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case chrome, folded, jsonl }

    @Option(help: "chrome, folded or jsonl.")
    var format: Format
    @Flag(name: .customShort("I"), help: "Treat inlined functions as frames.")
    var inlines = false
    @Flag(name: [.customShort("G"), .customLong("gdb")], help: "jsonl: name addresses as GDB does, not showing inlining.")
    var gdbStyle = false
    @OptionGroup var symbolOptions: BtsSymbolOptions
    @Argument(help: "A BTS file (raw or extended).")
    var file: String

    public init() {}

    public func validate() throws {
        if format != .jsonl && !symbolOptions.any {
            throw ValidationError("--format \(format.rawValue) needs symbols: give --symbols FILE (or -U/--map)")
        }
    }

    public func run() throws {
        let symbolizer = try symbolOptions.symbolizer()
        let bts = try openBTS(file)
        try writingToStandardOutput { out in
            switch format {
            case .jsonl:
                let symbolic = symbolizer.map { SymbolicAddresses(symbolizer: $0, style: gdbStyle ? .gdb : .inline) }
                try BranchDump().dumpJSONLines(bts, symbol: symbolic.map { s in { s.name($0) } }, to: out)
            case .chrome:
                try BranchExport.chrome(bts, tree: CallTree(symbolizer: symbolizer!, inlineFrames: inlines), to: out)
            case .folded:
                try BranchExport.folded(bts, tree: CallTree(symbolizer: symbolizer!, inlineFrames: inlines), to: out)
            }
        }
    }
}

/// `VALUE[:RADIUS]`, each decimal or 0x-hex: a branch counter and how far around it to reach.
struct CounterWithRadius: ExpressibleByArgument {
    var value: UInt64
    var radius: UInt64 = 0

    init?(argument: String) {
        func number(_ t: Substring) -> UInt64? {
            if t.hasPrefix("0x") || t.hasPrefix("0X") { return UInt64(t.dropFirst(2), radix: 16) }
            return UInt64(t)
        }
        let parts = argument.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let v = number(parts[0]) else { return nil }
        value = v
        if parts.count == 2 {
            guard let r = number(parts[1]) else { return nil }
            radius = r
        }
    }
}

public struct BtsExtract: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Copy the branch records of a replay log in a branch-counter range into a BTS file.",
        discussion: """
            Takes the records of the log's hardware-branch entries whose own branch counter lies \
            in [S-radius, E+radius] (bounds included, clamped at 0 and at the maximum). The \
            filter is exact per record: an entry straddling a bound contributes only its records \
            inside the range. Counters are per vCPU; without --vcpu every vCPU's records are taken, \
            each judged by its own counter. With a sidecar index (LOG.idx, from `tt log index`) \
            the scan starts at the range instead of the log's beginning.
            """)

    @Flag(name: .short, help: "Print the entries and records found and the counter ranges on stderr.")
    var debug = false
    @Flag(name: .customShort("x"), help: "Write an extended file: a magic record, then each record's branch counter in its third field.")
    var extended = false
    @Option(name: .customShort("S"), help: ArgumentHelp("First branch counter, and how many before it to include too.", valueName: "val[:radius]"))
    var start: CounterWithRadius?
    @Option(name: .customShort("E"), help: ArgumentHelp("Last branch counter, and how many after it to include too.", valueName: "val[:radius]"))
    var end: CounterWithRadius?
    @Option(help: "Only this vCPU's records.")
    var vcpu: UInt16?
    @Option(name: .short, help: ArgumentHelp("Output file (default: standard output).", valueName: "file"))
    var output: String?
    @Argument(help: "The replay log.")
    var log: String

    public init() {}

    public func run() throws {
        guard let range = BranchExtractor.bounds(start: start?.value, startRadius: start?.radius ?? 0,
                                                 end: end?.value, endRadius: end?.radius ?? 0) else {
            throw BTSError.badArgument("empty range: -S (minus its radius) is above -E (plus its radius)")
        }
        if output == nil && isatty(1) == 1 {
            throw BTSError.badArgument("refusing to write binary records to a terminal: give -o FILE or redirect")
        }
        if let output, sameFile(output, log) || sameFile(output, ReplayLogIndex.sidecarPath(for: FilePath(log)).string) {
            throw BTSError.badArgument("-o \(output): that is the log (or its index) being read; refusing to overwrite it")
        }
        let reader = try ReplayLogReader(path: FilePath(log))
        if let vcpu, vcpu >= reader.header.vcpuCount {
            throw BTSError.badArgument("\(log): --vcpu \(vcpu): the log has \(reader.header.vcpuCount) vCPUs")
        }
        // -o: a new path or a regular file, written as OUT.partial and renamed when whole.
        let out = output.map { FilePath($0) }
        if let out { try SafeFiles.requireReplaceable(out) }
        let partial = out.map { FilePath($0.string + ".partial") }
        let writer = try partial.map { try BTSWriter(creating: $0, extended: extended) }
            ?? BTSWriter(fd: 1, extended: extended)
        let extractor = BranchExtractor(lower: range.lowerBound, upper: range.upperBound, vcpu: vcpu, extended: extended)
        let summary = try extractor.extract(from: reader, logPath: FilePath(log), to: writer)
        try writer.close()
        if let out, let partial { try SafeFiles.commit(partial, to: out) }
        if debug {
            printError("\(log): \(summary.branchEntriesRead) branch entries read, \(summary.branchEntriesUsed) in range, \(summary.records) records written\(summary.usedIndex ? " (started through the index)" : "")")
            for (v, r) in summary.counterRangeSeen.sorted(by: { $0.key < $1.key }) {
                let w = summary.counterRange[v].map { "\($0.lowerBound)-\($0.upperBound)" } ?? "none"
                printError("  vcpu \(v): counters seen \(r.lowerBound)-\(r.upperBound), written \(w)")
            }
        }
        if extended && vcpu == nil && summary.counterRange.count > 1 {
            printError("\(log): warning: records of \(summary.counterRange.count) vCPUs are interleaved in one file and their counters are per vCPU; use --vcpu N for one")
        }
    }
}

/// `bts-dump` etc. print their own name in usage and errors; `tt bts …` prints `tt`.

private func renamed(_ c: CommandConfiguration, _ name: String) -> CommandConfiguration {
    var c = c
    c.commandName = name
    return c
}

/// `bts-extract`: the original XenTT name of `tt bts extract`.
public struct BtsExtractTool: ParsableCommand {
    public static let configuration = renamed(BtsExtract.configuration, "bts-extract")
    @OptionGroup var command: BtsExtract
    public init() {}
    public mutating func validate() throws { try command.validate() }
    public mutating func run() throws { try command.run() }
}

/// `bts-dump`: the original XenTT name of `tt bts dump`.
public struct BtsDumpTool: ParsableCommand {
    public static let configuration = renamed(BtsDump.configuration, "bts-dump")
    @OptionGroup var command: BtsDump
    public init() {}
    public mutating func validate() throws { try command.validate() }
    public mutating func run() throws { try command.run() }
}

/// `bts-trace`: the original XenTT name of `tt bts trace`.
public struct BtsTraceTool: ParsableCommand {
    public static let configuration = renamed(BtsTrace.configuration, "bts-trace")
    @OptionGroup var command: BtsTrace
    public init() {}
    public mutating func validate() throws { try command.validate() }
    public mutating func run() throws { try command.run() }
}

/// Whether two paths name the same existing file (same device and inode).
func sameFile(_ a: String, _ b: String) -> Bool {
    guard let sa = try? FilePath(a).stat(), let sb = try? FilePath(b).stat() else { return false }
    return sa.deviceID == sb.deviceID && sa.inode == sb.inode
}
