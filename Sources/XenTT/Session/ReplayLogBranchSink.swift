import SystemPackage
import TTSystem

/// Writes the branch records a backend delivers into a replay log as hardware-branch
/// entries, and checks on the way that the records are consecutive: a gap or a repeat in
/// the branch counter is an error, never a silently wrong trace.
///
/// Entries hold exactly `recordsPerEntry` records each, the last one fewer (`finish`),
/// whatever batches the backend delivers, each stamped by the log's rule (brctr of its
/// last record, ip = that record's target): so the bytes and entries n records take are
/// known before they are traced (`layout`), and segments of a window traced at once can
/// each write their part of one log in place (`ReplayLogWriter.region`).
public final class ReplayLogBranchSink: BranchSink {
    public let writer: ReplayLogWriter
    public let vcpu: UInt16
    public let source: BranchSource
    /// The counter of the last record received (nil before any).
    public private(set) var lastBrctr: UInt64?
    public private(set) var recordCount: UInt64 = 0
    /// The first record's counter must be this (nil: whatever it is).
    private var expectedFirst: UInt64?
    /// Records received and not yet in an entry, encoded.
    private let pending: UnsafeMutableRawPointer
    private var pendingCount = 0
    private var pendingLast = BranchTransfer(from: 0, to: 0, brctr: 0)

    public static let recordsPerEntry = ReplayLogWriter.maxRecordsPerEntry

    public struct Gap: Error, CustomStringConvertible, ExitStatusProviding {
        public let expected: UInt64
        public let got: UInt64
        public var description: String { "branch records not consecutive: expected brctr \(expected), got \(got)" }
        public var exitStatus: Int32 { ExitStatus.failure }
    }

    /// `after`: the records must begin with brctr `after + 1` (a segment's seam).
    public init(writer: ReplayLogWriter, vcpu: UInt16 = 0, source: BranchSource = .tcgPlugin, after: UInt64? = nil) {
        self.writer = writer
        self.vcpu = vcpu
        self.source = source
        expectedFirst = after.map { $0 + 1 }
        pending = .allocate(byteCount: Self.recordsPerEntry * BranchRecordLayout.size, alignment: 16)
    }

    deinit { pending.deallocate() }

    /// The entries and log bytes `records` records take, written by this sink.
    public static func layout(records: UInt64, slotSize: Int) -> (entries: UInt64, bytes: UInt64) {
        let per = UInt64(recordsPerEntry)
        func size(_ n: UInt64) -> UInt64 {
            UInt64(ReplayLogFormat.slotCount(payloadLength: Int(n) * BranchRecordLayout.size, slotSize: slotSize) * slotSize)
        }
        let whole = records / per, rest = records % per
        return (whole + (rest > 0 ? 1 : 0), whole * size(per) + (rest > 0 ? size(rest) : 0))
    }

    public func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws {
        guard let input = batch.baseAddress, !batch.isEmpty else { return }
        var expected = lastBrctr.map { $0 + 1 } ?? expectedFirst ?? input[0].brctr
        // Through raw pointers: this runs once per branch record of a trace.
        var i = 0
        while i < batch.count {
            let r = input[i]
            guard r.brctr == expected else { throw Gap(expected: expected, got: r.brctr) }
            expected &+= 1
            // The format word is 0: the counter goes into the entry's stamp.
            BranchRecordLayout.store(from: r.from, to: r.to, format: 0, at: pending + pendingCount * BranchRecordLayout.size)
            pendingCount += 1
            lastBrctr = r.brctr
            recordCount += 1
            if pendingCount == Self.recordsPerEntry {
                pendingLast = r
                try writeEntry()
            }
            i += 1
        }
        pendingLast = input[batch.count - 1]
    }

    public func finish() throws {
        if pendingCount > 0 { try writeEntry() }
    }

    private func writeEntry() throws {
        try writer.append(type: .hardwareBranches64, info: source.rawValue, domid: 0, vcpu: vcpu,
                          cpu: CPUState(ip: pendingLast.to, brctr: pendingLast.brctr),
                          payload: UnsafeRawBufferPointer(start: pending, count: pendingCount * BranchRecordLayout.size))
        pendingCount = 0
    }
}

/// Where a traced window's records also go while they are traced (`tt trace-task`'s OUT,
/// written in place): a sink for each segment, taking the records from the one with index
/// `recordIndex` in the window (0: its first) on. Sinks of different segments are used at
/// once, from different threads.
public protocol TraceOutput: AnyObject {
    func segmentSink(recordIndex: UInt64) throws -> BranchSink
}

/// Both sinks get every batch: a segment's records into the log and into OUT.
public final class BranchSinkPair: BranchSink {
    public let first: BranchSink
    public let second: BranchSink

    public init(_ first: BranchSink, _ second: BranchSink) {
        self.first = first
        self.second = second
    }

    public func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws {
        try first.receive(batch)
        try second.receive(batch)
    }

    public func finish() throws {
        try first.finish()
        try second.finish()
    }
}
