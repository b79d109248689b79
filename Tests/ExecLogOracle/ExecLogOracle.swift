// An independent oracle for branch traces: QEMU's own execution log.
//
// QEMU run with `-d exec,nochain,in_asm -D FILE` (optionally `-dfilter LO..HI`, or switched on
// for a window with the HMP `log` command) writes every translation block it translates
// ("IN:" and the block's instructions with their bytes) and every translation block it
// executes ("Trace N: HOSTPTR [CS_BASE/PC/FLAGS/CFLAGS]"). `nochain` makes each block execution
// go through the main loop, so each one is logged. From that the oracle rebuilds the exact
// sequence of executed instructions and the taken control transfers, without any of tt's code.
//
// What a transfer is (the same definition as the TCG plugin's branch counter):
//   Take the executed instructions in order, i₀, i₁, i₂, … . Between consecutive iⱼ and iⱼ₊₁
//   there is a taken transfer (from: address of iⱼ, to: address of iⱼ₊₁) exactly when iⱼ₊₁ is
//   not the fall-through of iⱼ (address(iⱼ) + length(iⱼ)), except when iⱼ is a rep-prefixed
//   string instruction (rep/repe/repne movs, stos, lods, cmps, scas, ins, outs) and iⱼ₊₁ is that
//   same instruction again: that is one more iteration, not a transfer.
//   Jumps, calls, returns, interrupts and exceptions are all transfers; an interrupt is the
//   transfer from the last instruction executed before it to the first instruction of the
//   handler. Transfers are numbered from 1: the k-th transfer is the one that takes the counter
//   from k−1 to k, counting from the first instruction of the log (which has no transfer into
//   it: the log does not say where execution came from).
//   Consequences of the definition, where it differs from what a hardware branch-trace store
//   would record: a taken jump immediately followed by an interrupt is ONE transfer (jump →
//   handler; the iret then goes to the jump's target), and a jump or call whose target is its
//   own fall-through (`ljmp $8, $1f; 1:` in the bundled guests' boot code, `call 1f; 1: pop` in
//   i386 PIC code) is no transfer at all.
//
// What the log needs to be read right:
// - "Stopped execution of TB chain before HOSTPTR [PC]": the block just logged as executed did
//   not run at all (its start saw an exit request or an exhausted instruction budget); it is
//   dropped.
// - "cpu_io_recompile: rewound execution of TB to PC": the block just logged ran only up to,
//   not including, the instruction at PC (an I/O instruction that must end its block under
//   icount); it continues in a new block starting at PC.
// - Re-translations: the same PC can be translated again (smaller blocks near an icount
//   limit, a block re-made for I/O, code changes, a cache flush). A "Trace" line names the host
//   code address of the block it runs, and that address is bound to the instructions of the
//   "IN:" listing translated just before its first execution; a new translation at the same
//   host address rebinds it.
// - Instructions longer than 8 bytes are listed on continuation lines (bytes only).
// Not handled: a synchronous exception raised by an instruction in the middle of a block
// (page fault, #GP …) makes the log claim the rest of the block ran; the bundled guests take
// none. A block executed whose translation is not in the log is an error. Opening a window
// at run time with the HMP command `log exec,nochain,in_asm` is fine: QEMU 7.2 re-translates
// everything when the log flags change (observed: a window opened mid-run on the bundled
// guest had no unlisted block). `-dfilter 0x100000..0x1fffff` restricts a whole-run log to the
// bundled guest's image (about 1 s and 15 MB instead of 15 s and 170 MB with the firmware).
// `ExecLogWindow.capture` (ExecLogWindow.swift) captures and analyses the window between two
// icounts of a replay.

import SystemPackage
import TTSystem

public enum ExecLogOracle {
    /// One taken control transfer.
    public struct Transfer: Hashable, CustomStringConvertible {
        public let from: UInt64
        public let to: UInt64
        public init(from: UInt64, to: UInt64) { self.from = from; self.to = to }
        public var description: String { "0x\(String(from, radix: 16)) -> 0x\(String(to, radix: 16))" }
    }

