import SystemPackage
import TTSystem

/// A `tt trace-task` window cut into segments for a scheduler (`tt trace-task --plan DIR`):
/// each segment is traced by its own job (`--plan DIR --segment K`, any machine seeing the
/// recording and DIR at the same paths) into `DIR/segment-K.ttlog`, and `--merge DIR`
/// checks the seams and joins them into the output one job writes. The cut is the one
/// `--jobs N` makes (`TraceTask.splitPoints`), and a segment is traced by the same code
/// (`TraceTask.traceSegment`).
///
/// The plan file `DIR/plan` (text, versioned; one record a line, fields separated by one space):
///
///     tt-trace-plan 1
///     recording <NAME> <absolute state directory, to the end of the line>
///     identity <bytes of recording.rr> <0x CRC-32C of the index's checkpoint lines, or none>
///     start 0x<ip>:<brctr>:0x<cx> icount <I>
///     end 0x<ip>:<brctr>:0x<cx> icount <I>
///     seam <icount> <brctr> 0x<ip> 0x<cx> 0x<register crc32c> <raw count>
///
/// `start` and `end` are the window's landings; `seam` lines (in icount order, one fewer
/// than the segments) are the indexed checkpoints it is cut at, as the index has them, with
/// the plugin's raw count there: segment k holds the records after boundary k up to
/// boundary k+1 (boundary 0 the start's brctr, boundary k the k-th seam's raw count, the
/// last the end's brctr). Another format number or a malformed line is refused (65).
public struct TracePlan: Equatable, Sendable {
    public static let magic = "tt-trace-plan"
    public static let version = 1
    /// The plan's files in DIR.
    public static let planFile = "plan", commandsFile = "commands", slurmFile = "slurm.sh", kubernetesFile = "k8s-job.yaml"
    public static let mergedLog = "trace.ttlog", mergedOutput = "trace.bts"
    public static func segmentFile(_ k: Int) -> String { "segment-\(k).ttlog" }
    public static func partialSegmentFile(_ k: Int) -> String { segmentFile(k) + ".partial" }
    /// At most this many segments (one job each).
    public static let maxSegments = 4096

    /// What a segment checks the recording against: the recording's size and the index's
    /// checkpoints (their fingerprints identify the run; `unresumable` marks, which runs
    /// add, are left out).
    public struct Identity: Equatable, Sendable, CustomStringConvertible {
        public var recordingBytes: UInt64
        public var indexCRC: UInt32?
        public var description: String { "\(recordingBytes) \(indexCRC.map { "0x" + String($0, radix: 16) } ?? "none")" }

        public init(recordingBytes: UInt64, indexCRC: UInt32?) {
            self.recordingBytes = recordingBytes
            self.indexCRC = indexCRC
        }

        public init(of state: StateDirectory) throws {
            guard let bytes = state.size(StateFile.recording) else {
                throw StateError.badFile(state.file(StateFile.recording), "missing: a plan needs a QEMU recording")
            }
            recordingBytes = bytes
            if var index = try CheckpointIndex.load(state) {
                index.unresumable = []
                indexCRC = Array(index.text.utf8).withUnsafeBytes { CRC32C.checksum($0) }
            } else {
                indexCRC = nil
            }
        }
    }

    public var name: String
    public var statePath: String
    public var identity: Identity
    public var start: Position
    public var end: Position
    public var seams: [IndexedCheckpoint]

    public init(name: String, statePath: String, identity: Identity, start: Position, end: Position, seams: [IndexedCheckpoint]) {
        self.name = name
        self.statePath = statePath
        self.identity = identity
        self.start = start
        self.end = end
        self.seams = seams
    }

    public var segmentCount: Int { seams.count + 1 }

    /// The recording's state directory.
    public func state() throws -> StateDirectory { try StateDirectory(name: name, explicit: statePath, base: "/") }

