import TTSystem

/// Exports of a branch trace for tools people look at rather than read.
///
/// The timeline is the branch count: in an extended file each record's branch counter,
/// otherwise the record's index. Chrome's trace-event format takes timestamps in
/// microseconds, so one branch shows as one microsecond.
public enum BranchExport {
    /// Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing): one thread whose
    /// calls are nested B/E slices; out-of-range branches are instant events.
    public static func chrome(_ file: BTSFile, tree: CallTree, to out: OutputBuffer) throws {
        var ts: UInt64 = 0
        func event(_ ph: StaticString, _ name: String, entry: UInt64?) throws {
            try out.reserve(OutputBuffer.lineReserve)
            out.put(",\n{\"ph\":\"")
            out.put(ph)
            out.put("\",\"pid\":1,\"tid\":1,\"ts\":")
            out.putDecimal(ts)
            out.put(",\"name\":")
            try out.appendJSONString(name)
            try out.reserve(OutputBuffer.lineReserve)
            if let entry {
                out.put(",\"args\":{\"entry\":\"0x")
                out.putHex(entry)
                out.put("\"}")
            }
            out.put(byte: UInt8(ascii: "}"))
        }
        try out.append("{\"displayTimeUnit\":\"ns\",\"otherData\":{\"timeline\":\"\(file.isExtended ? "branch counter" : "record number")\"},\"traceEvents\":[")
        // The metadata event comes first, so every later event is preceded by a comma.
        try out.append("\n{\"ph\":\"M\",\"pid\":1,\"tid\":1,\"name\":\"thread_name\",\"args\":{\"name\":\"branches\"}}")
        func emit(_ e: CallTree.Event) throws {
            switch e {
            case let .enter(f, _, how):
                let suffix = how == .inline ? " (inlined)" : ""
                try event("B", (f?.name ?? "??") + suffix, entry: f?.entry)
            case let .leave(f, _, how):
                let suffix = how == .inline ? " (inlined)" : ""
                try event("E", (f?.name ?? "??") + suffix, entry: nil)
            case let .outOfRange(from, to, _, _):
                var text = "out of range 0x"
                text += String(from, radix: 16) + " -> 0x" + String(to, radix: 16)
                try event("i", text, entry: nil)
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
        try out.append("\n]}\n")
    }

    /// Folded stacks (`outer;inner;leaf N`) for flamegraph.pl and speedscope: N is the
    /// number of branches taken while that stack was current. Lines sorted by stack.
    public static func folded(_ file: BTSFile, tree: CallTree, to out: OutputBuffer) throws {
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
            try out.append(stack.replacingSpaces())
            try out.append(byte: UInt8(ascii: " "))
            try out.appendDecimal(n)
            try out.append(byte: 0x0a)
        }
    }
}

private extension String {
    /// Folded-stack tools split a line at its last space: keep names free of them.
    func replacingSpaces() -> String {
        String(unicodeScalars.map { $0 == " " ? "_" : Character($0) })
    }
}
