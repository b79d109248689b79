import SystemPackage
import TTSystem

/// Writes the branch records a backend delivers into a replay log as hardware-branch
/// entries, stamped by the log's rule (brctr after each batch's last record, ip = that
/// record's target), and checks on the way that the records are consecutive: a gap or a
/// repeat in the branch counter is an error, never a silently wrong trace.
public final class ReplayLogBranchSink: BranchSink {
    public let writer: ReplayLogWriter
    public let vcpu: UInt16
    public let source: BranchSource
    /// The counter of the last record written (0 before any).
    public private(set) var lastBrctr: UInt64?
    public private(set) var recordCount: UInt64 = 0
    private var scratch: [UInt8] = []

    public struct Gap: Error, CustomStringConvertible, ExitStatusProviding {
        public let expected: UInt64
        public let got: UInt64
        public var description: String { "branch records not consecutive: expected brctr \(expected), got \(got)" }
        public var exitStatus: Int32 { ExitStatus.failure }
    }

    public init(writer: ReplayLogWriter, vcpu: UInt16 = 0, source: BranchSource = .tcgPlugin) {
        self.writer = writer
        self.vcpu = vcpu
        self.source = source
    }

    public func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws {
        guard let last = batch.last, let input = batch.baseAddress else { return }
        let n = batch.count
        let bytes = n * BranchRecordLayout.size
        if scratch.count < bytes { scratch = [UInt8](repeating: 0, count: bytes) }
        let first = lastBrctr.map { $0 + 1 } ?? input[0].brctr
        // Through raw pointers: this runs once per branch record of a trace.
        try scratch.withUnsafeMutableBufferPointer { buffer in
            let out = UnsafeMutableRawPointer(buffer.baseAddress!)
            var expected = first
            var i = 0
            while i < n {
                let r = input[i]
                guard r.brctr == expected else { throw Gap(expected: expected, got: r.brctr) }
                expected &+= 1
                // The format word is 0: the counter goes into the entry's stamp.
                BranchRecordLayout.store(from: r.from, to: r.to, format: 0, at: out + i * BranchRecordLayout.size)
                i += 1
            }
            try writer.appendBranches(vcpu: vcpu, cpu: CPUState(ip: last.to, brctr: last.brctr),
                                      records: UnsafeRawBufferPointer(start: out, count: bytes), source: source)
        }
        lastBrctr = last.brctr
        recordCount += UInt64(n)
    }
}
