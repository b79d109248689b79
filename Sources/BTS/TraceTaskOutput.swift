import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// The output half of `tt trace-task`: the records of a captured window, taken from the
/// session's replay log by the same extractor as `tt bts extract`, into a BTS file.
///
/// The file is written as `OUT.partial` and renamed to `OUT` only when the window is
/// complete and the extracted count matches the capture: a file named OUT is always a
/// whole, exact trace. An interrupted or failed run leaves the records it captured
/// (c_s+1 … the last one delivered) in `OUT.partial`, and any earlier OUT untouched.
public enum TraceTaskOutput {
    public static func partialPath(for out: FilePath) -> FilePath {
        FilePath(out.string + ".partial")
    }

    public struct Result {
        /// Where the records are: OUT, or OUT.partial for an incomplete window.
        public var path: FilePath
        public var summary: BranchExtractor.Summary
    }

    /// Extract the window's records c_s+1 … c_e (or … the last captured one) from its log.
    /// Returns nil when tracing never began (nothing to write).
    public static func write(_ window: TraceTask.Window, to out: FilePath, extended: Bool) throws -> Result? {
        guard window.traced, let start = window.start else { return nil }
        let lower = start.landmark.brctr + 1
        let upper: UInt64
        if window.complete, let end = window.end {
            upper = end.landmark.brctr
        } else {
            upper = window.brctrRange?.upperBound ?? start.landmark.brctr
        }
        let partial = partialPath(for: out)
        try SafeFiles.requireReplaceable(out)
        let writer = try BTSWriter(creating: partial, extended: extended)
        let summary: BranchExtractor.Summary
        do {
            let reader = try ReplayLogReader(path: window.logPath)
            let extractor = BranchExtractor(lower: lower, upper: upper, vcpu: 0, extended: extended)
            summary = try extractor.extract(from: reader, logPath: window.logPath, to: writer)
            try writer.close()
        } catch {
            try? writer.close()
            throw error
        }
        let expected = upper >= lower ? upper - lower + 1 : 0
        guard UInt64(summary.records) == expected, UInt64(summary.records) == window.records else {
            throw TraceTask.Inexact(message: "\(window.logPath): extracted \(summary.records) records for brctr \(lower)…\(upper), captured \(window.records)")
        }
        guard window.complete else { return Result(path: partial, summary: summary) }
        try SafeFiles.commit(partial, to: out)
        return Result(path: out, summary: summary)
    }
}
