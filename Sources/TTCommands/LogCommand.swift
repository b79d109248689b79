import ArgumentParser
import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `tt log`: look into replay logs (format: docs/replay-log-format.md).
struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Dump, summarise and index replay logs.",
        discussion: """
            Exit status: 0 ok, 65 malformed log (a torn last entry included), 66 missing \
            or unreadable file, 74 I/O error.
            """,
        subcommands: [LogDump.self, LogSummary.self, LogIndex.self, LogGenerate.self])
}

/// Options shared by the commands that read a log.
struct LogInput: ParsableArguments {
    @Flag(help: "Skip damaged bytes to the next intact entry instead of stopping; report what was skipped on stderr.")
    var salvage = false

    @Argument(help: "The replay log.")
    var file: String

    func open() throws -> ReplayLogReader {
        try ReplayLogReader(path: FilePath(file), salvage: salvage)
    }
}

/// Prints a salvaging reader's report on stderr, one line per skip.
func reportSalvage(_ reader: ReplayLogReader) {
    for skip in reader.salvageReport.skips {
        printError("tt: \(reader.name): salvaged: skipped \(skip)")
    }
}

/// Write errors on stdout are I/O errors (74), whatever type carries them.
func outputting(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as SystemError {
        throw ReplayLogError(.io, path: "stdout", e.message)
    }
}

struct LogDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print one line per entry of a replay log.",
        discussion: """
            Default line: the branch counter as (at least) 12 hex digits, the event name, the \
            info name, the payload length and the vCPU, e.g.
              00000000a3f0 hw-branches-64 bts 4080 vcpu=0
            --concise prints the raw header fields as numbers:
              offset index type info domid vcpu payloadLength slotCount ip brctr rcx tsc cr3
            (info, ip and cr3 in hex, the rest decimal). --json prints one object per line.
            """)

    @Flag(help: "Raw header fields, space-separated.")
    var concise = false

    @Flag(help: "One JSON object per entry.")
    var json = false

    @OptionGroup var input: LogInput

    func validate() throws {
        if concise && json { throw ValidationError("--concise and --json exclude each other") }
    }

    func run() throws {
        let reader = try input.open()
        let out = OutputBuffer(fd: 1, capacity: 1 << 18)
        defer { reportSalvage(reader) }
        try outputting {
            // Names are formatted once per type/info, not once per entry.
            var names = NameCache()
            while let e = try reader.next() {
                if json {
                    try writeJSON(e, out, &names)
                } else if concise {
                    try out.appendDecimal(e.offset); try out.append(byte: 0x20)
                    try out.appendDecimal(e.index); try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.type.rawValue)); try out.append(byte: 0x20)
                    try out.append(Bytes.hexPrefix); try out.appendHex(UInt64(e.info)); try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.domid)); try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.vcpu)); try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.payload.count)); try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.slotCount)); try out.append(Bytes.spaceHexPrefix)
                    try out.appendHex(e.cpu.ip); try out.append(byte: 0x20)
                    try out.appendDecimal(e.cpu.brctr); try out.append(byte: 0x20)
                    try out.appendDecimal(e.cpu.rcx); try out.append(byte: 0x20)
                    try out.appendDecimal(e.cpu.tsc); try out.append(Bytes.spaceHexPrefix)
                    try out.appendHex(e.cpu.cr3)
                    try out.endLine()
                } else {
                    try out.appendHex(e.cpu.brctr, minDigits: 12)
                    try out.append(byte: 0x20)
                    try out.append(names.event(e.type))
                    try out.append(byte: 0x20)
                    try out.append(names.info(e.type, e.info))
                    try out.append(byte: 0x20)
                    try out.appendDecimal(UInt64(e.payload.count))
                    try out.append(Bytes.vcpu)
                    try out.appendDecimal(UInt64(e.vcpu))
                    try out.endLine()
                }
            }
            try out.flush()
        }
    }

    private func writeJSON(_ e: ReplayLogEntry, _ out: OutputBuffer, _ names: inout NameCache) throws {
        try out.append("{\"offset\":"); try out.appendDecimal(e.offset)
        try out.append(",\"index\":"); try out.appendDecimal(e.index)
        try out.append(",\"type\":"); try out.appendDecimal(UInt64(e.type.rawValue))
        try out.append(",\"event\":\""); try out.append(names.event(e.type))
        try out.append("\",\"info\":"); try out.appendDecimal(UInt64(e.info))
        try out.append(",\"infoName\":\""); try out.append(names.info(e.type, e.info))
        try out.append("\",\"domid\":"); try out.appendDecimal(UInt64(e.domid))
        try out.append(",\"vcpu\":"); try out.appendDecimal(UInt64(e.vcpu))
        try out.append(",\"length\":"); try out.appendDecimal(UInt64(e.payload.count))
        try out.append(",\"slots\":"); try out.appendDecimal(UInt64(e.slotCount))
        try out.append(",\"ip\":\"0x"); try out.appendHex(e.cpu.ip)
        try out.append("\",\"brctr\":"); try out.appendDecimal(e.cpu.brctr)
        try out.append(",\"rcx\":"); try out.appendDecimal(e.cpu.rcx)
        try out.append(",\"tsc\":"); try out.appendDecimal(e.cpu.tsc)
        try out.append(",\"cr3\":\"0x"); try out.appendHex(e.cpu.cr3)
        if e.branchRecordCount > 0 {
            try out.append("\",\"records\":"); try out.appendDecimal(UInt64(e.branchRecordCount))
            try out.append(",\"firstRecordBrctr\":"); try out.appendDecimal(e.firstRecordBrctr)
            try out.append(byte: UInt8(ascii: "}"))
        } else {
            try out.append("\"}")
        }
        try out.endLine()
    }
}

