/// The one JSON string escaper (RFC 8259 §7): `"` and `\` backslashed; newline, carriage
/// return, tab, backspace and form feed as `\n \r \t \b \f`; other bytes below 0x20 as
/// `\u00XX`; everything else, including non-ASCII UTF-8, copied as it is. Every JSON
/// writer in tt (the commands' JSON lines, BTS exports, xl's JSON domain spec) uses it.
public enum JSONString {
    /// `text` as a JSON string literal, quotes included.
    public static func quoted(_ text: String) -> String {
        var text = text
        var out: [UInt8] = [UInt8(ascii: "\"")]
        text.withUTF8 { u in
            out.reserveCapacity(u.count + 2)
            escape(u) { out.append(contentsOf: $0) }
        }
        out.append(UInt8(ascii: "\""))
        return String(decoding: out, as: UTF8.self)
    }

    /// Hands `utf8`'s escaped form to `emit` in pieces: runs that need no escaping as they
    /// are (no copy), and each escape sequence.
    public static func escape(_ utf8: UnsafeBufferPointer<UInt8>, _ emit: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var run = 0
        for i in 0..<utf8.count {
            let c = utf8[i]
            guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
            if run < i { try emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[run..<i]))) }
            run = i + 1
            var sequence: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (UInt8(ascii: "\\"), 0, 0, 0, 0, 0)
            var count = 2
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): sequence.1 = c
            case 0x0a: sequence.1 = UInt8(ascii: "n")
            case 0x0d: sequence.1 = UInt8(ascii: "r")
            case 0x09: sequence.1 = UInt8(ascii: "t")
            case 0x08: sequence.1 = UInt8(ascii: "b")
            case 0x0c: sequence.1 = UInt8(ascii: "f")
            default:
                sequence = (UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                            Digits.hexDigit(c >> 4), Digits.hexDigit(c))
                count = 6
            }
            try withUnsafeBytes(of: &sequence) { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        if run < utf8.count { try emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[run...]))) }
    }
}
