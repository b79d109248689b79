import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Copies the branch records of a replay log whose branch counter lies in a range into a
/// BTS file: what bts-extract did.
///
/// The filter is exact per record: a hardware-branches entry stamped `brctr` with n records
/// holds records with counters brctr−n+1 … brctr (docs/replay-log-format.md, "the stamp
/// rule"), and only the records whose own counter lies in [lower, upper] are written, even
/// when their entry straddles a bound. Counters are per vCPU; without `vcpu` every vCPU's
/// records are taken, each judged by its own counter.
public struct BranchExtractor {
    /// The counter range, bounds included.
    public var lower: UInt64 = 0
    public var upper: UInt64 = .max
    /// Only this vCPU's records (nil: all).
    public var vcpu: UInt16?
    /// Write an extended file: magic record first, each record's format = its branch counter.
    public var extended = false

    public init(lower: UInt64 = 0, upper: UInt64 = .max, vcpu: UInt16? = nil, extended: Bool = false) {
        self.lower = lower
        self.upper = upper
        self.vcpu = vcpu
        self.extended = extended
    }

    /// `S − radius` and `E + radius`, saturating at 0 and at the maximum.
    public static func bounds(start: UInt64?, startRadius: UInt64, end: UInt64?, endRadius: UInt64) -> ClosedRange<UInt64>? {
        let lo = start.map { $0.subtractingReportingOverflow(startRadius).overflow ? 0 : $0 - startRadius } ?? 0
        let hi = end.map { $0.addingReportingOverflow(endRadius).overflow ? .max : $0 + endRadius } ?? .max
        return lo <= hi ? lo...hi : nil
    }

    public struct Summary: Equatable {
        /// Hardware-branch entries read (in the scanned part of the log) and those with at
        /// least one record in the range.
        public var branchEntriesRead = 0
        public var branchEntriesUsed = 0
        /// Records written.
        public var records = 0
        /// Per vCPU: smallest and largest counter of the records written.
        public var counterRange: [UInt16: ClosedRange<UInt64>] = [:]
        /// Per vCPU: smallest and largest counter of all branch records read.
        public var counterRangeSeen: [UInt16: ClosedRange<UInt64>] = [:]
        /// Whether the sidecar index let the scan start late.
        public var usedIndex = false
    }

    /// Read `log`, write the selected records to `writer`.
    public func extract(from log: ReplayLogReader, logPath: FilePath?, to writer: BTSWriter) throws -> Summary {
        var summary = Summary()
        let vcpuCount = Int(log.header.vcpuCount)
        if lower > 0, let logPath, sidecarExists(for: logPath) {
            try seekToLower(log, vcpuCount: vcpuCount)
            summary.usedIndex = true
        }
        // vCPUs (of those we take) whose records are all past `upper`: stop when all are.
        var done = [Bool](repeating: false, count: vcpuCount)
        var doneCount = 0
        let needed = vcpu == nil ? vcpuCount : 1
        let lower = self.lower, upper = self.upper, extended = self.extended

        while let e = try log.next() {
            guard e.type == .hardwareBranches64 || e.type == .hardwareBranches32 else { continue }
            if let vcpu, e.vcpu != vcpu { continue }
            let n = e.branchRecordCount
            guard n > 0 else { continue }
            summary.branchEntriesRead += 1
            let first = e.firstRecordBrctr, last = e.cpu.brctr
            widen(&summary.counterRangeSeen, e.vcpu, first, last)
            if first > upper {
                let v = Int(e.vcpu)
                if v < vcpuCount, !done[v] {
                    done[v] = true
                    doneCount += 1
                    if doneCount == needed { break }
                }
                continue
            }
            if last < lower { continue }
            summary.branchEntriesUsed += 1
            let from = max(first, lower), to = min(last, upper)
            widen(&summary.counterRange, e.vcpu, from, to)
            summary.records += Int(to - from + 1)
            if !extended && e.type == .hardwareBranches64 {
                // The records are already in BTS layout: copy the selected slice as is.
                let k0 = Int(from - first), k1 = Int(to - first) + 1
                try writer.append(encoded: UnsafeRawBufferPointer(rebasing: e.payload[(k0 * BranchRecord.size)..<(k1 * BranchRecord.size)]))
            } else {
                try e.forEachBranch { f, t, format, counter in
                    if counter >= lower && counter <= upper {
                        try writer.append(BranchRecord(from: f, to: t, format: extended ? counter : format))
                    }
                }
            }
        }
        return summary
    }

    private func widen(_ d: inout [UInt16: ClosedRange<UInt64>], _ v: UInt16, _ lo: UInt64, _ hi: UInt64) {
        if let r = d[v] { d[v] = min(r.lowerBound, lo)...max(r.upperBound, hi) } else { d[v] = lo...hi }
    }

    private func sidecarExists(for log: FilePath) -> Bool {
        (try? ReplayLogIndex.sidecarPath(for: log).stat()) != nil
    }

    /// Position the reader at the earliest entry that can hold a record ≥ lower: per vCPU
    /// the first entry stamped ≥ lower; the smallest offset of those.
    private func seekToLower(_ log: ReplayLogReader, vcpuCount: Int) throws {
        if let vcpu {
            try log.seek(vcpu: vcpu, toBranchCount: lower)
            return
        }
        var best: (offset: UInt64, vcpu: UInt16)? = nil
        for v in 0..<vcpuCount {
            try log.seek(vcpu: UInt16(v), toBranchCount: lower)
            if best == nil || log.position < best!.offset { best = (log.position, UInt16(v)) }
        }
        if let best { try log.seek(vcpu: best.vcpu, toBranchCount: lower) }
    }
}