/// Event and info names as bytes, made once per distinct value (names have no characters
/// that need JSON escaping: the catalogue's and "unknown(N)"/"0x…" forms only).
struct NameCache {
    private var events: [UInt16: [UInt8]] = [:]
    private var infos: [UInt64: [UInt8]] = [:]

    mutating func event(_ t: ReplayEventType) -> [UInt8] {
        if let n = events[t.rawValue] { return n }
        let n = Array(t.name.utf8)
        events[t.rawValue] = n
        return n
    }

    mutating func info(_ t: ReplayEventType, _ info: UInt32) -> [UInt8] {
        let key = UInt64(t.rawValue) << 32 | UInt64(info)
        if let n = infos[key] { return n }
        let n = Array(t.infoName(info).utf8)
        if infos.count < 65536 { infos[key] = n }
        return n
    }
}

/// Constant pieces of output lines, made once.
enum Bytes {
    static let hexPrefix = Array("0x".utf8)
    static let spaceHexPrefix = Array(" 0x".utf8)
    static let vcpu = Array(" vcpu=".utf8)
}

struct LogSummary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Count a replay log's entries by event type; branch counter range per vCPU; bytes.",
        discussion: """
            A log in a recording's state directory (trace-task's trace.ttlog) is summarised \
            with the recording's checkpoint index when it has one (tt index --list's lines; \
            with --json, "checkpointIndex").
            """)

    @Flag(help: "One JSON object.")
    var json = false

    @OptionGroup var input: LogInput

    func run() throws {
        let reader = try input.open()
        defer { reportSalvage(reader) }
        var counts = [UInt16: (entries: UInt64, records: UInt64, bytes: UInt64)]()
        let vcpus = Int(reader.header.vcpuCount)
        var lo = [UInt64](repeating: .max, count: vcpus)
        var hi = [UInt64](repeating: 0, count: vcpus)
        var perVCPU = [UInt64](repeating: 0, count: vcpus)
        var entries: UInt64 = 0
        var payloadBytes: UInt64 = 0
        // Entries come in runs of one type: count a run locally, fold it in when the type changes.
        var runType: UInt16 = 0
        var run = (entries: UInt64(0), records: UInt64(0), bytes: UInt64(0))
        func fold() {
            guard run.entries > 0 else { return }
            var c = counts[runType, default: (0, 0, 0)]
            c.entries += run.entries
            c.records += run.records
            c.bytes += run.bytes
            counts[runType] = c
            run = (0, 0, 0)
        }
        while let e = try reader.next() {
            entries += 1
            let n = UInt64(e.payload.count)
            payloadBytes += n
            let v = Int(e.vcpu)
            perVCPU[v] += 1
            let first = e.firstRecordBrctr
            if first < lo[v] { lo[v] = first }
            if e.cpu.brctr > hi[v] { hi[v] = e.cpu.brctr }
            if e.type.rawValue != runType {
                fold()
                runType = e.type.rawValue
            }
            run.entries += 1
            run.records += UInt64(e.branchRecordCount)
            run.bytes += n
        }
        fold()

        let h = reader.header
        let types = counts.keys.sorted()
        let index = recordingIndex()
        let out = OutputBuffer(fd: 1)
        try outputting {
            if json {
                var s = "{\"file\":\(JSONString.quoted(input.file)),\"version\":\"\(h.version).\(h.minorVersion)\",\"producer\":\(JSONString.quoted(h.producer))"
                s += ",\"guestWordSize\":\(h.guestWordSize),\"vcpus\":\(h.vcpuCount),\"slotSize\":\(h.slotSize)"
                s += ",\"bytes\":\(reader.fileSize),\"payloadBytes\":\(payloadBytes),\"entries\":\(entries),\"events\":["
                s += types.map { t -> String in
                    let c = counts[t]!
                    let type = ReplayEventType(rawValue: t)
                    var o = "{\"type\":\(t),\"event\":\"\(type.name)\",\"entries\":\(c.entries),\"payloadBytes\":\(c.bytes)"
                    if type.branchRecordSize != nil { o += ",\"records\":\(c.records)" }
                    return o + "}"
                }.joined(separator: ",")
                s += "],\"vcpu\":["
                s += (0..<vcpus).filter { perVCPU[$0] > 0 }.map {
                    "{\"vcpu\":\($0),\"entries\":\(perVCPU[$0]),\"brctrFirst\":\(lo[$0]),\"brctrLast\":\(hi[$0])}"
                }.joined(separator: ",")
                s += "],\"salvagedSkips\":\(reader.salvageReport.skips.count),\"salvagedBytes\":\(reader.salvageReport.skippedBytes)"
                switch index {
                case .none: break
                case .problem(let why): s += ",\"checkpointIndex\":{\"error\":\(JSONString.quoted(why))}"
                case .index(let i, _):
                    switch i.spacing {
                    case .instructions(let n): s += ",\"checkpointIndex\":{\"spacing\":\(n),\"checkpoints\":["
                    case .seconds(let seconds): s += ",\"checkpointIndex\":{\"seconds\":\(seconds),\"checkpoints\":["
                    }
                    func took(_ s: Double?) -> String { s.map { ",\"replaySeconds\":\($0)" } ?? "" }
                    s += i.checkpoints.map { c in
                        let l = c.fingerprint.landmark
                        return "{\"icount\":\(c.icount),\"brctr\":\(l.brctr),\"ip\":\"0x\(String(l.ip, radix: 16))\",\"cx\":\"0x\(String(l.cx, radix: 16))\",\"unresumable\":\(i.unresumable.contains(c.icount))\(took(c.replaySeconds))}"
                    }.joined(separator: ",")
                    s += "]"
                    if let end = i.end { s += ",\"end\":{\"icount\":\(end.icount),\"brctr\":\(end.brctr)\(took(end.replaySeconds))}" }
                    s += "}"
                }
                s += "}"
                try out.append(s)
                try out.endLine()
            } else {
                try out.append("file:     \(input.file)\n")
                try out.append("format:   \(h.version).\(h.minorVersion), slot \(h.slotSize) bytes, producer \"\(h.producer)\", \(h.guestWordSize)-bit guest, \(h.vcpuCount) vCPU\(h.vcpuCount == 1 ? "" : "s")\n")
                try out.append("bytes:    \(reader.fileSize) (payload \(payloadBytes))\n")
                try out.append("entries:  \(entries)\n")
                let width = types.map { ReplayEventType(rawValue: $0).name.count }.max() ?? 0
                for t in types {
                    let c = counts[t]!
                    let type = ReplayEventType(rawValue: t)
                    var line = "  " + type.name + String(repeating: " ", count: width - type.name.count)
                    let n = String(c.entries)
                    line += String(repeating: " ", count: max(1, 12 - n.count)) + n
                    if type.branchRecordSize != nil { line += "  (\(c.records) records)" }
                    try out.append(line + "\n")
                }
                for v in 0..<vcpus where perVCPU[v] > 0 {
                    try out.append("vcpu \(v):   \(perVCPU[v]) entries, brctr \(lo[v]) ... \(hi[v])\n")
                }
                if !reader.salvageReport.isEmpty {
                    try out.append("salvaged: \(reader.salvageReport.skips.count) skips, \(reader.salvageReport.skippedBytes) bytes\n")
                }
                switch index {
                case .none: break
                case .problem(let why): try out.append("checkpoint index: \(why)\n")
                case .index(let i, let dir): for line in IndexCommand.listing(i, dir: dir) { try out.append(line + "\n") }
                }
            }
            try out.flush()
        }
    }


    enum RecordingIndex {
        case none
        case index(CheckpointIndex, StateDirectory)
        case problem(String)
    }

    /// The checkpoint index of the recording whose state directory holds the log, if any
    /// (a damaged one is reported, not fatal: the summary is the log's).
    func recordingIndex() -> RecordingIndex {
        var parent = FilePath(input.file).removingLastComponent()
        if parent.isEmpty { parent = "." }
        guard var dir = try? StateDirectory(name: "recording", explicit: parent.string, base: "/"),
              dir.fileExists(StateFile.index) else { return .none }
        // Named as the recording is: its directory's name, when that is a valid one.
        if let name = dir.path.lastComponent?.string, let named = try? StateDirectory(name: name, explicit: dir.path.string, base: "/") {
            dir = named
        }
        do {
            return try CheckpointIndex.load(dir).map { .index($0, dir) } ?? .none
        } catch {
            return .problem(String(describing: error))
        }
    }
}