    /// One executed instruction, as the log describes it.
    public struct Instruction: Hashable {
        public let address: UInt64
        public let length: Int
        /// A rep/repe/repne-prefixed string instruction: executing it again at the same address
        /// is the next iteration, not a transfer.
        public let isRepString: Bool
        /// Always transfers when it completes, also to the next instruction (jmp, call, ret,
        /// far forms, iret, int n, syscall...): the in_asm listing's mnemonic says so.
        public let alwaysTransfers: Bool
        public init(address: UInt64, length: Int, isRepString: Bool, alwaysTransfers: Bool = false) {
            self.address = address
            self.length = length
            self.isRepString = isRepString
            self.alwaysTransfers = alwaysTransfers
        }

        /// Whether a mnemonic (capstone's AT&T text, as QEMU's in_asm prints it) always
        /// transfers when it completes.
        public static func alwaysTransfers(mnemonic m: Substring) -> Bool {
            if m.hasPrefix("into") { return false }
            return ["jmp", "ljmp", "call", "lcall", "ret", "lret", "iret", "int", "syscall", "sysret",
                    "sysenter", "sysexit", "rsm"].contains { m.hasPrefix($0) }
        }
        public var fallThrough: UInt64 { address &+ UInt64(length) }
    }

    /// The transfer rule as a state machine (docs/bts.md: what a branch-trace store records):
    /// feed it the executed instructions in order, and the interrupted pc of every interrupt
    /// or exception QEMU's `-d int` log announces (`interrupt(at:)`), where it comes.
    public struct TransferCounter {
        public private(set) var previous: Instruction?
        public private(set) var instructionCount = 0
        public private(set) var transferCount = 0
        /// The pc QEMU's interrupt log gave for an interrupt or exception delivered after
        /// `previous`: the faulting instruction, or the next address of the interrupted flow.
        private var interruptedPC: UInt64?

        public init() {}

        /// An interrupt or exception is delivered now; `pc` is what QEMU's log prints as its pc.
        public mutating func interrupt(at pc: UInt64) {
            if previous != nil { interruptedPC = pc }
        }

        /// Records the execution of `next`; returns the transfers into it (0, 1 or 2).
        public mutating func execute(_ next: Instruction) -> [Transfer] {
            defer { previous = next; instructionCount += 1; interruptedPC = nil }
            guard let prev = previous else { return [] }
            var out: [Transfer] = []
            if let r = interruptedPC {
                // prev completed to r (a taken transfer, also to its next instruction), unless
                // r is prev itself (a fault at prev, an int n, an interrupted rep iteration).
                if r != prev.address && (r != prev.fallThrough || prev.alwaysTransfers) {
                    out.append(Transfer(from: prev.address, to: r))
                }
                out.append(Transfer(from: r, to: next.address))
            } else if next.address != prev.fallThrough {
                if !(prev.isRepString && next.address == prev.address) { out.append(Transfer(from: prev.address, to: next.address)) }
            } else if prev.alwaysTransfers {
                out.append(Transfer(from: prev.address, to: next.address))
            }
            transferCount += out.count
            return out
        }
    }

    /// The whole log, analysed.
    public struct Run {
        /// The taken transfers in order: `transfers[k-1]` is the k-th.
        public var transfers: [Transfer] = []
        /// Executed instructions (each iteration of a rep instruction counts as one, as icount).
        public var instructionCount = 0
        /// The executed instructions in order (only when asked for).
        public var executed: [Instruction] = []
        /// Interrupts and exceptions of `-d int` lines: vector → how many.
        public var interruptVectors: [UInt64: Int] = [:]
    }

