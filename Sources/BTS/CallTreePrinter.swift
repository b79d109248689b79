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

    public func run(_ file: BTSFile, tree: CallTree, to sink: inout LineSink) throws {
        var counter: UInt64 = 0
        func line(_ depth: Int, _ body: (inout LineSink) throws -> Void) throws {
            try sink.beginLine()
            for _ in 0..<depth { try sink.beginLine(); sink.ascii("  ") }
            try body(&sink)
            try sink.beginLine()
            if showCounter {
                sink.ascii(" (bctr=")
                sink.decimal(counter)
                sink.byte(UInt8(ascii: ")"))
            }
            sink.newline()
        }
        func name(_ f: CallTree.Function?) -> String { f?.name ?? "??" }
        func emit(_ event: CallTree.Event) throws {
            switch event {
            case let .enter(f, depth, how):
                switch how {
                case .call, .jump: try line(depth) { try $0.string("Call to " + name(f)) }
                case .inline: try line(depth) { try $0.string("Call to " + name(f) + " (inlined)") }
                default: break
                }
            case let .leave(f, depth, how):
                switch how {
                case .call: try line(depth) { try $0.string("Return from " + name(f)) }
                case .inline: try line(depth) { try $0.string("Return from " + name(f) + " (inlined)") }
                default: break
                }
            case let .outOfRange(from, to, range, depth):
                try line(depth) { s in
                    s.ascii("*** branch from ")
                    s.hex(from)
                    s.ascii(" to ")
                    s.hex(to)
                    s.ascii(" out of range [")
                    if let range {
                        s.hex(range.lowerBound)
                        s.byte(UInt8(ascii: "-"))
                        s.hex(range.upperBound)
                    } else {
                        s.ascii("unknown")
                    }
                    s.byte(UInt8(ascii: "]"))
                }
            }
        }
        try file.forEach { i, r in
            counter = file.isExtended ? r.format : UInt64(i)
            if debug {
                try sink.beginLine()
                sink.ascii("# ")
                sink.decimal(UInt64(i))
                sink.ascii(": ")
                sink.hex(r.from)
                sink.ascii(" -> ")
                sink.hex(r.to)
                sink.newline()
            }
            try tree.process(r, emit: emit)
        }
        try tree.finish(emit: { _ in })
    }
}