struct LogIndex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Build the sidecar index FILE.idx (branch counter → offset, per vCPU) for fast seeks.")

    @Option(help: "Bytes of log between index points of a vCPU.")
    var spacing: UInt64 = ReplayLogIndex.defaultSpacing

    @Argument(help: "The replay log.")
    var file: String

    func run() throws {
        let path = FilePath(file)
        let sidecar = ReplayLogIndex.sidecarPath(for: path)
        let reader = try ReplayLogReader(path: path)
        var previous = ""
        switch ReplayLogIndex.load(sidecar: sidecar, for: reader) {
        case .missing: previous = ""
        case .valid: previous = " (replacing a valid index)"
        case .stale(let why): previous = " (replacing a stale index: \(why))"
        case .corrupt(let why): previous = " (replacing a corrupt index: \(why))"
        }
        let index = try ReplayLogIndex.build(logAt: path, spacing: spacing)
        try index.write(to: sidecar)
        let out = OutputBuffer(fd: 1)
        try outputting {
            try out.append("\(sidecar): \(index.entryCount) entries, \(index.pointCount) points\(previous)\n")
            try out.flush()
        }
    }
}

/// Writes a synthetic log of a given size: for benchmarks and for trying the other commands.
struct LogGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write a synthetic replay log (benchmarks, demos).",
        shouldDisplay: false)

    @Option(help: "Approximate size, with an optional K, M or G suffix (powers of 1024).")
    var size: String = "64M"

    @Option(help: "vCPUs.")
    var vcpus: UInt16 = 2

    @Option(help: "Branch records per hw-branches-64 entry.")
    var recordsPerEntry: Int = 170

    @Argument(help: "The log to create (refused if it exists).")
    var file: String

    func run() throws {
        guard let target = parseSize(size) else { throw ValidationError("bad size '\(size)'") }
        guard (1...ReplayLogWriter.maxRecordsPerEntry).contains(recordsPerEntry) else {
            throw ValidationError("--records-per-entry must be in 1...\(ReplayLogWriter.maxRecordsPerEntry)")
        }
        let w = try ReplayLogWriter(creating: FilePath(file),
                                    header: ReplayLogHeader(producer: "tt log generate", guestWordSize: 64, vcpuCount: vcpus))
        var counters = [UInt64](repeating: 0, count: Int(vcpus))
        var rng: UInt64 = 0x1234_5678
        func next() -> UInt64 {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
            return rng
        }
        var records = [UInt64](repeating: 0, count: recordsPerEntry * 3)
        var n = 0
        while w.byteCount < target {
            let v = Int(next() % UInt64(vcpus))
            if n % 16 == 15 {
                let value = next()
                try withUnsafeBytes(of: value) {
                    try w.append(type: .clockRead, info: 0, domid: 1, vcpu: UInt16(v),
                                 cpu: CPUState(ip: 0xffff_ffff_8100_0000 | (value & 0xffff), brctr: counters[v], tsc: value), payload: $0)
                }
            } else {
                for k in 0..<recordsPerEntry {
                    let from = 0xffff_ffff_8100_0000 | (next() & 0xff_ffff)
                    records[3 * k] = from
                    records[3 * k + 1] = from &+ (next() & 0xfff)
                    records[3 * k + 2] = 0
                }
                counters[v] += UInt64(recordsPerEntry)
                try records.withUnsafeBytes {
                    try w.appendBranches(vcpu: UInt16(v), cpu: CPUState(ip: records[3 * recordsPerEntry - 2], brctr: counters[v]), records: $0, domid: 1)
                }
            }
            n += 1
        }
        try w.close()
    }

    private func parseSize(_ s: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = s.last, let unit = units[Character(last.uppercased())] {
            return UInt64(s.dropLast()).map { $0 * unit }
        }
        return UInt64(s)
    }
}