    /// One point of the run: the `index`-th executed instruction (from 0), at `address`, about
    /// to execute with the branch counter at `counter`: the transfers taken so far, including
    /// the one into this instruction, counted from the first logged instruction (tt's landmark
    /// `(address, brctr)`). When the log starts mid-run (`-dfilter`, a window),
    /// add the counter the branch counter had at the log's first instruction.
    public struct Point: Hashable {
        public let index: Int
        public let address: UInt64
        public let counter: Int
        public init(index: Int, address: UInt64, counter: Int) {
            self.index = index
            self.address = address
            self.counter = counter
        }
    }

    public struct LogError: Error, CustomStringConvertible, ExitStatusProviding {
        public let path: String
        public let line: Int
        public let message: String
        public var description: String { "\(path):\(line): \(message)" }
        public var exitStatus: Int32 { ExitStatus.dataError }
    }

    /// The taken transfers of the log at `path`, in order.
    public static func transfers(fromLogAt path: String) throws -> [Transfer] {
        try analyze(logAt: path).transfers
    }

    /// Transfers and instruction count (and, with `keepingInstructions`, every executed
    /// instruction).
    public static func analyze(logAt path: String, keepingInstructions: Bool = false) throws -> Run {
        var run = Run()
        var counter = TransferCounter()
        try walk(logAt: path) { insn in
            if keepingInstructions { run.executed.append(insn) }
            run.transfers += counter.execute(insn)
        } interrupts: { pc, vector in
            counter.interrupt(at: pc)
            run.interruptVectors[vector, default: 0] += 1
        }
        run.instructionCount = counter.instructionCount
        return run
    }

    /// Calls `body` with every executed instruction of the log, in order (streaming: memory
    /// holds the translations, not the executions).
    /// `interrupts` gets the pc of every interrupt or exception line (`-d int`), after the
    /// instructions executed before it.
    public static func walk(logAt path: String, _ body: (Instruction) throws -> Void,
                            interrupts: ((_ pc: UInt64, _ vector: UInt64) throws -> Void)? = nil) throws {
        let file = try MappedFile(path: FilePath(path))
        file.adviseSequential()
        var parser = Parser(path: path)
        parser.onInterrupt = interrupts
        try parser.run(file.bytes, body)
    }

    /// Whether these bytes (one whole instruction) are a rep-prefixed string instruction.
    public static func isRepString(_ bytes: some Collection<UInt8>) -> Bool {
        var rep = false
        var i = bytes.startIndex
        // Legacy prefixes, in any order.
        prefixes: while i != bytes.endIndex {
            switch bytes[i] {
            case 0xF2, 0xF3: rep = true
            case 0xF0, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67: break
            default: break prefixes
            }
            i = bytes.index(after: i)
        }
        guard rep, i != bytes.endIndex else { return false }
        // A REX prefix (64-bit code; the bytes are one instruction, so 0x40-0x4F here is REX).
        if (0x40...0x4F).contains(bytes[i]) {
            i = bytes.index(after: i)
            guard i != bytes.endIndex else { return false }
        }
        switch bytes[i] {
        case 0x6C...0x6F, 0xA4...0xA7, 0xAA...0xAF: return true
        default: return false
        }
    }
}

// MARK: - The log parser

#if canImport(Glibc)
import Glibc
#endif

/// One line of the log, without its newline: a pointer into the mapped file (no copies; the
/// parser works on raw bytes so that even a debug build reads a 200 MB log in seconds).
private struct Line {
    let base: UnsafePointer<UInt8>
    let count: Int

    subscript(i: Int) -> UInt8 { base[i] }

    func hasPrefix(_ prefix: StaticString) -> Bool {
        prefix.utf8CodeUnitCount <= count && memcmp(base, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
    }

    /// Index of the first `byte` at or after `from`.
    func index(of byte: UInt8, from: Int) -> Int? {
        guard from < count, let p = memchr(base + from, Int32(byte), count - from) else { return nil }
        return UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self) - base
    }

    /// Index of the first occurrence of `needle` at or after `from`.
    func find(_ needle: StaticString, from: Int = 0) -> Int? {
        let n = needle.utf8CodeUnitCount
        var i = from
        while i + n <= count {
            if memcmp(base + i, needle.utf8Start, n) == 0 { return i }
            i += 1
        }
        return nil
    }

