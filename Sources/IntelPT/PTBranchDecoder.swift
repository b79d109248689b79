import CIpt
import TTSystem
import XenTT

/// An Intel PT stream that cannot be decoded exactly: where and why.
public struct PTDecodeError: Error, ExitStatusProviding, CustomStringConvertible, Equatable {
    /// Byte offset in the trace buffer.
    public let offset: UInt64
    public let message: String
    public var exitStatus: Int32 { ExitStatus.dataError }
    public var description: String { "Intel PT trace, byte offset \(offset): \(message)" }
}

/// Turns an Intel PT trace (e.g. a Xen vmtrace buffer) into the taken control transfers
/// a branch-trace store would have recorded, using libipt's instruction-flow decoder.
/// The decoder follows the code, so it needs the guest's memory (`readMemory`).
///
/// A transfer is counted when an instruction of a branch class (call, return, jump,
/// far transfers) is followed by another instruction; a conditional jump counts when
/// the next instruction is not its fall-through; interrupts and exceptions come from
/// the decoder's asynchronous-branch events. Tracing gaps (disabled/enabled) break
/// the chain: nothing is invented across them.
public final class PTBranchDecoder {
    /// Reads guest code at an address into the buffer; returns the bytes read (0: unmapped).
    public typealias MemoryReader = (_ address: UInt64, _ into: UnsafeMutableRawBufferPointer) -> Int

    private let trace: UnsafeRawBufferPointer
    private let readMemory: MemoryReader

    public init(trace: UnsafeRawBufferPointer, readMemory: @escaping MemoryReader) {
        self.trace = trace
        self.readMemory = readMemory
    }

    /// Decode the whole buffer; `body` gets each transfer in order, stamped with branch
    /// counts `startBrctr + 1`, `startBrctr + 2`, ... Returns the number of transfers.
    @discardableResult
    public func decode(startBrctr: UInt64 = 0, _ body: (BranchTransfer) throws -> Void) throws -> UInt64 {
        guard trace.count > 0, let base = trace.baseAddress else { return 0 }
        var config = pt_config()
        pt_config_init(&config)
        config.begin = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self))
        config.end = config.begin + trace.count
        guard let decoder = pt_insn_alloc_decoder(&config) else {
            throw PTDecodeError(offset: 0, message: "cannot allocate a libipt decoder")
        }
        defer { pt_insn_free_decoder(decoder) }
        guard let image = pt_image_alloc("guest") else {
            throw PTDecodeError(offset: 0, message: "cannot allocate a libipt image")
        }
        defer { pt_image_free(image) }
        let box = Unmanaged.passRetained(ReaderBox(readMemory))
        defer { box.release() }
        pt_image_set_callback(image, { buffer, size, _, ip, context in
            guard let buffer, let context else { return -Int32(pte_invalid.rawValue) }
            let reader = Unmanaged<ReaderBox>.fromOpaque(context).takeUnretainedValue().read
            let n = reader(ip, UnsafeMutableRawBufferPointer(start: buffer, count: size))
            return n > 0 ? Int32(n) : -Int32(pte_nomap.rawValue)
        }, box.toOpaque())
        pt_insn_set_image(decoder, image)

        var count: UInt64 = 0
        var pending: pt_insn?
        func emit(_ from: UInt64, _ to: UInt64) throws {
            count += 1
            try body(BranchTransfer(from: from, to: to, brctr: startBrctr + count))
        }
        /// Decide whether the pending branch instruction was taken, given what ran next.
        func resolve(next ip: UInt64) throws {
            guard let p = pending else { return }
            pending = nil
            switch p.iclass {
            case ptic_cond_jump:
                if ip != p.ip &+ UInt64(p.size) { try emit(p.ip, ip) }
            case ptic_call, ptic_return, ptic_jump, ptic_far_call, ptic_far_return, ptic_far_jump:
                try emit(p.ip, ip)
            default:
                break
            }
        }
        func offset() -> UInt64 {
            var o: UInt64 = 0
            _ = pt_insn_get_offset(decoder, &o)
            return o
        }
        func failure(_ status: Int32, _ doing: String) -> PTDecodeError {
            PTDecodeError(offset: offset(), message: "\(doing): \(String(cString: pt_errstr(pt_errcode(status))))")
        }

        var status = pt_insn_sync_forward(decoder)
        if status == -Int32(pte_eos.rawValue) { return 0 }  // no PSB: nothing traced
        guard status >= 0 else { throw failure(status, "no synchronisation point") }
        while true {
            while status & Int32(pts_event_pending.rawValue) != 0 {
                var event = pt_event()
                status = pt_insn_event(decoder, &event, MemoryLayout<pt_event>.size)
                guard status >= 0 else { throw failure(status, "reading an event") }
                switch event.type {
                case ptev_async_branch:
                    try resolve(next: event.variant.async_branch.from)
                    try emit(event.variant.async_branch.from, event.variant.async_branch.to)
                case ptev_disabled:
                    if event.ip_suppressed == 0 { try resolve(next: event.variant.disabled.ip) }
                    pending = nil
                case ptev_async_disabled, ptev_enabled, ptev_overflow:
                    // A gap: whatever the pending instruction did is not in the trace.
                    pending = nil
                default:
                    break
                }
            }
            if status & Int32(pts_eos.rawValue) != 0 { break }
            var insn = pt_insn()
            status = pt_insn_next(decoder, &insn, MemoryLayout<pt_insn>.size)
            if status == -Int32(pte_eos.rawValue) { break }
            guard status >= 0 else { throw failure(status, "decoding an instruction") }
            if insn.iclass == ptic_error {
                throw PTDecodeError(offset: offset(), message: "undecodable instruction at 0x\(String(insn.ip, radix: 16))")
            }
            try resolve(next: insn.ip)
            if insn.iclass != ptic_other && insn.iclass != ptic_ptwrite { pending = insn }
        }
        return count
    }
}

private final class ReaderBox {
    let read: PTBranchDecoder.MemoryReader
    init(_ read: @escaping PTBranchDecoder.MemoryReader) { self.read = read }
}
