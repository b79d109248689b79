import Symbolize

/// Rebuilds the call tree from a branch stream, per the original bts-trace algorithm:
///
/// - a branch to a function's entry point whose source is a call instruction is a call
///   (push a frame whose return address is `from` + the decoded length of that call);
/// - a branch to the return address of a frame on the stack is a return: that frame and
///   every frame above it are popped (several at once after tail calls);
/// - any other branch to a function's entry point (a jump: a tail call) also pushes a
///   frame, one with no return address of its own;
/// - any other branch leaving the current function's DWARF ranges is reported as out of
///   range, and the top frame is re-anchored on the function containing the target so the
///   trace can go on (e.g. after an interrupt return).
///
/// With `inlineFrames`, inlined instances (from DWARF) containing each branch's source and
/// target become frames too, entered and left as the chain changes.
public final class CallTree {
    public struct Function: Equatable {
        /// Name with its map's prefix, or the hex of the entry when unknown.
        public var name: String
        /// Run-time addresses (map bias applied).
        public var entry: UInt64
        public var ranges: [Range<UInt64>]
        public var isInlined: Bool

        public func contains(_ a: UInt64) -> Bool { ranges.contains { $0.contains(a) } }
    }

    public struct Frame {
        public var function: Function?
        /// Where a `ret` of this frame lands: the byte after the call instruction.
        public var returnAddress: UInt64?
        /// Inlined instances active inside this frame, outermost first.
        public var inlines: [Function] = []
    }

    public enum Event {
        /// A frame begins (`.call`, a tail `.jump`, the first record's `.root`, `.reanchor`
        /// after an out-of-range branch, or an `.inline` instance).
        case enter(Function?, depth: Int, how: How)
        /// A frame ends (`.call` = returned, `.reanchor`, `.inline`, or `.end` of the stream).
        case leave(Function?, depth: Int, how: How)
        /// A branch left the current function other than by a call or a return.
        case outOfRange(from: UInt64, to: UInt64, range: Range<UInt64>?, depth: Int)
    }

    public enum How { case call, jump, root, reanchor, inline, end }

    public let symbolizer: Symbolizer
    public let inlineFrames: Bool
    public private(set) var stack: [Frame] = []
    /// Code lookups that failed, so the call length of these sources is unknown.
    public private(set) var undecodableCallSites = 0

    private var functionCache: [UInt64: Function?] = [:]
    private var callLengthCache: [UInt64: Int?] = [:]

    public init(symbolizer: Symbolizer, inlineFrames: Bool = false) {
        self.symbolizer = symbolizer
        self.inlineFrames = inlineFrames
    }

    /// Depth (indentation level) of the innermost frame, counting inline frames when enabled.
    public var depth: Int {
        var d = 0
        for f in stack { d += 1 + f.inlines.count }
        return max(d - 1, 0)
    }

    // MARK: symbol lookups (run-time addresses)

    /// The real function containing `address`, with run-time ranges.
    public func function(containing address: UInt64) -> Function? {
        if let cached = functionCache[address] { return cached }
        var result: Function? = nil
        if let (map, fn) = symbolizer.resolve(address), let fn {
            let bias = UInt64(bitPattern: map.bias)
            result = Function(name: map.prefix + fn.name, entry: fn.entry &+ bias,
                              ranges: fn.ranges.map { ($0.lowerBound &+ bias)..<($0.upperBound &+ bias) },
                              isInlined: false)
        }
        if functionCache.count > 1 << 20 { functionCache.removeAll(keepingCapacity: true) }
        functionCache[address] = result
        return result
    }

    /// Inlined instances at `address`, outermost first, run-time ranges.
    func inlineChain(at address: UInt64) -> [Function] {
        guard let (map, _) = symbolizer.resolve(address) else { return [] }
        let bias = UInt64(bitPattern: map.bias)
        return map.file.inlineChain(at: map.fileAddress(address)).reversed().map {
            Function(name: map.prefix + $0.name, entry: $0.entry &+ bias,
                     ranges: [($0.range.lowerBound &+ bias)..<($0.range.upperBound &+ bias)], isInlined: true)
        }
    }

    /// Length of the call instruction at `address`, or nil if the bytes there are not a
    /// call (or not in any loaded section of the symbol files).
    public func callLength(at address: UInt64) -> Int? {
        if let cached = callLengthCache[address] { return cached }
        var result: Int? = nil
        var found = false
        if let map = symbolizer.maps.first(where: { $0.range.contains(address) }) {
            let fileAddress = map.fileAddress(address)
            let mode: CallInstruction.Mode = map.file.is64Bit ? .bits64 : .bits32
            // A section may end less than 15 bytes after the call: try shorter reads.
            for n in [15, 8, 7, 6, 5, 3, 2] {
                if let code = map.file.code(at: fileAddress, count: n) {
                    result = CallInstruction.length(of: code, mode: mode)
                    found = true
                    break
                }
            }
        }
        if !found { undecodableCallSites += 1 }
        callLengthCache[address] = result
        return result
    }

