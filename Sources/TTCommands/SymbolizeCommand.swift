import ArgumentParser
import Symbolize
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// `tt symbolize`: addresses to `0x<addr> <func+off>` the way GDB prints them, through
/// one or more symbol maps; or a function name to its address.
struct SymbolizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "symbolize",
        abstract: "Print addresses with symbols the way GDB does, or the address of a name.",
        discussion: """
            Addresses come from the arguments, or from standard input one per line when none
            are given; each gives one output line, in order (a pipe filter: output is flushed
            per line when standard input is not a regular file).
            With --map, addresses outside every map print as bare hex; without it --symbols
            covers the whole address space.
            """)

    @Option(name: .long, help: ArgumentHelp("The ELF image (with DWARF or a symbol table) for the whole address space, or the default map.", valueName: "file"))
    var symbols: String?

    @Option(name: .customLong("map"), help: ArgumentHelp("An image for the range LO-HI (hex), with a name prefix and a load bias (run-time = file address + bias).", valueName: "LO-HI=FILE[,prefix=P][,bias=B]"))
    var maps: [String] = []

    @Flag(name: .long, help: "GDB style: the real containing function, ignoring inlining (default).")
    var gdb = false

    @Flag(name: .long, help: "Inline style: <inl+off @ outer+off> inside an inlined instance.")
    var inline = false

    @Flag(name: .long, help: "Append the source file:line.")
    var lines = false

    @Flag(name: .long, help: "One JSON object per line.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Print the entry address of this function (UNIT::NAME picks a static one).", valueName: "symbol"))
    var name: String?

    @Argument(help: ArgumentHelp("Addresses (hex with or without 0x).", valueName: "addr"))
    var addresses: [String] = []

    func validate() throws {
        if gdb && inline { throw ValidationError("--gdb and --inline exclude each other") }
        if symbols == nil && maps.isEmpty { throw ValidationError("give --symbols FILE or at least one --map") }
        if name != nil && symbols == nil { throw ValidationError("--name needs --symbols FILE") }
        if name != nil && !addresses.isEmpty { throw ValidationError("--name takes no addresses") }
    }

    func run() throws {
        let out = OutputBuffer(fd: 1)
        if let name, let symbols {
            let file = try SymbolFile(path: FilePath(symbols))
            let address = try file.address(ofSymbol: name)
            try out.append("0x")
            try out.appendHex(address, minDigits: 8)
            try out.endLine()
            try out.flush()
            return
        }
        let symbolizer = try makeSymbolizer(symbols: symbols, user: nil, maps: maps)
        let style: SymbolStyle = inline ? .inline : .gdb
        let printer = Printer(symbolizer: symbolizer, style: style, lines: lines, json: json, out: out)
        if !addresses.isEmpty {
            for (i, text) in addresses.enumerated() {
                guard let a = parseAddress(text) else {
                    throw SymbolizeError(.data, "argument \(i + 1): '\(text)' is not a hex address")
                }
                try printer.print(a)
            }
            try out.flush()
            return
        }
        // A pipe is answered line by line; a regular file is printed in big writes.
        out.lineBuffered = (try? FileDescriptor.standardInput.stat())?.type != .regular
        try readLines(fd: 0) { line, number in
            guard let a = parseAddress(line) else {
                let text = String(decoding: line, as: UTF8.self)
                throw SymbolizeError(.data, "<stdin>:\(number): '\(text)' is not a hex address")
            }
            try printer.print(a)
        }
        try out.flush()
    }
}

/// One output line per address.
private struct Printer {
    let symbolizer: Symbolizer
    let style: SymbolStyle
    let lines: Bool
    let json: Bool
    let out: OutputBuffer

