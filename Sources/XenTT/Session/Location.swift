import TTSystem

/// A point of a replay as users write it (the original tools' syntax):
/// - `WHERE` — the next time the ip reaches WHERE;
/// - `WHERE:brctr` — ip = WHERE while the branch counter = brctr;
/// - `WHERE:brctr:cx` — and RCX/ECX = cx (tells apart iterations of a `rep` instruction);
/// - `WHERE#N` — the N-th time (N ≥ 1) the ip reaches WHERE since the replay began;
/// - `return` — the return of the call whose entry the replay stands at (for trace-task:
///   the call the start location enters): the first arrival at the return address the
///   call pushed, with the stack pointer above the entry's (so recursion is told apart).
/// WHERE is `0x` hex, decimal, a symbol (optionally `symbol+offset`) resolved against the
/// recording's symbol file, or `syscall:NAME`, the kernel entry of system call NAME
/// (`__x64_sys_NAME`, else `__ia32_sys_NAME`, `__se_sys_NAME`, `sys_NAME`).
/// brctr and cx are decimal or `0x` hex.
public struct Location: Hashable, Sendable, CustomStringConvertible {
    public enum Place: Hashable, Sendable {
        case address(UInt64)
        case symbol(String, offset: UInt64)
        /// A system call's kernel entry function, by the system call's name.
        case syscall(String)
        /// Where the call entered at the current position (or trace-task's start) returns to.
        case callReturn
    }

    /// The kernel's entry symbols of system call `name`, in the order they are tried
    /// (x86-64 wrapper, 32-bit compat wrapper, sign-extending wrapper, plain).
    public static func syscallEntrySymbols(_ name: String) -> [String] {
        ["__x64_sys_" + name, "__ia32_sys_" + name, "__se_sys_" + name, "sys_" + name]
    }
    public enum Condition: Hashable, Sendable {
        /// The next arrival at the place, after the current position.
        case next
        /// Arrival with this branch count (and this RCX, if given).
        case exact(brctr: UInt64, cx: UInt64?)
        /// The N-th arrival since the beginning of the replay.
        case occurrence(UInt64)
        /// The return of the call entered at the current position (place `.callReturn`).
        case callReturn
    }

    public var place: Place
    public var condition: Condition

    public init(place: Place, condition: Condition) {
        self.place = place
        self.condition = condition
    }

    public init(_ landmark: Landmark) {
        self.init(place: .address(landmark.ip), condition: .exact(brctr: landmark.brctr, cx: landmark.cx))
    }

    public struct ParseError: Error, CustomStringConvertible, ExitStatusProviding {
        public let text: String
        public let problem: String
        public init(text: String, problem: String) {
            self.text = text
            self.problem = problem
        }
        public var description: String { "bad location '\(text)': \(problem)" }
        public var exitStatus: Int32 { ExitStatus.dataError }
    }