    // MARK: the algorithm

    /// Feed one branch; `emit` receives what it means, in order.
    public func process(_ r: BranchRecord, emit: (Event) throws -> Void) rethrows {
        try enterSource(of: r, emit: emit)
        try follow(r, emit: emit)
    }

    /// The second half of `process`, for a caller that has already called `enterSource(of: r)`:
    /// what the branch itself does (call, return, jump, out of range) and the frames at its target.
    public func follow(_ r: BranchRecord, emit: (Event) throws -> Void) rethrows {
        let target = function(containing: r.to)
        let isEntry = target.map { $0.entry == r.to } ?? false
        let callLen = isEntry ? callLength(at: r.from) : nil

        if isEntry, let len = callLen {
            try push(Frame(function: target, returnAddress: r.from &+ UInt64(len)), how: .call, emit: emit)
        } else if let level = stack.lastIndex(where: { $0.returnAddress == r.to }) {
            while stack.count > level {
                try popTop(how: .call, emit: emit)
            }
            // The caller's frame stays; its function is where we returned to.
        } else if isEntry {
            try push(Frame(function: target, returnAddress: nil), how: .jump, emit: emit)
        } else {
            let current = stack[stack.count - 1].function
            if current == nil && target != nil {
                // Running in code without symbols: nothing to judge against; pick up the
                // function we arrive in.
                let d = depth
                try emit(.leave(nil, depth: d, how: .reanchor))
                stack[stack.count - 1].function = target
                try emit(.enter(target, depth: d, how: .reanchor))
            } else if let current, !current.contains(r.to) {
                let part = current.ranges.first { $0.contains(r.from) } ?? current.ranges.first
                try emit(.outOfRange(from: r.from, to: r.to, range: part, depth: depth))
                // Re-anchor: leave inlines and the function, enter where the branch went.
                try clearInlines(emit: emit)
                let d = depth
                try emit(.leave(current, depth: d, how: .reanchor))
                stack[stack.count - 1].function = target
                try emit(.enter(target, depth: d, how: .reanchor))
            }
        }
        if inlineFrames { try syncInlines(at: r.to, emit: emit) }
    }

    /// The first half of `process`: make the frames at the branch's source current (the root
    /// frame on the first record, inlined instances around `from`). Calling it first lets a
    /// caller see the stack the branch was taken in.
    public func enterSource(of r: BranchRecord, emit: (Event) throws -> Void) rethrows {
        if stack.isEmpty {
            stack.append(Frame(function: function(containing: r.from), returnAddress: nil))
            try emit(.enter(stack[0].function, depth: 0, how: .root))
        }
        if inlineFrames { try syncInlines(at: r.from, emit: emit) }
    }

    /// Close every open frame (end of the stream), innermost first.
    public func finish(emit: (Event) throws -> Void) rethrows {
        while !stack.isEmpty { try popTop(how: .end, emit: emit) }
    }

    private func push(_ frame: Frame, how: How, emit: (Event) throws -> Void) rethrows {
        stack.append(frame)
        try emit(.enter(frame.function, depth: depth, how: how))
    }

    private func popTop(how: How, emit: (Event) throws -> Void) rethrows {
        try clearInlines(emit: emit)
        let d = depth
        let f = stack.removeLast()
        try emit(.leave(f.function, depth: d, how: how))
    }

    private func clearInlines(emit: (Event) throws -> Void) rethrows {
        guard !stack.isEmpty else { return }
        while let inl = stack[stack.count - 1].inlines.last {
            let d = depth
            stack[stack.count - 1].inlines.removeLast()
            try emit(.leave(inl, depth: d, how: .inline))
        }
    }

    /// Make the top frame's inline frames the chain at `address` (if it is in that frame's function).
    private func syncInlines(at address: UInt64, emit: (Event) throws -> Void) rethrows {
        guard let top = stack.last, let fn = top.function, fn.contains(address) else { return }
        let chain = inlineChain(at: address)
        var keep = 0
        while keep < chain.count && keep < top.inlines.count
                && chain[keep].entry == top.inlines[keep].entry && chain[keep].name == top.inlines[keep].name {
            keep += 1
        }
        while stack[stack.count - 1].inlines.count > keep {
            let d = depth
            let inl = stack[stack.count - 1].inlines.removeLast()
            try emit(.leave(inl, depth: d, how: .inline))
        }
        for inl in chain[keep...] {
            stack[stack.count - 1].inlines.append(inl)
            try emit(.enter(inl, depth: depth, how: .inline))
        }
    }
}
