import TTSystem

/// Prints branch records as text: `N: 0x<from> -> 0x<to>` (N from 0), or in extended
/// files the branch counter as 12 zero-padded decimal digits in place of N.
/// Addresses have at least 8 hex digits, as the original printed them.
public struct BranchDump {
    /// Writes an address's whole text (e.g. `0x…` and ` <fn+18>`); nil prints bare hex.
    public typealias AddressWriter = (UInt64, inout LineSink) throws -> Void

    public var annotate: AddressWriter?
    /// Treat the format field as the branch counter even without the magic record.
    public var forceExtended = false

    public init(annotate: AddressWriter? = nil, forceExtended: Bool = false) {
        self.annotate = annotate
        self.forceExtended = forceExtended
    }

    public func dump(_ file: BTSFile, to sink: inout LineSink) throws {
        let extended = file.isExtended || forceExtended
        if let annotate {
            try file.forEach { i, r in
                try sink.beginLine()
                if extended { sink.decimal(r.format, minDigits: 12) } else { sink.decimal(UInt64(i)) }
                sink.ascii(": ")
                try annotate(r.from, &sink)
                try sink.beginLine()
                sink.ascii(" -> ")
                try annotate(r.to, &sink)
                try sink.beginLine()
                sink.newline()
            }
        } else if extended {
            try file.forEach { _, r in
                try sink.beginLine()
                sink.decimal(r.format, minDigits: 12)
                sink.ascii(": ")
                sink.hex(r.from)
                sink.ascii(" -> ")
                sink.hex(r.to)
                sink.newline()
            }
        } else {
            try file.forEach { i, r in
                try sink.beginLine()
                sink.decimal(UInt64(i))
                sink.ascii(": ")
                sink.hex(r.from)
                sink.ascii(" -> ")
                sink.hex(r.to)
                sink.newline()
            }
        }
    }

    /// One JSON object per line: `{"n":0,"from":"0x…","to":"0x…","format":…}`, with
    /// `"bctr"` instead of `"format"` for extended files, and `"from_sym"`/`"to_sym"`
    /// when a symbolizer string function is given.
    public func dumpJSONLines(_ file: BTSFile, symbol: ((UInt64) -> String?)? = nil,
                              to sink: inout LineSink) throws {
        let extended = file.isExtended || forceExtended
        try file.forEach { i, r in
            try sink.beginLine()
            sink.ascii("{\"n\":")
            sink.decimal(UInt64(i))
            sink.ascii(",\"from\":\"")
            sink.hex(r.from, minDigits: 1)
            sink.ascii("\",\"to\":\"")
            sink.hex(r.to, minDigits: 1)
            sink.ascii(extended ? "\",\"bctr\":" : "\",\"format\":")
            sink.decimal(r.format)
            if let symbol {
                if let s = symbol(r.from) {
                    sink.ascii(",\"from_sym\":\"")
                    try sink.jsonEscaped(s)
                    try sink.beginLine()
                    sink.byte(UInt8(ascii: "\""))
                }
                if let s = symbol(r.to) {
                    try sink.beginLine()
                    sink.ascii(",\"to_sym\":\"")
                    try sink.jsonEscaped(s)
                    try sink.beginLine()
                    sink.byte(UInt8(ascii: "\""))
                }
            }
            try sink.beginLine()
            sink.ascii("}\n")
        }
    }
}
