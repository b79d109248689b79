/// Decoding just enough x86 to know whether the instruction at a branch source is a
/// call, and how long it is — so that a return is recognised exactly by its target
/// being `from + length`, not by a guess such as "within 5 bytes".
public enum CallInstruction {
    public enum Mode: Sendable { case bits32, bits64 }

    /// Length of the call instruction at the start of `code`, or nil if it is not a call
    /// (or the bytes end before the instruction does). Handles E8 rel32 (rel16 with 66
    /// in 32-bit mode), FF /2 and FF /3 with ModRM/SIB/displacement in 16-, 32- and
    /// 64-bit addressing, 9A ptr16:32 (32-bit mode only), and the prefixes 66, 67,
    /// F2/F3 (e.g. `bnd call`), segment overrides, and REX in 64-bit mode.
    public static func length(of code: [UInt8], mode: Mode = .bits64) -> Int? {
        code.withUnsafeBufferPointer { length(of: $0, mode: mode) }
    }

    public static func length(of code: UnsafeBufferPointer<UInt8>, mode: Mode) -> Int? {
        var i = 0
        var operandSize16 = false
        var addressSize16 = false   // only in 32-bit mode; in 64-bit mode 67 selects 32-bit addressing
        var rex = false
        // Prefixes: at most 14 before the opcode in a 15-byte instruction.
        while i < code.count && i < 14 {
            let b = code[i]
            switch b {
            case 0x66: operandSize16 = true
            case 0x67: if mode == .bits32 { addressSize16 = true }
            case 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65: break
            case 0x40...0x4F where mode == .bits64:
                // REX must be the last prefix; a prefix after REX makes REX ignored, which
                // does not change the length.
                rex = true
                i += 1
                continue
            default:
                return opcode(code, at: i, mode: mode, operandSize16: operandSize16,
                              addressSize16: addressSize16)
            }
            if rex { rex = false } // legacy prefix after REX: REX is void, keep scanning
            i += 1
        }
        return nil
    }

    private static func opcode(_ code: UnsafeBufferPointer<UInt8>, at start: Int, mode: Mode,
                               operandSize16: Bool, addressSize16: Bool) -> Int? {
        var i = start
        let op = code[i]
        i += 1
        let total: Int
        switch op {
        case 0xE8:
            // In 64-bit mode Intel CPUs ignore 66 for near branches (rel32 always).
            total = i + ((mode == .bits32 && operandSize16) ? 2 : 4)
        case 0x9A:
            guard mode == .bits32 else { return nil } // invalid in 64-bit mode
            total = i + (operandSize16 ? 4 : 6)
        case 0xFF:
            guard i < code.count else { return nil }
            let reg = (code[i] >> 3) & 7
            guard reg == 2 || reg == 3 else { return nil } // /2 near indirect, /3 far indirect
            guard let m = modRMLength(code, at: i, addressSize16: addressSize16) else { return nil }
            total = i + m
        default:
            return nil
        }
        return total <= code.count && total <= 15 ? total : nil
    }

    /// Bytes taken by ModRM, SIB and displacement starting at `i`.
    private static func modRMLength(_ code: UnsafeBufferPointer<UInt8>, at i: Int, addressSize16: Bool) -> Int? {
        let modrm = code[i]
        let mod = modrm >> 6
        let rm = modrm & 7
        if mod == 3 { return 1 }
        if addressSize16 {
            switch mod {
            case 0: return rm == 6 ? 3 : 1
            case 1: return 2
            default: return 3
            }
        }
        var n = 1
        var base = rm
        if rm == 4 { // SIB follows
            guard i + 1 < code.count else { return nil }
            base = code[i + 1] & 7
            n += 1
        }
        switch mod {
        case 0:
            if rm == 5 { n += 4 }                 // disp32 (RIP-relative in 64-bit mode)
            else if rm == 4 && base == 5 { n += 4 } // SIB with no base: disp32
        case 1: n += 1
        default: n += 4
        }
        return n
    }
}