    /// The word (mnemonic) starting at the first non-blank at or after `from`.
    func word(from: Int) -> Substring {
        var i = from
        while i < count, base[i] == 0x20 || base[i] == 0x09 { i += 1 }
        var j = i
        while j < count, base[j] != 0x20 && base[j] != 0x09 { j += 1 }
        return Substring(String(decoding: UnsafeBufferPointer(start: base + i, count: j - i), as: UTF8.self))
    }

    /// Whether bytes from `from` on are all blanks.
    func isBlank(from: Int = 0) -> Bool {
        var i = from
        while i < count {
            if base[i] != 0x20 && base[i] != 0x09 && base[i] != 0x0D { return false }
            i += 1
        }
        return true
    }

    static func hexDigit(_ c: UInt8) -> UInt64? {
        switch c {
        case 0x30...0x39: return UInt64(c &- 0x30)
        case 0x61...0x66: return UInt64(c &- 0x61 &+ 10)
        case 0x41...0x46: return UInt64(c &- 0x41 &+ 10)
        default: return nil
        }
    }

    /// A hex number at `from` (an optional "0x" is skipped); returns it and the index after it.
    func hexNumber(from: Int) -> (value: UInt64, end: Int)? {
        var i = from
        if i + 1 < count, base[i] == 0x30, base[i + 1] == 0x78 { i += 2 }
        var value: UInt64 = 0
        let start = i
        while i < count, let d = Line.hexDigit(base[i]) {
            guard i - start < 16 else { return nil }
            value = value << 4 | d
            i += 1
        }
        return i > start ? (value, i) : nil
    }
}

private struct Parser {
    let path: String
    var lineNumber = 0

    /// Host code address → the instructions of the block translated there.
    var translations: [UInt64: [ExecLogOracle.Instruction]] = [:]
    /// The "IN:" listing being read (and the bytes of its last instruction), and the last one
    /// read, waiting for its first "Trace".
    var listing: [ExecLogOracle.Instruction] = []
    var listingBytes: [UInt8] = []
    var lineBytes: [UInt8] = []
    var readingListing = false
    var unboundListing: (instructions: [ExecLogOracle.Instruction], line: Int)? = nil
    /// The last block execution, held back until the next line says whether it ran fully.
    var pending: (instructions: [ExecLogOracle.Instruction], hostPointer: UInt64, pc: UInt64, line: Int)? = nil

    /// Called with the pc of each `-d int` line.
    var onInterrupt: ((_ pc: UInt64, _ vector: UInt64) throws -> Void)?

    init(path: String) { self.path = path }

    func error(_ message: String, line: Int? = nil) -> ExecLogOracle.LogError {
        ExecLogOracle.LogError(path: path, line: line ?? lineNumber, message: message)
    }