    public init(parsing text: String) throws {
        func fail(_ problem: String) -> ParseError { ParseError(text: text, problem: problem) }
        guard !text.isEmpty else { throw fail("empty") }
        if let bad = text.unicodeScalars.first(where: { $0.value <= 0x20 || $0.value >= 0x7f }) {
            throw fail(bad.value <= 0x20 || bad.value == 0x7f ? "contains spaces or control characters"
                       : "contains '\(bad)' (symbols and numbers are ASCII)")
        }
        if text == "return" {
            place = .callReturn
            condition = .next
            return
        }
        var body = Substring(text)
        var syscall: Substring?
        if body.hasPrefix("syscall:") {
            body = body.dropFirst("syscall:".count)
            let name = body.prefix { $0 != "#" }
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                throw fail("'syscall:' needs a system call's name (letters, digits, '_'), e.g. syscall:getdents64")
            }
            syscall = name
            guard !body.contains(":") else { throw fail("syscall:NAME takes '#N', not ':brctr'") }
        }
        var head = body
        if let hash = body.firstIndex(of: "#") {
            head = body[..<hash]
            let count = body[body.index(after: hash)...]
            guard let n = Self.number(count), n >= 1 else {
                if Self.isTooLarge(count) { throw fail("occurrence '\(count)' after '#' is larger than \(UInt64.max)") }
                throw fail("occurrence '\(count)' after '#' must be a number ≥ 1")
            }
            condition = .occurrence(n)
            guard !head.contains(":") else { throw fail("use either '#N' or ':brctr[:cx]', not both") }
        } else {
            let parts = body.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 3 else { throw fail("too many ':' (expected WHERE[:brctr[:cx]])") }
            head = parts[0]
            if parts.count == 1 {
                condition = .next
            } else {
                guard let b = Self.number(parts[1]) else {
                    if Self.isTooLarge(parts[1]) { throw fail("branch count '\(parts[1])' is larger than \(UInt64.max)") }
                    throw fail("branch count '\(parts[1])' is not a number")
                }
                var cx: UInt64? = nil
                if parts.count == 3 {
                    guard let c = Self.number(parts[2]) else {
                        if Self.isTooLarge(parts[2]) { throw fail("cx '\(parts[2])' is larger than \(UInt64.max)") }
                        throw fail("cx '\(parts[2])' is not a number")
                    }
                    cx = c
                }
                condition = .exact(brctr: b, cx: cx)
            }
        }
        guard !head.isEmpty else { throw fail("no address or symbol before ':' or '#'") }
        if let syscall {
            place = .syscall(String(syscall))
        } else if let first = head.first, first.isNumber {
            guard let a = Self.number(head) else { throw fail("address '\(head)' is not a number") }
            place = .address(a)
        } else {
            var name = head
            var offset: UInt64 = 0
            if let plus = head.firstIndex(of: "+") {
                name = head[..<plus]
                let off = head[head.index(after: plus)...]
                guard let o = Self.number(off) else { throw fail("offset '\(off)' is not a number") }
                offset = o
            }
            guard let c = name.first, c.isLetter || c == "_" || c == ".",
                  name.allSatisfy({ $0.isLetter || $0.isNumber || "_.$@".contains($0) }) else {
                throw fail("'\(name)' is neither a number nor a symbol name")
            }
            place = .symbol(String(name), offset: offset)
        }
    }

    /// Decimal, or hex with 0x.
    /// Digits only, but too many for 64 bits (so "not a number" would mislead).
    static func isTooLarge(_ s: Substring) -> Bool {
        let hex = s.hasPrefix("0x") || s.hasPrefix("0X")
        let digits = hex ? s.dropFirst(2) : s
        return number(s) == nil && !digits.isEmpty && digits.allSatisfy { hex ? $0.isHexDigit : $0.isASCII && $0.isNumber }
    }

    static func number(_ s: Substring) -> UInt64? {
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            let digits = s.dropFirst(2)
            return digits.isEmpty ? nil : UInt64(digits, radix: 16)
        }
        return s.isEmpty ? nil : UInt64(s, radix: 10)
    }

    public var description: String {
        var out: String
        switch place {
        case .address(let a): out = "0x" + String(a, radix: 16)
        case .symbol(let s, let off): out = off == 0 ? s : s + "+0x" + String(off, radix: 16)
        case .syscall(let name): out = "syscall:" + name
        case .callReturn: out = "return"
        }
        switch condition {
        case .next: break
        case .exact(let b, let cx):
            out += ":" + String(b)
            if let cx { out += ":0x" + String(cx, radix: 16) }
        case .occurrence(let n): out += "#" + String(n)
        case .callReturn: break
        }
        return out
    }

    public struct UnknownSymbol: Error, CustomStringConvertible, ExitStatusProviding {
        public let location: String
        public let reason: String
        public var description: String { "cannot resolve location '\(location)': \(reason)" }
        public var exitStatus: Int32 { ExitStatus.dataError }
    }

    /// The location with its place turned into an address; `symbolAddress` looks a
    /// symbol up (e.g. through Symbolize against the recording's `symfile`).
    public func resolved(_ symbolAddress: (String) throws -> UInt64) throws -> ResolvedLocation {
        switch place {
        case .address(let a):
            return ResolvedLocation(address: a, condition: condition, text: description)
        case .symbol(let name, let offset):
            do {
                let a = try symbolAddress(name)
                return ResolvedLocation(address: a &+ offset, condition: condition, text: description)
            } catch {
                throw UnknownSymbol(location: description, reason: String(describing: error))
            }
        case .syscall(let name):
            var firstError: Error?
            for symbol in Self.syscallEntrySymbols(name) {
                do {
                    return ResolvedLocation(address: try symbolAddress(symbol), condition: condition, text: description)
                } catch {
                    if firstError == nil { firstError = error }
                }
            }
            throw UnknownSymbol(location: description, reason: "no entry symbol (\(Self.syscallEntrySymbols(name).joined(separator: ", "))): \(firstError.map { String(describing: $0) } ?? "")")
        case .callReturn:
            return ResolvedLocation(address: 0, condition: .callReturn, text: description)
        }
    }
}

/// A location whose place is an address: what a session runs to.
public struct ResolvedLocation: Hashable, Sendable, CustomStringConvertible {
    public var address: UInt64
    public var condition: Location.Condition
    /// How the user wrote it, for messages.
    public var text: String

    public init(address: UInt64, condition: Location.Condition, text: String? = nil) {
        self.address = address
        self.condition = condition
        self.text = text ?? Location(place: .address(address), condition: condition).description
    }

    /// Exactly `landmark` (its ip, brctr and cx).
    public init(_ landmark: Landmark) {
        self.init(address: landmark.ip, condition: .exact(brctr: landmark.brctr, cx: landmark.cx))
    }

    public var description: String { text }

    /// Whether the vCPU, stopped at `landmark`, is at this location (`.next` and
    /// `.occurrence` only compare the address; counting is the session's job).
    public func matches(_ landmark: Landmark) -> Bool {
        if case .callReturn = condition { return false } // decided by the stack, not the landmark
        guard landmark.ip == address else { return false }
        if case .exact(let b, let cx) = condition {
            return landmark.brctr == b && (cx == nil || cx == landmark.cx)
        }
        return true
    }
}
