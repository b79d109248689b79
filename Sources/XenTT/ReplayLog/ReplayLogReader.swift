import SystemPackage

/// A streaming, zero-copy reader of a replay log: constant memory whatever the log's size.
///
/// Every entry is checked (docs/replay-log-format.md, "Rules a reader checks"); a violation
/// throws a `ReplayLogError` naming the file, byte offset and entry index — or, when salvaging,
/// is skipped and recorded in `salvageReport`.
public final class ReplayLogReader {
    /// The file, or nil for a log read from memory.
    public let path: FilePath?
    public let header: ReplayLogHeader
    public let salvage: Bool
    /// What a salvaging reader skipped so far.
    public internal(set) var salvageReport = ReplayLogSalvageReport()
    /// Offset of the entry the next `next()` reads.
    @exclusivity(unchecked) public private(set) var position: UInt64
    /// The log's headerCRC (identifies it for the sidecar index).
    public let headerCRC: UInt32
    /// Where the index used by `seek` came from, and why a sidecar was not used.
    public private(set) var indexSource: IndexSource = .none
    public private(set) var sidecarProblem: String?

    public enum IndexSource: Equatable, Sendable {
        case none, sidecar, sidecarExtended, builtInMemory
    }

    let bytes: LogBytes
    let slotSize: Int
    let vcpuCount: Int
    // Hot state: read and written once or more per entry; the reader is not shared between
    // threads, so the dynamic exclusivity checks are skipped.
    @exclusivity(unchecked) var expectedIndex: UInt64 = 0
    /// Per vCPU: the last entry's stamp, and the last branch record's counter (0 = none yet).
    @exclusivity(unchecked) var lastStamp: [UInt64]
    @exclusivity(unchecked) var lastRecord: [UInt64]
    @exclusivity(unchecked) var finished = false
    private var memoryIndex: ReplayLogIndex?

    public var fileSize: UInt64 { bytes.size }
    public var name: String { bytes.name }
    /// Offset of the first entry.
    public var dataStart: UInt64 { UInt64(slotSize) }

    /// Opens and checks the header of the log at `path`.
    public convenience init(path: FilePath, salvage: Bool = false) throws {
        try self.init(bytes: LogBytes(path: path), path: path, salvage: salvage)
    }

    /// Reads a log held in memory (a private copy is made); `name` is used in errors.
    public convenience init(bytes: UnsafeRawBufferPointer, name: String, salvage: Bool = false) throws {
        try self.init(bytes: LogBytes(bytes: bytes, name: name), path: nil, salvage: salvage)
    }