    func print(_ address: UInt64) throws {
        if json {
            var s = "{\"address\":\"0x\(String(address, radix: 16))\""
            if let (entry, function) = symbolizer.resolve(address) {
                if !entry.prefix.isEmpty { s += ",\"map\":\(JSONString.quoted(entry.prefix))" }
                if let name = symbolizer.symbolicName(address, style: .gdb) { s += ",\"symbol\":\(JSONString.quoted(name))" }
                let fileAddress = entry.fileAddress(address)
                if let function {
                    s += ",\"function\":\(JSONString.quoted(function.name)),\"entry\":\"0x\(String(function.entry, radix: 16))\""
                    s += ",\"offset\":\(Int64(bitPattern: fileAddress &- function.entry))"
                }
                let chain = entry.file.inlineChain(at: fileAddress)
                if !chain.isEmpty {
                    s += ",\"inlined\":["
                    s += chain.map { f in
                        var o = "{\"name\":\(JSONString.quoted(f.name)),\"entry\":\"0x\(String(f.entry, radix: 16))\",\"offset\":\(Int64(bitPattern: fileAddress &- f.entry))"
                        if let c = f.callSite { o += ",\"callFile\":\(JSONString.quoted(c.file)),\"callLine\":\(c.line)" }
                        return o + "}"
                    }.joined(separator: ",")
                    s += "]"
                }
                if lines, let loc = entry.file.sourceLocation(at: fileAddress) {
                    s += ",\"file\":\(JSONString.quoted(loc.file)),\"line\":\(loc.line)"
                }
            }
            s += "}"
            try out.append(s)
            try out.endLine()
            return
        }
        try symbolizer.append(address, style: style, to: out)
        if lines, let loc = symbolizer.sourceLocation(address) {
            try out.append(" at ")
            try out.append(loc.file)
            try out.append(byte: UInt8(ascii: ":"))
            try out.appendDecimal(UInt64(clamping: loc.line))
        }
        try out.endLine()
    }
}


/// Hex with or without 0x.
func parseAddress(_ text: String) -> UInt64? {
    var copy = text
    return copy.withUTF8 { parseAddress(UnsafeRawBufferPointer($0)) }
}

/// Hex with or without 0x, surrounded by optional blanks, from raw bytes.
func parseAddress(_ line: UnsafeRawBufferPointer) -> UInt64? {
    var i = 0, end = line.count
    while i < end && (line[i] == 0x20 || line[i] == 0x09) { i += 1 }
    while end > i && (line[end - 1] == 0x20 || line[end - 1] == 0x09 || line[end - 1] == 0x0d) { end -= 1 }
    if end - i >= 2 && line[i] == UInt8(ascii: "0") && (line[i + 1] | 0x20) == UInt8(ascii: "x") { i += 2 }
    guard i < end, end - i <= 16 else { return nil }
    var value: UInt64 = 0
    while i < end {
        let c = line[i]
        let digit: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
        default: return nil
        }
        value = value << 4 | UInt64(digit)
        i += 1
    }
    return value
}

/// Calls `body` for each non-empty line of `fd` (without the newline), with its 1-based
/// number. Reads with read(2) so lines are answered as soon as they arrive on a pipe.
func readLines(fd: Int32, _ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws {
    let capacity = 1 << 16
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
    defer { buffer.deallocate() }
    var pending: [UInt8] = []
    var number = 0
    while true {
        let n = read(fd, buffer.baseAddress, capacity)
        if n < 0 {
            if errno == EINTR { continue }
            throw SystemError(path: nil, errno: Errno(rawValue: errno), doing: "read stdin")
        }
        if n == 0 { break }
        var start = 0
        var i = 0
        while i < n {
            if buffer[i] == 0x0a {
                number += 1
                if pending.isEmpty {
                    if i > start { try body(UnsafeRawBufferPointer(rebasing: buffer[start..<i]), number) }
                } else {
                    pending.append(contentsOf: buffer[start..<i])
                    try pending.withUnsafeBytes { try body($0, number) }
                    pending.removeAll(keepingCapacity: true)
                }
                start = i + 1
            }
            i += 1
        }
        pending.append(contentsOf: buffer[start..<n])
    }
    if !pending.isEmpty {
        number += 1
        try pending.withUnsafeBytes { try body($0, number) }
    }
}