    func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    mutating func run(_ bytes: UnsafeRawBufferPointer, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let n = bytes.count
        var start = 0
        while start < n {
            let end: Int
            if let p = memchr(base + start, 0x0A, n - start) {
                end = UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self) - base
            } else {
                end = n
            }
            lineNumber += 1
            try line(Line(base: base + start, count: end - start), body)
            start = end + 1
        }
        try finishListing()
        try flushPending(body)
    }

    mutating func flushPending(_ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        if let p = pending {
            for insn in p.instructions { try body(insn) }
            pending = nil
        }
    }

    mutating func finishListing() throws {
        guard readingListing else { return }
        readingListing = false
        guard !listing.isEmpty else { throw error("empty IN: listing") }
        unboundListing = (listing, lineNumber)
        listing = []
    }

    mutating func line(_ l: Line, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        if readingListing {
            if l.count >= 2 && l[0] == 0x30 && l[1] == 0x78 {   // "0x"
                try instructionLine(l)
                return
            }
            try finishListing()   // a blank line, or anything else, ends the listing
        }
        if l.hasPrefix("Trace ") {
            try traceLine(l, body)
        } else if l.hasPrefix("IN:") {
            if let u = unboundListing { throw error("IN: listing at line \(u.line) was never executed") }
            readingListing = true
        } else if l.hasPrefix("Stopped execution of TB chain before ") {
            let from = ("Stopped execution of TB chain before " as StaticString).utf8CodeUnitCount
            guard let host = l.hexNumber(from: from),
                  let bracket = l.index(of: 0x5B, from: host.end),   // "["
                  let pc = l.hexNumber(from: bracket + 1)
            else { throw error("cannot read the 'Stopped execution' line") }
            guard let p = pending else { throw error("'Stopped execution' with no block executed before it") }
            guard p.hostPointer == host.value, p.pc == pc.value else {
                throw error("'Stopped execution' names block \(hex(host.value)) [\(hex(pc.value))], but the last executed block is \(hex(p.hostPointer)) [\(hex(p.pc))] (line \(p.line))")
            }
            pending = nil
        } else if l.hasPrefix("cpu_io_recompile: rewound execution of TB to ") {
            let from = ("cpu_io_recompile: rewound execution of TB to " as StaticString).utf8CodeUnitCount
            guard let pc = l.hexNumber(from: from) else { throw error("cannot read the 'cpu_io_recompile' line") }
            guard var p = pending else { throw error("'cpu_io_recompile' with no block executed before it") }
            guard let cut = p.instructions.firstIndex(where: { $0.address == pc.value }) else {
                throw error("'cpu_io_recompile' rewinds to \(hex(pc.value)), not an instruction of the last executed block (line \(p.line))")
            }
            p.instructions.removeSubrange(cut...)
            pending = p
        } else if let v = l.find(" v="), let pcAt = l.find(" pc=", from: v), l.find(" IP=", from: v) != nil {
            // `-d int`: "   N: v=20 e=0000 i=0 cpl=0 IP=0008:00100730 pc=00100730 SP=..."
            guard let pc = l.hexNumber(from: pcAt + 4), let vector = l.hexNumber(from: v + 3) else {
                throw error("cannot read the interrupt line's vector or pc")
            }
            // An exception (vector < 32, not a software int: " i=0") raised inside the block
            // that ran last stopped it at its pc: that instruction and those after it did
            // not execute. (An asynchronous interrupt comes between blocks.)
            let software = l.find(" i=1", from: v) != nil
            if vector.value < 32 && !software, var p = pending,
               let cut = p.instructions.firstIndex(where: { $0.address == pc.value }) {
                p.instructions.removeSubrange(cut...)
                pending = p
            }
            try flushPending(body)
            try onInterrupt?(pc.value, vector.value)
        } else {
            // Separators, blank lines, other log output (e.g. from other -d items): nothing
            // about the order of execution.
        }
    }

    /// `0xADDR:  b1 b2 b3 ...   mnemonic operands`, or a continuation `0xADDR:  b9 b10`.
    mutating func instructionLine(_ l: Line) throws {
        guard let address = l.hexNumber(from: 0), address.end < l.count, l[address.end] == 0x3A  // ":"
        else { throw error("cannot read the instruction address") }
        // QEMU prints "0xADDR: " and then each byte as " xx"; the mnemonic follows after padding
        // and two spaces, so the bytes end where a " xx " token no longer fits.
        var i = address.end + 1
        guard i < l.count, l[i] == 0x20 else { throw error("cannot read the instruction bytes") }
        i += 1
        lineBytes.removeAll(keepingCapacity: true)
        while i + 2 < l.count, l[i] == 0x20,
              let h = Line.hexDigit(l[i + 1]), let lo = Line.hexDigit(l[i + 2]),
              i + 3 == l.count || l[i + 3] == 0x20 {
            lineBytes.append(UInt8(h << 4 | lo))
            i += 3
        }
        guard !lineBytes.isEmpty else {
            throw error("instruction at \(hex(address.value)) has no bytes listed (QEMU's in_asm needs its capstone disassembler)")
        }
        if l.isBlank(from: i) {
            // Bytes only: the rest of the previous instruction (longer than 8 bytes).
            guard let last = listing.last, address.value == last.address &+ UInt64(last.length) else {
                throw error("bytes at \(hex(address.value)) continue no instruction")
            }
            listingBytes += lineBytes
            listing[listing.count - 1] = ExecLogOracle.Instruction(
                address: last.address, length: listingBytes.count,
                isRepString: ExecLogOracle.isRepString(listingBytes), alwaysTransfers: last.alwaysTransfers)
            return
        }
        swap(&listingBytes, &lineBytes)
        if let last = listing.last, last.fallThrough != address.value {
            throw error("instruction at \(hex(address.value)) does not follow the one at \(hex(last.address)) (\(last.length) bytes)")
        }
        listing.append(ExecLogOracle.Instruction(address: address.value, length: listingBytes.count,
                                                 isRepString: ExecLogOracle.isRepString(listingBytes),
                                                 alwaysTransfers: ExecLogOracle.Instruction.alwaysTransfers(mnemonic: l.word(from: i))))
    }

    /// `Trace 0: 0x7f53f0161f40 [00000000/0010000c/000000b0/ff020200] symbol`
    mutating func traceLine(_ l: Line, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        guard let colon = l.index(of: 0x3A, from: 6),                 // ":"
              let host = l.hexNumber(from: colon + 2),
              let bracket = l.index(of: 0x5B, from: host.end),        // "["
              let slash = l.index(of: 0x2F, from: bracket),           // "/"
              let pc = l.hexNumber(from: slash + 1)
        else { throw error("cannot read the Trace line") }
        try flushPending(body)
        if let u = unboundListing {
            translations[host.value] = u.instructions
            unboundListing = nil
        }
        guard let instructions = translations[host.value] else {
            throw error("block \(hex(host.value)) at pc \(hex(pc.value)) runs, but its translation is not in the log (was in_asm logging on when it was translated?)")
        }
        guard instructions.first?.address == pc.value else {
            throw error("block \(hex(host.value)) runs at pc \(hex(pc.value)), but was translated for \(hex(instructions.first?.address ?? 0))")
        }
        pending = (instructions, host.value, pc.value, lineNumber)
    }
}