    init(bytes: LogBytes, path: FilePath?, salvage: Bool) throws {
        self.bytes = bytes
        self.path = path
        self.salvage = salvage
        let size = bytes.size
        guard size >= UInt64(ReplayLogFormat.fileHeaderSize) else {
            throw ReplayLogError(.malformed, path: bytes.name, offset: 0,
                                 "file is \(size) bytes, shorter than the \(ReplayLogFormat.fileHeaderSize)-byte header")
        }
        let raw = try bytes.copy(at: 0, count: ReplayLogFormat.fileHeaderSize)
        let name = bytes.name
        header = try raw.withUnsafeBytes { p in
            try ReplayLogHeader.decode(p) { ReplayLogError(.malformed, path: name, offset: $0, $1) }
        }
        headerCRC = raw.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 124, as: UInt32.self)) }
        slotSize = Int(header.slotSize)
        vcpuCount = Int(header.vcpuCount)
        lastStamp = [UInt64](repeating: 0, count: vcpuCount)
        lastRecord = [UInt64](repeating: 0, count: vcpuCount)
        position = UInt64(slotSize)
        if size < UInt64(slotSize) {
            // The header's slot is incomplete: the file ends inside it.
            if !salvage {
                throw ReplayLogError(.tornTail, path: name, offset: size, entry: 0,
                                     "file ends \(UInt64(slotSize) - size) bytes before the end of the header slot")
            }
            salvageReport.skips.append(.init(start: size, end: size, entry: 0, reason: "file ends inside the header slot"))
            finished = true
            position = size
        }
    }

    // MARK: Decoding one entry

    enum Decoded {
        case entry(ReplayLogEntry)
        /// The entry does not fit in the file (or is the last and fails its checksum).
        case torn(String)
        case bad(String)
    }

    /// Decodes the entry at `offset` and checks the rules that concern it alone (1–4, 6, 7).
    @inline(__always)
    func decode(at offset: UInt64) throws -> Decoded {
        let remaining = bytes.size - offset
        if remaining < UInt64(ReplayLogFormat.entryHeaderSize) {
            return .torn("torn last entry: \(remaining) bytes, less than an entry header")
        }
        let h = try bytes.bytes(at: offset, count: ReplayLogFormat.entryHeaderSize)
        let marker = UInt32(littleEndian: h.loadUnaligned(fromByteOffset: ReplayLogFormat.offMarker, as: UInt32.self))
        if marker != ReplayLogFormat.entryMarker { return .bad("no entry marker (found 0x\(hex32(marker)))") }
        let length = Int(UInt32(littleEndian: h.loadUnaligned(fromByteOffset: ReplayLogFormat.offLength, as: UInt32.self)))
        if length > ReplayLogFormat.maxPayloadLength {
            return .bad("payload length \(length) exceeds the 1 MiB bound")
        }
        let slots = ReplayLogFormat.slotCount(payloadLength: length, slotSize: slotSize)
        let total = slots * slotSize
        if UInt64(total) > remaining {
            return .torn("entry of \(total) bytes extends past the end of the file (\(remaining) bytes left): torn last entry or corrupt length")
        }
        let p = try bytes.bytes(at: offset, count: total)
        let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offCRC, as: UInt32.self))
        let computed = CRC32C.entryChecksum(p, byteCount: total)
        if stored != computed {
            let what = "checksum mismatch (stored 0x\(hex32(stored)), computed 0x\(hex32(computed)))"
            return offset + UInt64(total) == bytes.size ? .torn("last entry: \(what): torn write or corruption") : .bad(what)
        }
        let type = ReplayEventType(rawValue: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offType, as: UInt16.self)))
        let domid = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offDomid, as: UInt16.self))
        let vcpu = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offVCPU, as: UInt16.self))
        if Int(vcpu) >= vcpuCount { return .bad("vCPU \(vcpu) is not below the header's vCPU count \(vcpuCount)") }
        if domid >= ReplayLogFormat.domidLimit { return .bad("domain id \(domid) is a reserved id (0x7ff0 or above)") }
        let cpu = CPUState(
            ip: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offIP, as: UInt64.self)),
            brctr: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offBrctr, as: UInt64.self)),
            rcx: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offRCX, as: UInt64.self)),
            tsc: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offTSC, as: UInt64.self)),
            cr3: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offCR3, as: UInt64.self)))
        if let recordSize = type.branchRecordSize {
            if length % recordSize != 0 {
                return .bad("\(type.name) payload of \(length) bytes is not a whole number of \(recordSize)-byte records")
            }
            if cpu.brctr < UInt64(length / recordSize) {
                return .bad("\(type.name) entry of \(length / recordSize) records is stamped with branch counter \(cpu.brctr), below its record count")
            }
        }
        let index = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offIndex, as: UInt64.self))
        if index >= ReplayLogFormat.maxEntryIndex {
            return .bad("entry index \(index) is not below 2^63")
        }
        return .entry(ReplayLogEntry(
            offset: offset,
            index: index,
            type: type,
            info: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: ReplayLogFormat.offInfo, as: UInt32.self)),
            domid: domid, vcpu: vcpu, cpu: cpu,
            payload: UnsafeRawBufferPointer(start: p + ReplayLogFormat.entryHeaderSize, count: length),
            slotCount: slots, checksum: stored))
    }

    /// Why `e` breaks the per-vCPU counter rules (rule 8), or nil.
    @inline(__always)
    func orderProblem(_ e: ReplayLogEntry) -> String? {
        let v = Int(e.vcpu)
        if e.cpu.brctr < lastStamp[v] {
            return "vCPU \(v) branch counter goes backwards: \(e.cpu.brctr) after \(lastStamp[v])"
        }
        if e.branchRecordCount > 0 && e.firstRecordBrctr <= lastRecord[v] {
            return "vCPU \(v) branch records overlap: first record's counter \(e.firstRecordBrctr) is not above the previous branch entry's \(lastRecord[v])"
        }
        return nil
    }

    @inline(__always)
    func accept(_ e: ReplayLogEntry) {
        let v = Int(e.vcpu)
        lastStamp[v] = e.cpu.brctr
        if e.branchRecordCount > 0 { lastRecord[v] = e.cpu.brctr }
        expectedIndex = e.index &+ 1
        position = e.offset + UInt64(e.slotCount * slotSize)
    }

    private func error(_ kind: ReplayLogError.Kind, _ message: String) -> ReplayLogError {
        ReplayLogError(kind, path: bytes.name, offset: position, entry: expectedIndex, message)
    }

    private func skip(to end: UInt64, _ reason: String) {
        salvageReport.skips.append(.init(start: position, end: end, entry: expectedIndex, reason: reason))
        position = end
    }

    // MARK: Iterating

    /// The next entry, or nil at the end of the log. The entry's payload is valid until the
    /// next call on this reader.
    public func next() throws -> ReplayLogEntry? {
        while !finished {
            if position >= bytes.size {
                finished = true
                return nil
            }
            switch try decode(at: position) {
            case .entry(let e):
                if e.index != expectedIndex {
                    let what = "entry index \(e.index) where \(expectedIndex) was expected"
                    guard salvage else { throw error(.malformed, what) }
                    if e.index < expectedIndex {
                        skip(to: position + UInt64(e.slotCount * slotSize), what + " (an out-of-sequence entry)")
                        continue
                    }
                    // A jump forward is either a gap (the entries after this one go on from
                    // its index) or this entry's index is the wrong one (they go on from the
                    // expected one): the next intact entry tells, so that one bad index does
                    // not make every good entry after it "out of sequence".
                    let following = position + UInt64(e.slotCount * slotSize)
                    if following + UInt64(ReplayLogFormat.entryHeaderSize) <= bytes.size,
                       case .entry(let n) = try decode(at: following), n.index == expectedIndex &+ 1 {
                        skip(to: following, what + " (the entries after it go on from \(expectedIndex))")
                        expectedIndex = n.index
                        continue
                    }
                    salvageReport.skips.append(.init(start: position, end: position, entry: expectedIndex,
                                                     reason: "entries \(expectedIndex)..<\(e.index) missing"))
                    expectedIndex = e.index
                }
                if let problem = orderProblem(e) {
                    guard salvage else { throw error(.malformed, problem) }
                    skip(to: position + UInt64(e.slotCount * slotSize), problem)
                    expectedIndex = e.index &+ 1
                    continue
                }
                accept(e)
                return e
            case .torn(let what):
                guard salvage else { throw error(.tornTail, what) }
                // A corrupt length can make an entry in the middle look torn: keep what follows.
                let next = try resynchronise(after: position)
                skip(to: next, what)
                if next >= bytes.size { finished = true }
            case .bad(let what):
                guard salvage else { throw error(.malformed, what) }
                skip(to: try resynchronise(after: position), what)
            }
        }
        return nil
    }

    /// The next slot boundary after `offset` where an intact entry (rules 1–4, 6, 7) with an
    /// index not below the expected one starts, or the end of the file.
    private func resynchronise(after offset: UInt64) throws -> UInt64 {
        var at = offset + UInt64(slotSize)
        let end = bytes.size
        while at + UInt64(ReplayLogFormat.entryHeaderSize) <= end {
            let marker = UInt32(littleEndian: try bytes.bytes(at: at, count: 4).loadUnaligned(as: UInt32.self))
            if marker == ReplayLogFormat.entryMarker, case .entry(let e) = try decode(at: at), e.index >= expectedIndex {
                return at
            }
            at += UInt64(slotSize)
        }
        return end
    }

    /// Calls `body` for every entry, optionally only those of some types and one vCPU.
    /// Every entry is still read and checked.
    public func forEach(types: Set<ReplayEventType>? = nil, vcpu: UInt16? = nil,
                        _ body: (ReplayLogEntry) throws -> Void) throws {
        while let e = try next() {
            if let vcpu, e.vcpu != vcpu { continue }
            if let types, !types.contains(e.type) { continue }
            try body(e)
        }
    }

    /// Continue reading at `offset`, an entry boundary whose entry has sequence number `index`;
    /// the per-vCPU counter checks restart there.
    func position(at offset: UInt64, index: UInt64) {
        position = offset
        expectedIndex = index
        finished = false
        for v in 0..<vcpuCount {
            lastStamp[v] = 0
            lastRecord[v] = 0
        }
    }

    // MARK: Seeking

    /// Positions the reader so that `next()` returns the first entry of `vcpu` whose branch
    /// counter is ≥ `count` (then the entries after it, of every vCPU, in file order); at the
    /// end of the log when there is none. Uses the sidecar index when it is valid; otherwise
    /// indexes the log in memory with one pass (kept for later seeks).
    public func seek(vcpu: UInt16, toBranchCount count: UInt64) throws {
        guard Int(vcpu) < vcpuCount else {
            throw ReplayLogError(.refused, path: bytes.name, "cannot seek vCPU \(vcpu): the log has \(vcpuCount) vCPUs")
        }
        for attempt in 0..<2 {
            let index = try currentIndex()
            do {
                if try seek(in: index, vcpu: vcpu, count: count) { return }
            } catch let e as ReplayLogError where attempt == 0 && indexSource != .builtInMemory {
                sidecarProblem = "stale: seek failed through it (\(e.message))"
            }
            if attempt == 0 && indexSource != .builtInMemory {
                if sidecarProblem == nil { sidecarProblem = "stale: a point does not match its entry" }
                memoryIndex = nil
                indexSource = .builtInMemory
                memoryIndex = try ReplayLogIndex.build(reusing: self, salvage: salvage)
                continue
            }
            throw ReplayLogError(.malformed, path: bytes.name, "index built from this log does not match it (changed while reading?)")
        }
    }

    /// Seeks through `index`; false when a point turns out not to match the log (stale index).
    private func seek(in index: ReplayLogIndex, vcpu: UInt16, count: UInt64) throws -> Bool {
        let points = index.points[Int(vcpu)]
        // First point whose brctr is ≥ count.
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].brctr < count { lo = mid + 1 } else { hi = mid }
        }
        func land(_ p: ReplayLogIndex.Point) throws -> Bool {
            position(at: p.offset, index: p.index)
            guard let e = try next(), e.offset == p.offset, e.vcpu == vcpu, e.cpu.brctr == p.brctr, e.index == p.index else {
                return false
            }
            position(at: p.offset, index: p.index)
            return true
        }
        if points.isEmpty {
            position(at: index.coveredLength, index: index.entryCount)
            return true
        }
        if lo == 0 { return try land(points[0]) }
        // Entries of `vcpu` after point p that are not points themselves lie before p + spacing.
        let p = points[lo - 1]
        guard try land(p) else { return false }
        let (limit, overflow) = p.offset.addingReportingOverflow(index.spacing)
        if overflow { return false }
        while position < limit {
            let at = position, atIndex = expectedIndex
            guard let e = try next() else { return true }
            if e.vcpu == vcpu && e.cpu.brctr >= count {
                position(at: at, index: atIndex)
                return true
            }
        }
        if lo < points.count { return try land(points[lo]) }
        position(at: index.coveredLength, index: index.entryCount)
        return true
    }

    /// The index for seeks: the sidecar when valid (extended over entries appended since),
    /// else one built in memory.
    private func currentIndex() throws -> ReplayLogIndex {
        if let memoryIndex { return memoryIndex }
        let saved = (position, expectedIndex, finished, lastStamp, lastRecord)
        defer {
            (position, expectedIndex, finished, lastStamp, lastRecord) = saved
        }
        if let path {
            switch ReplayLogIndex.load(sidecar: ReplayLogIndex.sidecarPath(for: path), for: self) {
            case .valid(var index):
                if index.coveredLength < bytes.size {
                    try index.extend(reusing: self, salvage: salvage)
                    indexSource = .sidecarExtended
                } else {
                    indexSource = .sidecar
                }
                memoryIndex = index
                return index
            case .missing:
                break
            case .corrupt(let why):
                sidecarProblem = "corrupt: " + why
            case .stale(let why):
                sidecarProblem = "stale: " + why
            }
        }
        let index = try ReplayLogIndex.build(reusing: self, salvage: salvage)
        indexSource = .builtInMemory
        memoryIndex = index
        return index
    }
}
