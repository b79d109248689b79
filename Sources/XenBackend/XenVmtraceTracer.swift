import CXen
import IntelPT
import XenTT

/// Branch tracing of an HVM guest on Xen through vmtrace (Intel PT): the per-vCPU
/// trace buffer is mapped with xenforeignmemory_map_resource, copied out at every stop
/// (it is a ring), and when tracing ends the whole stream is decoded with libipt
/// against the guest's memory into BTS-style transfers.
///
/// Limits: the copy at each stop assumes the ring did not wrap more than once between
/// two stops (vmtrace_buf_kb bounds that); code is read from guest memory at decode
/// time, so code modified during the window would be decoded wrongly — the count check
/// in `finish` (decoded transfers against the hypervisor's branch counter) catches that.
final class XenVmtraceTracer {
    let toolstack: XenToolstack
    let domid: XenDomainID
    let vcpu: UInt32
    private let buffer: XenTraceBuffer
    private(set) var collected: [UInt8] = []
    private var lastPosition = 0

    /// RTIT_CTL bits Xen accepts from the toolstack (TRACE_EN is vmtrace_enable's job):
    /// kernel and user mode, branches, no return compression (every ret gets a TIP).
    static let control = UInt64(TT_RTIT_CTL_OS | TT_RTIT_CTL_USR | TT_RTIT_CTL_BRANCH_EN | TT_RTIT_CTL_DIS_RETC)

    init(toolstack: XenToolstack, domid: XenDomainID, vcpu: UInt32) throws {
        self.toolstack = toolstack
        self.domid = domid
        self.vcpu = vcpu
        buffer = try toolstack.vmtraceMapBuffer(domid, vcpu: vcpu)
        try toolstack.vmtraceSetOption(domid, vcpu: vcpu, key: UInt64(TT_MSR_RTIT_CTL), value: Self.control)
        try toolstack.vmtraceEnable(domid, vcpu: vcpu, on: true)
        lastPosition = Int(try toolstack.vmtraceOutputPosition(domid, vcpu: vcpu))
    }

    /// Copy out what the CPU wrote since the last call; called at every stop.
    func collect() throws {
        let bytes = buffer.bytes
        let position = Int(try toolstack.vmtraceOutputPosition(domid, vcpu: vcpu))
        guard position <= bytes.count else {
            throw XenError.unsupported("vmtrace output position \(position) lies beyond the \(bytes.count)-byte buffer")
        }
        if position >= lastPosition {
            collected.append(contentsOf: bytes[lastPosition..<position])
        } else {
            collected.append(contentsOf: bytes[lastPosition...])
            collected.append(contentsOf: bytes[0..<position])
        }
        lastPosition = position
    }

    /// Stop tracing and deliver every transfer to `sink` (in batches), numbered from
    /// `startBrctr + 1`. With `expectedCount` (the branch counter's advance), a decoded
    /// count that differs is an error: a trace is exact or it is not delivered.
    @discardableResult
    func finish(into sink: BranchSink, startBrctr: UInt64, expectedCount: UInt64?,
                originalByte: @escaping (UInt64) -> UInt8? = { _ in nil }) throws -> UInt64 {
        try collect()
        try toolstack.vmtraceEnable(domid, vcpu: vcpu, on: false)
        var transfers: [BranchTransfer] = []
        let count = try collected.withUnsafeBytes { raw in
            try PTBranchDecoder(trace: raw) { [toolstack, domid, vcpu] address, into in
                // One page at most: the decoder asks again for the rest.
                let n = min(into.count, 4096 - Int(address & 0xfff))
                guard var bytes = try? toolstack.readGuest(domid, vcpu: vcpu, virtualAddress: address, count: n) else { return 0 }
                // tt's own int3s are not the guest's code.
                for i in bytes.indices { if let b = originalByte(address + UInt64(i)) { bytes[i] = b } }
                bytes.withUnsafeBytes { into.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                return bytes.count
            }.decode(startBrctr: startBrctr) { transfers.append($0) }
        }
        if let expectedCount, expectedCount != count {
            throw XenError.unsupported("Intel PT decoding found \(count) taken branches but the branch counter advanced by \(expectedCount); the trace is not delivered")
        }
        var start = 0
        while start < transfers.count {
            let end = min(start + 4096, transfers.count)
            try transfers[start..<end].withUnsafeBufferPointer { try sink.receive($0) }
            start = end
        }
        return count
    }
}
