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

extension TraceTaskOutput {
    /// OUT written while the window is traced, instead of extracted from the log after:
    /// each segment's records go straight to their place in `OUT.partial` (record k of the
    /// window at byte header + 24·k), O_DIRECT where the file system allows, from as many
    /// threads as segments. `commit` renames it to OUT once the window is complete and the
    /// file holds exactly its records; after a failure, `discard` and then `write` the
    /// partial trace from the log, as before.
    public final class InPlace: TraceOutput {
        public let out: FilePath
        public let extended: Bool
        private let fd: FileDescriptor
        private let direct: FileDescriptor?
        private var closed = false
        /// Bytes before the first record: the extended file's magic record.
        private var headerBytes: UInt64 { extended ? UInt64(BranchRecord.size) : 0 }

        public init(out: FilePath, extended: Bool) throws {
            try SafeFiles.requireReplaceable(out)
            self.out = out
            self.extended = extended
            fd = try SafeFiles.createTemporary(partialPath(for: out))
            direct = SafeFiles.reopenDirect(fd)
            if extended {
                let header = OutputBuffer(file: fd.rawValue, at: 0, direct: nil, capacity: 4096)
                try header.reserve(BranchRecord.size)
                header.put(count: BranchRecord.size) { BranchRecord.extendedMagic.store(to: $0) }
                try SystemError.naming(partialPath(for: out), "write") { try header.flush() }
            }
        }

        deinit { discard() }

        public func segmentSink(recordIndex: UInt64) throws -> BranchSink {
            Segment(OutputBuffer(file: fd.rawValue, at: headerBytes + recordIndex * UInt64(BranchRecord.size), direct: direct?.rawValue),
                    extended: extended, path: partialPath(for: out))
        }

        /// The window is complete with `records` records: check the file holds exactly
        /// them, and rename it to OUT.
        public func commit(records: UInt64) throws -> FilePath {
            let partial = partialPath(for: out)
            let size = try SystemError.naming(partial, "seek") { try fd.seek(offset: 0, from: .end) }
            let expected = headerBytes + records * UInt64(BranchRecord.size)
            guard UInt64(size) == expected else {
                throw TraceTask.Inexact(message: "\(partial): \(size) bytes written in place, the window's \(records) records take \(expected)")
            }
            discard()
            try SafeFiles.commit(partial, to: out)
            return out
        }

        /// Close and remove the file (nothing was traced).
        public func remove() {
            discard()
            _ = unlink(partialPath(for: out).string)
        }

        /// Close the file, as it is (OUT.partial).
        public func discard() {
            guard !closed else { return }
            closed = true
            try? fd.close()
            try? direct?.close()
        }

        /// One segment's records, in order from its place on.
        final class Segment: BranchSink {
            private let buffer: OutputBuffer
            private let extended: Bool
            private let path: FilePath

            init(_ buffer: OutputBuffer, extended: Bool, path: FilePath) {
                self.buffer = buffer
                self.extended = extended
                self.path = path
            }

            func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws {
                let size = BranchRecord.size
                try SystemError.naming(path, "write") { try buffer.reserve(batch.count * size) }
                let extended = self.extended
                buffer.put(count: batch.count * size) { p in
                    for (i, r) in batch.enumerated() {
                        BranchRecordLayout.store(from: r.from, to: r.to, format: extended ? r.brctr : 0, at: p + i * size)
                    }
                }
            }

            func finish() throws { try SystemError.naming(path, "write") { try buffer.flush() } }
        }
    }
}