// MARK: - Landmarks in an analysed run (needs `keepingInstructions: true`)

extension ExecLogOracle.Run {
    /// The `n`-th execution (from 1) of the instruction at `address` — `WHERE#N` — with the
    /// branch counter at that moment. Each iteration of a rep-prefixed instruction is an
    /// execution. Nil when it executes fewer than `n` times.
    public func execution(of address: UInt64, occurrence n: Int) -> ExecLogOracle.Point? {
        precondition(n >= 1, "occurrences count from 1")
        var counter = ExecLogOracle.TransferCounter()
        var seen = 0
        for (i, insn) in executed.enumerated() {
            _ = counter.execute(insn)
            if insn.address == address {
                seen += 1
                if seen == n { return .init(index: i, address: address, counter: counter.transferCount) }
            }
        }
        return nil
    }

    /// The first execution of `address` with the branch counter at `counter` — `WHERE:brctr`
    /// (for a rep instruction, its first iteration at that count).
    public func execution(of address: UInt64, atCounter target: Int) -> ExecLogOracle.Point? {
        var counter = ExecLogOracle.TransferCounter()
        for (i, insn) in executed.enumerated() {
            _ = counter.execute(insn)
            if counter.transferCount > target { return nil }
            if insn.address == address && counter.transferCount == target {
                return .init(index: i, address: address, counter: target)
            }
        }
        return nil
    }

    /// The transfers between two points: those numbered `from.counter + 1 … to.counter`, the
    /// records a branch trace from `from` to `to` must hold.
    public func transfers(from start: ExecLogOracle.Point, to end: ExecLogOracle.Point) -> ArraySlice<ExecLogOracle.Transfer> {
        transfers[start.counter..<end.counter]
    }
}
