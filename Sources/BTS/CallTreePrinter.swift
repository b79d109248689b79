import Symbolize
import TTSystem

/// The text form of `CallTree` events, as bts-trace printed it:
///
///     Call to fib                      (indented two spaces per depth)
///     Return from fib
///     *** branch from 0x… to 0x… out of range [0x…-0x…]
///
/// With `-I`, inlined instances print as `Call to inl (inlined)` / `Return from inl (inlined)`.
/// In extended files each line ends with ` (bctr=N)`, the branch counter of the record.
public struct CallTreePrinter {
    public var showCounter: Bool
    public var debug: Bool

    public init(showCounter: Bool, debug: Bool = false) {
        self.showCounter = showCounter
        self.debug = debug
    }

    public func run(_ file: BTSFile, tree: CallTree, to out: OutputBuffer) throws {
        var counter: UInt64 = 0
        func line(_ depth: Int, _ body: () throws -> Void) throws {
            for _ in 0..<depth { try out.append("  ") }
            try body()
            if showCounter {
                try out.reserve(OutputBuffer.lineReserve)
                out.put(" (bctr=")
                out.putDecimal(counter)
                out.put(byte: UInt8(ascii: ")"))
            }
            try out.append(byte: 0x0a)
        }
        func name(_ f: CallTree.Function?) -> String { f?.name ?? "??" }
        func emit(_ event: CallTree.Event) throws {
            switch event {
            case let .enter(f, depth, how):
                switch how {
                case .call, .jump: try line(depth) { try out.append("Call to " + name(f)) }
                case .inline: try line(depth) { try out.append("Call to " + name(f) + " (inlined)") }
                default: break
                }
            case let .leave(f, depth, how):
                switch how {
                case .call: try line(depth) { try out.append("Return from " + name(f)) }
                case .inline: try line(depth) { try out.append("Return from " + name(f) + " (inlined)") }
                default: break
                }
            case let .outOfRange(from, to, range, depth):
                try line(depth) {
                    try out.reserve(OutputBuffer.lineReserve)
                    out.put("*** branch from 0x")
                    out.putHex(from, minDigits: 8)
                    out.put(" to 0x")
                    out.putHex(to, minDigits: 8)
                    out.put(" out of range [")
                    if let range {
                        out.put("0x")
                        out.putHex(range.lowerBound, minDigits: 8)
                        out.put("-0x")
                        out.putHex(range.upperBound, minDigits: 8)
                    } else {
                        out.put("unknown")
                    }
                    out.put(byte: UInt8(ascii: "]"))
                }
            }
        }
        try file.forEach { i, r in
            counter = file.isExtended ? r.format : UInt64(i)
            if debug {
                try out.reserve(OutputBuffer.lineReserve)
                out.put("# ")
                out.putRecordLine(UInt64(i), minDigits: 1, r)
            }
            try tree.process(r, emit: emit)
        }
        tree.finish(emit: { _ in })
    }
}