    /// Boundary k (0…segmentCount) as a segment log names it: `LANDMARK icount I`.
    public func boundaryText(_ k: Int) -> String {
        let p = k == 0 ? start : k == segmentCount ? end : Position(landmark: seams[k - 1].fingerprint.landmark, icount: seams[k - 1].icount)
        return "\(p.landmark) icount \(p.icount ?? 0)"
    }

    /// The branch count before boundary k's first record: the start's and end's brctr, a seam's raw count.
    public func boundaryCount(_ k: Int) -> UInt64 {
        k == 0 ? start.landmark.brctr : k == segmentCount ? end.landmark.brctr : seams[k - 1].backendState[0]
    }

    public var text: String {
        var s = "\(Self.magic) \(Self.version)\nrecording \(name) \(statePath)\nidentity \(identity)\n"
        s += "start \(start.landmark) icount \(start.icount ?? 0)\nend \(end.landmark) icount \(end.icount ?? 0)\n"
        for c in seams {
            let f = c.fingerprint
            s += "seam \(f.icount) \(f.landmark.brctr) 0x\(String(f.landmark.ip, radix: 16)) 0x\(String(f.landmark.cx, radix: 16)) 0x\(String(f.registerHash, radix: 16)) \(c.backendState[0])\n"
        }
        return s
    }

    /// A plan that cannot be used, a segment that is missing or does not fit its seams: one
    /// line naming the file (and the segment), 65 (66 for a missing or unfinished segment).
    public struct Refused: Error, CustomStringConvertible, ExitStatusProviding {
        public let message: String
        public let exitStatus: Int32
        public init(_ message: String, status: Int32 = ExitStatus.dataError) {
            self.message = message
            exitStatus = status
        }
        public var description: String { message }
    }

