import TTSystem

/// Prints branch records as text: `N: 0x<from> -> 0x<to>` (N from 0), or in extended
/// files the branch counter as 12 zero-padded decimal digits in place of N.
/// Addresses have at least 8 hex digits, as the original printed them.
public struct BranchDump {
    /// Writes an address's whole text (e.g. `0x…` and ` <fn+18>`); nil prints bare hex.
    public typealias AddressWriter = (UInt64, OutputBuffer) throws -> Void

    public var annotate: AddressWriter?
    /// Treat the format field as the branch counter even without the magic record.
    public var forceExtended = false

    public init(annotate: AddressWriter? = nil, forceExtended: Bool = false) {
        self.annotate = annotate
        self.forceExtended = forceExtended
    }

    public func dump(_ file: BTSFile, to out: OutputBuffer) throws {
        let extended = file.isExtended || forceExtended
        let reserve = OutputBuffer.lineReserve
        if let annotate {
            try file.forEach { i, r in
                try out.reserve(reserve)
                out.putDecimal(extended ? r.format : UInt64(i), minDigits: extended ? 12 : 1)
                out.put(": ")
                try annotate(r.from, out)
                try out.reserve(reserve)
                out.put(" -> ")
                try annotate(r.to, out)
                try out.append(byte: 0x0a)
            }
        } else if extended {
            try file.forEach { _, r in
                try out.reserve(reserve)
                out.putRecordLine(r.format, minDigits: 12, r)
            }
        } else {
            try file.forEach { i, r in
                try out.reserve(reserve)
                out.putRecordLine(UInt64(i), minDigits: 1, r)
            }
        }
    }

    /// One JSON object per line: `{"n":0,"from":"0x…","to":"0x…","format":…}`, with
    /// `"bctr"` instead of `"format"` for extended files, and `"from_sym"`/`"to_sym"`
    /// when a symbolizer string function is given.
    public func dumpJSONLines(_ file: BTSFile, symbol: ((UInt64) -> String?)? = nil,
                              to out: OutputBuffer) throws {
        let extended = file.isExtended || forceExtended
        let reserve = OutputBuffer.lineReserve
        try file.forEach { i, r in
            try out.reserve(reserve)
            out.put("{\"n\":")
            out.putDecimal(UInt64(i))
            out.put(",\"from\":\"0x")
            out.putHex(r.from)
            out.put("\",\"to\":\"0x")
            out.putHex(r.to)
            out.put(extended ? "\",\"bctr\":" : "\",\"format\":")
            out.putDecimal(r.format)
            if let symbol {
                if let s = symbol(r.from) {
                    try out.reserve(reserve)
                    out.put(",\"from_sym\":")
                    try out.appendJSONString(s)
                }
                if let s = symbol(r.to) {
                    try out.reserve(reserve)
                    out.put(",\"to_sym\":")
                    try out.appendJSONString(s)
                }
            }
            try out.reserve(2)
            out.put("}\n")
        }
    }
}

extension OutputBuffer {
    /// `N: 0x<from> -> 0x<to>` and a newline, N zero-padded to `minDigits`, addresses to 8
    /// hex digits: the plain dump's line. Unchecked: after `reserve(OutputBuffer.lineReserve)`.
    @inline(__always)
    func putRecordLine(_ number: UInt64, minDigits: Int, _ r: BranchRecord) {
        putDecimal(number, minDigits: minDigits)
        put(": 0x")
        putHex(r.from, minDigits: 8)
        put(" -> 0x")
        putHex(r.to, minDigits: 8)
        put(byte: 0x0a)
    }
}
