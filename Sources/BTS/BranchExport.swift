import TTSystem

/// Exports of a branch trace for tools people look at rather than read.
///
/// The timeline is the branch count: in an extended file each record's branch counter,
/// otherwise the record's index. Chrome's trace-event format takes timestamps in
/// microseconds, so one branch shows as one microsecond.
public enum BranchExport {
    /// Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing): one thread whose
    /// calls are nested B/E slices; out-of-range branches are instant events.
    public static func chrome(_ file: BTSFile, tree: CallTree, to sink: inout LineSink) throws {
        var ts: UInt64 = 0
        var first = true
        func event(_ ph: StaticString, _ name: String, entry: UInt64?, sink: inout LineSink) throws {
            try sink.beginLine()
            sink.ascii(first ? "\n" : ",\n")
            first = false
            sink.ascii("{\"ph\":\"")
            sink.ascii(ph)
            sink.ascii("\",\"pid\":1,\"tid\":1,\"ts\":")
            sink.decimal(ts)
            sink.ascii(",\"name\":\"")
            try sink.jsonEscaped(name)
            try sink.beginLine()
            sink.byte(UInt8(ascii: "\""))
            if let entry {
                sink.ascii(",\"args\":{\"entry\":\"")
                sink.hex(entry, minDigits: 1)
                sink.ascii("\"}")
            }
            sink.byte(UInt8(ascii: "}"))
        }
        try sink.string("{\"displayTimeUnit\":\"ns\",\"otherData\":{\"timeline\":\"\(file.isExtended ? "branch counter" : "record number")\"},\"traceEvents\":[")
        try sink.string("\n{\"ph\":\"M\",\"pid\":1,\"tid\":1,\"name\":\"thread_name\",\"args\":{\"name\":\"branches\"}}")
        first = false
        func emit(_ e: CallTree.Event) throws {
            switch e {
            case let .enter(f, _, how):
                let suffix = how == .inline ? " (inlined)" : ""
                try event("B", (f?.name ?? "??") + suffix, entry: f?.entry, sink: &sink)
            case let .leave(f, _, how):
                let suffix = how == .inline ? " (inlined)" : ""
                try event("E", (f?.name ?? "??") + suffix, entry: nil, sink: &sink)
            case let .outOfRange(from, to, _, _):
                var text = "out of range 0x"
                text += String(from, radix: 16) + " -> 0x" + String(to, radix: 16)
                try event("i", text, entry: nil, sink: &sink)
            }
        }
        var last: UInt64 = 0
        try file.forEach { i, r in
            ts = file.isExtended ? r.format : UInt64(i)
            last = ts
            try tree.process(r, emit: emit)
        }
        ts = last &+ 1
        try tree.finish(emit: emit)
        try sink.beginLine()
        sink.ascii("\n]}\n")
    }

    /// Folded stacks (`outer;inner;leaf N`) for flamegraph.pl and speedscope: N is the
    /// number of branches taken while that stack was current. Lines sorted by stack.
    public static func folded(_ file: BTSFile, tree: CallTree, to sink: inout LineSink) throws {
        var names: [String] = []
        var key: String? = nil
        var counts: [String: UInt64] = [:]
        func emit(_ e: CallTree.Event) {
            switch e {
            case let .enter(f, _, how):
                names.append((f?.name ?? "??") + (how == .inline ? " (inlined)" : ""))
                key = nil
            case .leave:
                names.removeLast()
                key = nil
            case .outOfRange: break
            }
        }
        file.forEach { _, r in
            // Each branch counts for the stack it was taken in.
            tree.enterSource(of: r, emit: emit)
            if key == nil { key = names.joined(separator: ";") }
            counts[key!, default: 0] += 1
            tree.follow(r, emit: emit)
        }
        for (stack, n) in counts.sorted(by: { $0.key < $1.key }) {
            try sink.string(stack.replacingSpaces())
            try sink.beginLine()
            sink.byte(UInt8(ascii: " "))
            sink.decimal(n)
            sink.newline()
        }
    }
}

private extension String {
    /// Folded-stack tools split a line at its last space: keep names free of them.
    func replacingSpaces() -> String {
        String(unicodeScalars.map { $0 == " " ? "_" : Character($0) })
    }
}