    public init(parsing text: String, file: String) throws {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        func fail(_ n: Int, _ why: String) -> Refused { Refused("\(file): line \(n): \(why)") }
        func hex(_ s: Substring) -> UInt64? { s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : nil }
        func position(_ n: Int, _ key: String) throws -> Position {
            let f = n <= lines.count ? lines[n - 1].split(separator: " ", omittingEmptySubsequences: false) : []
            let l = f.count == 4 ? f[1].split(separator: ":", omittingEmptySubsequences: false) : []
            guard f.count == 4, f[0] == key, f[2] == "icount", let icount = UInt64(f[3]), l.count == 3,
                  let ip = hex(l[0]), let brctr = UInt64(l[1]), let cx = hex(l[2]) else {
                throw fail(n, "expected '\(key) 0xIP:BRCTR:0xCX icount N'")
            }
            return Position(landmark: Landmark(ip: ip, brctr: brctr, cx: cx), icount: icount)
        }
        guard let head = lines.first, case let h = head.split(separator: " "), h.count == 2, h[0] == Self.magic, let v = Int(h[1]) else {
            throw fail(1, "not a trace plan (no '\(Self.magic) \(Self.version)')")
        }
        guard v == Self.version else { throw fail(1, "trace plan format \(v); this tt reads format \(Self.version) (make the plan again)") }
        guard lines.count >= 5 else { throw fail(lines.count + 1, "the plan ends early") }
        let r = lines[1].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard r.count == 3, r[0] == "recording", (try? StateDirectory.validate(name: String(r[1]))) != nil, r[2].hasPrefix("/") else {
            throw fail(2, "expected 'recording NAME /STATEDIR'")
        }
        name = String(r[1])
        statePath = String(r[2])
        let i = lines[2].split(separator: " ", omittingEmptySubsequences: false)
        guard i.count == 3, i[0] == "identity", let bytes = UInt64(i[1]), i[2] == "none" || hex(i[2]).map({ $0 <= UInt32.max }) == true else {
            throw fail(3, "expected 'identity BYTES 0xCRC|none'")
        }
        identity = Identity(recordingBytes: bytes, indexCRC: hex(i[2]).map { UInt32($0) })
        start = try position(4, "start")
        end = try position(5, "end")
        seams = []
        for (n, line) in lines.enumerated().dropFirst(5) {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            guard f.count == 7, f[0] == "seam", let icount = UInt64(f[1]), let brctr = UInt64(f[2]), let ip = hex(f[3]),
                  let cx = hex(f[4]), let crc = hex(f[5]), crc <= UInt64(UInt32.max), let raw = UInt64(f[6]) else {
                throw fail(n + 1, "expected 'seam ICOUNT BRCTR 0xIP 0xCX 0xCRC RAW'")
            }
            guard icount > (seams.last?.icount ?? start.icount ?? 0), raw >= (seams.last?.backendState[0] ?? start.landmark.brctr),
                  raw <= end.landmark.brctr else {
                throw fail(n + 1, "a seam out of order (icount and raw count must rise from the start to the end)")
            }
            seams.append(IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: ip, brctr: brctr, cx: cx), icount: icount,
                                                                    registerHash: UInt32(crc)), backendState: [raw]))
        }
        guard end.landmark.brctr >= start.landmark.brctr, seams.count < Self.maxSegments else {
            throw fail(5, "the end lies before the start, or more than \(Self.maxSegments) segments")
        }
    }

    /// The plan in `dir` (its `plan` file).
    public static func load(_ dir: StateDirectory) throws -> TracePlan {
        guard dir.fileExists(planFile) else {
            throw Refused("\(dir.file(planFile)): no trace plan here (make one with tt trace-task --plan)", status: ExitStatus.noInput)
        }
        return try TracePlan(parsing: try dir.read(planFile), file: dir.file(planFile).string)
    }

    // MARK: making a plan

    /// The plan of the window `start` … `end` of `session`'s recording, cut as `--jobs
    /// jobs` cuts it. The session lands on both (an end without a count is found from the
    /// start's landing, as trace-task finds it), and is left at the start.
    public static func make(session: ReplaySession, state: StateDirectory, start: ResolvedLocation, end: ResolvedLocation,
                            jobs: Int) throws -> TracePlan {
        var startTarget = start
        if case .next = start.condition {
            startTarget = ResolvedLocation(address: start.address, condition: .occurrence(1), text: start.text)
        }
        let s = try session.runUntil(startTarget)
        let e = try session.runUntil(end)
        guard s.icount != nil, e.icount != nil else {
            throw SessionError.unsupported(operation: "plan a trace (no instruction count)", backend: session.backend.name)
        }
        if Timeline.isBefore(address: e.landmark.ip, brctr: e.landmark.brctr, cx: e.landmark.cx, s.landmark) {
            throw TraceTask.BadWindow(message: "the end \(end.text) (\(e.landmark)) lies before the start \(start.text), which landed at \(s.landmark)")
        }
        let seams = TraceTask.splitPoints(session.timeline, jobs: jobs, after: s, beforeBrctr: e.landmark.brctr, endICount: e.icount)
            .map { IndexedCheckpoint(fingerprint: $0.fingerprint, backendState: [$0.backendState[0]]) }
        _ = try session.runUntil(ResolvedLocation(s.landmark))
        return TracePlan(name: state.name, statePath: state.path.string, identity: try Identity(of: state),
                         start: s, end: e, seams: seams)
    }

    // MARK: one segment

    /// Segment `k` is one of the plan's (else 64), and the recording is the one planned (else 65).
    public func check(segment k: Int, in dir: StateDirectory) throws {
        guard (0..<segmentCount).contains(k) else {
            throw Refused("\(dir.file(Self.planFile)): no segment \(k): the plan has \(segmentCount) (0…\(segmentCount - 1))", status: ExitStatus.usage)
        }
        let actual = try Identity(of: try state())
        guard actual == identity else {
            throw Refused("segment \(k): the recording \(statePath) is not the one planned (recording bytes and index \(actual), the plan has \(identity))")
        }
    }

    /// Trace segment `k` with `session` (active, at the beginning of a replay of the planned
    /// recording in a directory of its own) into `DIR/segment-K.ttlog`: written as `.partial`,
    /// renamed when complete. The log holds a session start (`segment K of N`), a landmark
    /// entry `from <boundary k>`, the records, a landmark entry `to <boundary k+1>` and a
    /// session end `complete`.
    public func traceSegment(_ k: Int, session: ReplaySession, into dir: StateDirectory, guestWordSize: UInt8) throws -> UInt64 {
        try check(segment: k, in: dir)
        session.guestWordSize = guestWordSize
        let partial = Self.partialSegmentFile(k)
        dir.remove(partial)
        dir.remove(Self.segmentFile(k))
        let w = try ReplayLogWriter(creating: dir.file(partial), header: ReplayLogHeader(
            producer: "tt trace-task segment (\(session.backend.name))", guestWordSize: guestWordSize, vcpuCount: 1))
        let first = k == 0 ? start.landmark : seams[k - 1].fingerprint.landmark
        try TraceTask.appendText(w, .sessionStart, info: 1, cpu: TraceTask.cpu(first), "\(name) segment \(k) of \(segmentCount)")
        try TraceTask.appendText(w, .landmark, info: 0, cpu: TraceTask.cpu(first), "from \(boundaryText(k))")
        let sink = ReplayLogBranchSink(writer: w, vcpu: 0, source: .tcgPlugin)
        if k == 0 {
            let s = try session.runUntil(ResolvedLocation(start.landmark))
            guard s == start else { throw TraceTask.Inexact(message: "segment 0 started at \(session.describe(s)), the plan's start is \(session.describe(start))") }
            try w.append(type: .traceOn, info: BranchSource.tcgPlugin.rawValue, domid: 0, vcpu: 0, cpu: TraceTask.cpu(start.landmark),
                         payload: UnsafeRawBufferPointer(start: nil, count: 0))
            try session.setTracing(sink)
        }
        let ended = try TraceTask.traceSegment(k, of: seams, in: session, endTarget: ResolvedLocation(end.landmark), sink: sink)
        try sink.finish()
        if let ended, ended != end {
            throw TraceTask.Inexact(message: "segment \(k) ended at \(session.describe(ended)), the plan's end is \(session.describe(end))")
        }
        let last = k + 1 == segmentCount ? end.landmark : seams[k].fingerprint.landmark
        let stamp = TraceTask.cpu(Landmark(ip: last.ip, brctr: max(last.brctr, sink.lastBrctr ?? 0), cx: last.cx))
        try TraceTask.appendText(w, .landmark, info: 1, cpu: stamp, "to \(boundaryText(k + 1))")
        try TraceTask.appendText(w, .sessionEnd, info: 1, cpu: stamp, "complete")
        try w.close()
        try dir.rename(partial, to: Self.segmentFile(k))
        return sink.recordCount
    }

    // MARK: merging

    /// Check every segment in `dir` against the plan and join their records, in order, into
    /// a replay log at `logPath` (replaced) as one trace-task run writes it; the window to
    /// extract (`TraceTaskOutput.write`). A missing or unfinished segment: 66; a segment
    /// whose boundaries or counts are not the plan's, or whose records are not consecutive
    /// across a seam: 65. Each error names the segment.
    public func merge(_ dir: StateDirectory, logPath: FilePath, guestWordSize: UInt8) throws -> TraceTask.Window {
        // Every segment is there before anything is written.
        for k in 0..<segmentCount where !dir.fileExists(Self.segmentFile(k)) {
            let why = dir.fileExists(Self.partialSegmentFile(k)) ? "unfinished (only \(Self.partialSegmentFile(k)): its job failed or still runs)" : "missing"
            throw Refused("segment \(k) of \(segmentCount): \(dir.file(Self.segmentFile(k))) \(why)", status: ExitStatus.noInput)
        }
        SafeFiles.removeFreeingLater(logPath)
        let w = try ReplayLogWriter(creating: logPath, header: ReplayLogHeader(
            producer: "tt trace-task --merge", guestWordSize: guestWordSize, vcpuCount: 1))
        try TraceTask.appendText(w, .sessionStart, info: 1, cpu: TraceTask.cpu(start.landmark), name)
        try TraceTask.appendText(w, .landmark, info: 0, cpu: TraceTask.cpu(start.landmark), "start \(boundaryText(0))")
        try w.append(type: .traceOn, info: BranchSource.tcgPlugin.rawValue, domid: 0, vcpu: 0, cpu: TraceTask.cpu(start.landmark),
                     payload: UnsafeRawBufferPointer(start: nil, count: 0))
        let sink = ReplayLogBranchSink(writer: w, vcpu: 0, source: .tcgPlugin)
        var batch: [BranchTransfer] = []
        for k in 0..<segmentCount {
            let path = dir.file(Self.segmentFile(k))
            func refuse(_ why: String) -> Refused { Refused("segment \(k) of \(segmentCount): \(path): \(why)") }
            let reader = try ReplayLogReader(path: path)
            var texts: [(ReplayEventType, UInt32, String)] = []
            var expected = boundaryCount(k) + 1
            while let e = try reader.next() {
                if e.branchRecordCount > 0 {
                    batch.removeAll(keepingCapacity: true)
                    try e.forEachBranch { from, to, _, brctr in
                        guard brctr == expected else {
                            throw refuse(brctr < expected ? "record brctr \(brctr) repeats or precedes the seam (expected \(expected))"
                                                          : "records missing before brctr \(brctr) (expected \(expected))")
                        }
                        expected += 1
                        batch.append(BranchTransfer(from: from, to: to, brctr: brctr))
                    }
                    try batch.withUnsafeBufferPointer { try sink.receive($0) }
                } else if [.sessionStart, .sessionEnd, .landmark].contains(e.type) {
                    texts.append((e.type, e.info, String(decoding: e.payload, as: UTF8.self)))
                }
            }
            let want: [(ReplayEventType, UInt32, String)] = [(.sessionStart, 1, "\(name) segment \(k) of \(segmentCount)"),
                                                             (.landmark, 0, "from \(boundaryText(k))"),
                                                             (.landmark, 1, "to \(boundaryText(k + 1))"),
                                                             (.sessionEnd, 1, "complete")]
            guard texts.count == want.count, zip(texts, want).allSatisfy({ $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 }) else {
                let got = texts.map { $0.2 }.joined(separator: "; ")
                throw refuse("not this plan's segment: it says '\(got)', the plan's boundaries are \(boundaryText(k)) … \(boundaryText(k + 1))")
            }
            guard expected == boundaryCount(k + 1) + 1 else {
                throw refuse("its records end at brctr \(expected - 1), but the seam after it is at \(boundaryCount(k + 1))")
            }
        }
        try sink.finish()
        try w.append(type: .traceOff, info: BranchSource.tcgPlugin.rawValue, domid: 0, vcpu: 0, cpu: TraceTask.cpu(end.landmark),
                     payload: UnsafeRawBufferPointer(start: nil, count: 0))
        try TraceTask.appendText(w, .landmark, info: 1, cpu: TraceTask.cpu(end.landmark), "end \(boundaryText(segmentCount))")
        try TraceTask.appendText(w, .sessionEnd, info: 1, cpu: TraceTask.cpu(end.landmark), "complete")
        try w.close()
        let records = sink.recordCount
        return TraceTask.Window(start: start, end: end, logPath: logPath, records: records,
                                brctrRange: sink.lastBrctr.map { ($0 - records + 1)...$0 }, complete: true, traced: true)
    }
}
