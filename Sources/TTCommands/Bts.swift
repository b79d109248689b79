// `tt bts …`: branch records — extraction from the replay log, dumps, call trees, exports.
import ArgumentParser
import BTS
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

public struct Bts: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bts",
        abstract: "Branch Trace Store records: extract, dump, call trees, exports, statistics.",
        subcommands: [BtsDump.self, BtsStats.self])

    public init() {}
}

/// Print a line on stderr (warnings, -d summaries).
func printError(_ line: String) {
    _ = (line + "\n").withCString { fputs($0, stderr) }
}

/// Open a BTS file and print its warning, if any, on stderr.
func openBTS(_ path: String) throws -> BTSFile {
    let file = try BTSFile(path: FilePath(path))
    if let w = file.warning { printError(w) }
    return file
}

public struct BtsDump: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print branch records, optionally with symbols.",
        discussion: """
            Each record prints as `N: 0x<from> -> 0x<to>` (N counting from 0); in an extended
            file (first record all ones) the branch counter, as 12 zero-padded decimal digits,
            replaces N. Several files are printed one after another, each preceded by
            `==> FILE <==` when there is more than one.
            """)

    @Flag(name: .short, help: "Print a summary of each file on stderr.")
    var debug = false
    @Flag(name: .short, help: "Treat the third field as the branch counter even without the magic record.")
    var extended = false
    @Flag(help: "One JSON object per record instead of text.")
    var json = false
    @Argument(help: "BTS files (raw or extended).")
    var files: [String]

    public init() {}

    public func run() throws {
        try reporting {
            let out = OutputBuffer(fd: 1, capacity: 1 << 20)
            var sink = LineSink(out)
            defer { sink.deallocate() }
            let dumper = BranchDump(forceExtended: extended)
            for path in files {
                let file = try openBTS(path)
                if debug {
                    printError("\(path): \(file.count) records, \(file.isExtended ? "extended" : "raw")")
                }
                if files.count > 1 {
                    try sink.beginLine()
                    try sink.string("==> \(path) <==\n")
                }
                if json {
                    try dumper.dumpJSONLines(file, to: &sink)
                } else {
                    try dumper.dump(file, to: &sink)
                }
            }
            try sink.flush()
            try out.flush()
        }
    }
}

public struct BtsStats: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Count records, distinct targets, and the hottest targets and edges.")

    @Option(name: .short, help: "How many of the hottest entries to list.")
    var top = 10
    @Argument(help: "A BTS file.")
    var file: String

    public init() {}

    public func run() throws {
        try reporting {
            let bts = try openBTS(file)
            var stats = BranchStats()
            bts.forEach { _, r in stats.add(r) }
            let out = OutputBuffer(fd: 1)
            var sink = LineSink(out)
            defer { sink.deallocate() }
            try sink.string("records: \(stats.records)\n")
            try sink.string("format: \(bts.isExtended ? "extended" : "raw")\n")
            if bts.isExtended, let r = stats.formatRange {
                try sink.string("bctr range: \(r.lowerBound)-\(r.upperBound)\n")
            }
            try sink.string("unique targets: \(stats.uniqueTargets)\n")
            try sink.string("unique edges: \(stats.uniqueEdges)\n")
            try sink.string("hottest targets:\n")
            for (a, c) in stats.hottestTargets(top) {
                try sink.beginLine(); sink.decimal(UInt64(c), minDigits: 1); sink.ascii(" "); sink.hex(a); sink.newline()
            }
            try sink.string("hottest edges:\n")
            for (e, c) in stats.hottestEdges(top) {
                try sink.beginLine(); sink.decimal(UInt64(c)); sink.ascii(" "); sink.hex(e.from); sink.ascii(" -> "); sink.hex(e.to); sink.newline()
            }
            try sink.flush()
            try out.flush()
        }
    }
}
