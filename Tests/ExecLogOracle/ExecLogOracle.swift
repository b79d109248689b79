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
        public init(address: UInt64, length: Int, isRepString: Bool) {
            self.address = address
            self.length = length
            self.isRepString = isRepString
        }
        public var fallThrough: UInt64 { address &+ UInt64(length) }
    }

    /// The transfer rule as a state machine: feed it the executed instructions in order.
    public struct TransferCounter {
        public private(set) var previous: Instruction?
        public private(set) var instructionCount = 0
        public private(set) var transferCount = 0

        public init() {}

        /// Records the execution of `next`; returns the transfer into it, if it is one.
        public mutating func execute(_ next: Instruction) -> Transfer? {
            defer { previous = next; instructionCount += 1 }
            guard let prev = previous else { return nil }
            if next.address == prev.fallThrough { return nil }
            if prev.isRepString && next.address == prev.address { return nil }
            transferCount += 1
            return Transfer(from: prev.address, to: next.address)
        }
    }

    /// The whole log, analysed.
    public struct Run {
        /// The taken transfers in order: `transfers[k-1]` is the k-th.
        public var transfers: [Transfer] = []
        /// Executed instructions (rep iterations each count once).
        public var instructionCount = 0
        /// The executed instructions in order (only when asked for).
        public var executed: [Instruction] = []
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
            if let t = counter.execute(insn) { run.transfers.append(t) }
        }
        run.instructionCount = counter.instructionCount
        return run
    }

    /// Calls `body` with every executed instruction of the log, in order (streaming: memory
    /// holds the translations, not the executions).
    public static func walk(logAt path: String, _ body: (Instruction) throws -> Void) throws {
        let file = try MappedFile(path: FilePath(path))
        file.adviseSequential()
        var parser = Parser(path: path)
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

private struct Parser {
    let path: String
    var lineNumber = 0

    /// Host code address → the instructions of the block translated there.
    var translations: [UInt64: [ExecLogOracle.Instruction]] = [:]
    /// The "IN:" listing being read, and the one waiting for its first "Trace".
    var listing: [ExecLogOracle.Instruction]? = nil
    var listingBytes: [UInt8] = []
    var readingListing = false
    var unboundListing: (instructions: [ExecLogOracle.Instruction], line: Int)? = nil
    /// The last block execution, held back until the next line says whether it ran fully.
    var pending: (instructions: [ExecLogOracle.Instruction], hostPointer: UInt64, pc: UInt64, line: Int)? = nil

    init(path: String) { self.path = path }

    func error(_ message: String, line: Int? = nil) -> ExecLogOracle.LogError {
        ExecLogOracle.LogError(path: path, line: line ?? lineNumber, message: message)
    }

    mutating func run(_ bytes: UnsafeRawBufferPointer, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        var start = 0
        let n = bytes.count
        while start < n {
            var end = start
            while end < n && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            lineNumber += 1
            try line(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), body)
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
        guard let l = listing, !l.isEmpty else { throw error("empty IN: listing") }
        unboundListing = (l, lineNumber)
        listing = nil
    }

    mutating func line(_ l: UnsafeRawBufferPointer, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        if readingListing {
            if l.isEmpty || l.allSatisfy({ $0 == UInt8(ascii: " ") }) {
                try finishListing()
                return
            }
            if l.starts(with: "0x".utf8) {
                try instructionLine(l)
                return
            }
            try finishListing()   // anything else ends the listing; handle the line below
        }
        if l.starts(with: "Trace ".utf8) {
            try traceLine(l, body)
        } else if l.starts(with: "IN:".utf8) {
            if unboundListing != nil { throw error("IN: listing at line \(unboundListing!.line) was never executed") }
            readingListing = true
            listing = []
        } else if l.starts(with: "Stopped execution of TB chain before ".utf8) {
            let rest = UnsafeRawBufferPointer(rebasing: l[("Stopped execution of TB chain before ".utf8.count)...])
            guard let (host, afterHost) = hexNumber(rest, from: 0),
                  let bracket = rest[afterHost...].firstIndex(of: UInt8(ascii: "[")),
                  let (pc, _) = hexNumber(rest, from: bracket + 1)
            else { throw error("cannot read the 'Stopped execution' line") }
            guard let p = pending else { throw error("'Stopped execution' with no block executed before it") }
            guard p.hostPointer == host, p.pc == pc else {
                throw error("'Stopped execution' names block 0x\(String(host, radix: 16)) [\(String(pc, radix: 16))], but the last executed block is 0x\(String(p.hostPointer, radix: 16)) [\(String(p.pc, radix: 16))] (line \(p.line))")
            }
            pending = nil
        } else if l.starts(with: "cpu_io_recompile: rewound execution of TB to ".utf8) {
            let rest = UnsafeRawBufferPointer(rebasing: l[("cpu_io_recompile: rewound execution of TB to ".utf8.count)...])
            guard let (pc, _) = hexNumber(rest, from: 0) else { throw error("cannot read the 'cpu_io_recompile' line") }
            guard var p = pending else { throw error("'cpu_io_recompile' with no block executed before it") }
            guard let cut = p.instructions.firstIndex(where: { $0.address == pc }) else {
                throw error("'cpu_io_recompile' rewinds to 0x\(String(pc, radix: 16)), not an instruction of the last executed block (line \(p.line))")
            }
            p.instructions.removeSubrange(cut...)
            pending = p
        } else if l.starts(with: "----------------".utf8) || l.isEmpty {
            // Separators.
        } else {
            // Other log output (e.g. from other -d items) says nothing about execution order.
        }
    }

    /// `0xADDR:  b1 b2 b3 ...   mnemonic operands`, or a continuation `0xADDR:  b9 b10`.
    mutating func instructionLine(_ l: UnsafeRawBufferPointer) throws {
        guard let (address, afterAddress) = hexNumber(l, from: 2),
              afterAddress < l.count, l[afterAddress] == UInt8(ascii: ":")
        else { throw error("cannot read the instruction address") }
        // QEMU prints "0xADDR: " and then each byte as " xx"; the mnemonic follows after padding
        // and two spaces, so the bytes end where a " xx " token no longer fits.
        var i = afterAddress + 1
        guard i < l.count, l[i] == UInt8(ascii: " ") else { throw error("cannot read the instruction bytes") }
        i += 1
        var bytes: [UInt8] = []
        while i + 2 < l.count, l[i] == UInt8(ascii: " "),
              let h = hexDigit(l[i + 1]), let lo = hexDigit(l[i + 2]),
              i + 3 == l.count || l[i + 3] == UInt8(ascii: " ") {
            bytes.append(UInt8(h << 4 | lo))
            i += 3
        }
        guard !bytes.isEmpty else {
            throw error("instruction at 0x\(String(address, radix: 16)) has no bytes listed (QEMU's in_asm needs its capstone disassembler)")
        }
        let restIsBlank = l[i...].allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        if restIsBlank {
            // Continuation of the previous instruction's bytes.
            guard let last = listing?.last, address == last.address &+ UInt64(listingBytes.count) else {
                throw error("bytes at 0x\(String(address, radix: 16)) continue no instruction")
            }
            listingBytes += bytes
            listing![listing!.count - 1] = ExecLogOracle.Instruction(
                address: last.address, length: listingBytes.count,
                isRepString: ExecLogOracle.isRepString(listingBytes))
            return
        }
        if let last = listing?.last, last.fallThrough != address {
            throw error("instruction at 0x\(String(address, radix: 16)) does not follow the one at 0x\(String(last.address, radix: 16)) (\(last.length) bytes)")
        }
        listingBytes = bytes
        listing!.append(ExecLogOracle.Instruction(address: address, length: bytes.count,
                                                  isRepString: ExecLogOracle.isRepString(bytes)))
    }

    /// `Trace 0: 0x7f53f0161f40 [00000000/0010000c/000000b0/ff020200] symbol`
    mutating func traceLine(_ l: UnsafeRawBufferPointer, _ body: (ExecLogOracle.Instruction) throws -> Void) throws {
        guard let colon = l.firstIndex(of: UInt8(ascii: ":")),
              let (host, afterHost) = hexNumber(l, from: colon + 2),
              let bracket = l[afterHost...].firstIndex(of: UInt8(ascii: "[")),
              let slash = l[bracket...].firstIndex(of: UInt8(ascii: "/")),
              let (pc, _) = hexNumber(l, from: slash + 1)
        else { throw error("cannot read the Trace line") }
        try flushPending(body)
        if let u = unboundListing {
            translations[host] = u.instructions
            unboundListing = nil
        }
        guard let instructions = translations[host] else {
            throw error("block 0x\(String(host, radix: 16)) at pc 0x\(String(pc, radix: 16)) runs, but its translation is not in the log (was in_asm logging on when it was translated?)")
        }
        guard instructions.first?.address == pc else {
            throw error("block 0x\(String(host, radix: 16)) runs at pc 0x\(String(pc, radix: 16)), but was translated for 0x\(String(instructions.first?.address ?? 0, radix: 16))")
        }
        pending = (instructions, host, pc, lineNumber)
    }

    func hexDigit(_ c: UInt8) -> UInt64? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt64(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// A hex number at `from` (an optional "0x" is skipped); returns it and the index after it.
    func hexNumber(_ l: UnsafeRawBufferPointer, from: Int) -> (UInt64, Int)? {
        var i = from
        if i + 1 < l.count, l[i] == UInt8(ascii: "0"), l[i + 1] == UInt8(ascii: "x") { i += 2 }
        var value: UInt64 = 0
        let start = i
        while i < l.count, let d = hexDigit(l[i]) {
            guard i - start < 16 else { return nil }
            value = value << 4 | d
            i += 1
        }
        return i > start ? (value, i) : nil
    }
}
