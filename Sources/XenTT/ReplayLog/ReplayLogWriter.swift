import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Appends entries to a replay log. Append only: the header is written once at creation,
/// entries are encoded straight into an output buffer placed at the log's end (whole
/// blocks written O_DIRECT where the file system allows: a trace is gigabytes), nothing
/// earlier is rewritten. The writer enforces the reader's rules, so it cannot produce a
/// log the reader refuses.
///
/// A long trace traced in segments at once writes each later segment's entries through a
/// `region` of the log (a writer of its own, placed where the earlier segments' entries
/// will end), which the log's writer then `adopt`s: no segment is copied afterwards.
public final class ReplayLogWriter {
    public let path: FilePath
    public let header: ReplayLogHeader
    /// Entries written (including buffered ones).
    public private(set) var entryCount: UInt64
    /// File length once the buffer is flushed.
    public private(set) var byteCount: UInt64
    /// Largest number of records `appendBranches` puts in one entry.
    public static let maxRecordsPerEntry = 4096

    private let fd: FileDescriptor
    /// The same file opened O_DIRECT (nil where the file system refuses it).
    private let direct: FileDescriptor?
    private let slotSize: Int
    private var out: OutputBuffer
    /// Where a region's entries begin (byte offset, entry index); nil for the log's writer.
    private let regionStart: (byte: UInt64, entry: UInt64)?
    private var lastStamp: [UInt64]
    private var lastRecord: [UInt64]
    private var closed = false
    /// Set after a failed write: the file may end in a torn entry, so nothing more is appended.
    private var failed: String?

    /// Creates a new log; refuses an existing file.
    public init(creating path: FilePath, header: ReplayLogHeader) throws {
        if let problem = header.problem() { throw ReplayLogError(.refused, path: path.string, "bad header: \(problem)") }
        self.path = path
        self.header = header
        slotSize = Int(header.slotSize)
        do {
            fd = try FileDescriptor.open(path, .writeOnly, options: [.create, .exclusiveCreate, .closeOnExec],
                                         permissions: [.ownerReadWrite])
        } catch Errno.fileExists {
            throw ReplayLogError(.refused, path: path.string, "refusing to overwrite an existing file")
        } catch let e as Errno {
            throw ReplayLogError.system(e, path: path, doing: "create")
        }
        lastStamp = [UInt64](repeating: 0, count: Int(header.vcpuCount))
        lastRecord = lastStamp
        entryCount = 0
        byteCount = 0
        regionStart = nil
        direct = SafeFiles.reopenDirect(fd)
        out = Self.output(fd, direct, at: 0, slotSize: slotSize)
        do {
            try lock()
            var first = header.encoded()
            first += [UInt8](repeating: 0, count: slotSize - first.count)
            try first.withUnsafeBytes { try out.append(bytes: $0) }
            try flush()
            byteCount = UInt64(slotSize)
        } catch {
            try? fd.close()
            try? direct?.close()
            throw error
        }
    }

    /// A writer for the entries from index `entryIndex` on, placed at byte `offset` of this
    /// writer's log, each vCPU's branch counter continuing from `brctr` (records after it):
    /// written from another thread while this writer writes the entries before it, then
    /// taken over with `adopt`. Its own descriptors; the log's lock stays with this writer.
    public func region(at offset: UInt64, entryIndex: UInt64, after brctr: UInt64) throws -> ReplayLogWriter {
        try ReplayLogWriter(regionOf: self, at: offset, entryIndex: entryIndex, after: brctr)
    }

    private init(regionOf log: ReplayLogWriter, at offset: UInt64, entryIndex: UInt64, after brctr: UInt64) throws {
        path = log.path
        header = log.header
        slotSize = log.slotSize
        guard offset % UInt64(slotSize) == 0 else {
            throw ReplayLogError(.refused, path: path.string, offset: offset, "a region must begin at a slot boundary")
        }
        do {
            fd = try SafeFiles.reopenForWriting(log.fd)
        } catch let e as Errno {
            throw ReplayLogError.system(e, path: path, doing: "reopen")
        }
        direct = SafeFiles.reopenDirect(fd)
        regionStart = (offset, entryIndex)
        byteCount = offset
        entryCount = entryIndex
        lastStamp = [UInt64](repeating: brctr, count: log.lastStamp.count)
        lastRecord = lastStamp
        out = Self.output(fd, direct, at: offset, slotSize: slotSize)
    }

    /// Continue after `region`'s entries, which must begin where this writer's end: its
    /// entries become this log's (flushed first), and the next entry follows them.
    public func adopt(_ region: ReplayLogWriter) throws {
        try usable()
        try region.flush()
        guard let start = region.regionStart, start.byte == byteCount, start.entry == entryCount else {
            throw ReplayLogError(.refused, path: path.string, offset: byteCount, entry: entryCount,
                                 "a region adopted here must begin here (it begins at byte \(region.regionStart?.byte.description ?? "-"), entry \(region.regionStart?.entry.description ?? "-"))")
        }
        try flush()
        byteCount = region.byteCount
        entryCount = region.entryCount
        lastStamp = region.lastStamp
        lastRecord = region.lastRecord
        out = Self.output(fd, direct, at: byteCount, slotSize: slotSize)
    }

    /// Cut the file at this writer's end: whatever regions wrote beyond it (segments not
    /// adopted after a failure) goes, so that the next entry is the log's last.
    public func discardBeyond() throws {
        try usable()
        try flush()
        do { try fd.resize(to: Int64(byteCount)) } catch let e as Errno {
            throw ReplayLogError.system(e, path: path, doing: "truncate")
        }
    }

    /// Opens an existing log to add entries: checks its header and every entry, and continues
    /// its sequence numbers and branch counters. A torn last entry is refused unless
    /// `truncatingTornTail` is true, which cuts the file back to the last whole entry.
    public init(appendingTo path: FilePath, truncatingTornTail: Bool = false) throws {
        self.path = path
        let reader = try ReplayLogReader(path: path)
        header = reader.header
        slotSize = Int(header.slotSize)
        var cut: UInt64?
        do {
            while try reader.next() != nil {}
        } catch let e as ReplayLogError where e.kind == .tornTail {
            guard truncatingTornTail else {
                throw ReplayLogError(.tornTail, path: path.string, offset: e.offset, entry: e.entry,
                                     "\(e.message); not appending after it (truncate the torn tail to continue)")
            }
            cut = reader.position
        }
        lastStamp = reader.lastStamp
        lastRecord = reader.lastRecord
        entryCount = reader.expectedIndex
        byteCount = reader.position
        do {
            fd = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec, .noFollow])
        } catch let e as Errno {
            throw ReplayLogError.system(e, path: path, doing: "open")
        }
        regionStart = nil
        direct = SafeFiles.reopenDirect(fd)
        out = Self.output(fd, direct, at: byteCount, slotSize: slotSize)
        do {
            try lock()
            let size: Int64
            do { size = try fd.stat().size } catch { throw ReplayLogError.system(error, path: path, doing: "stat") }
            if let cut {
                do { try fd.resize(to: Int64(cut)) } catch let e as Errno {
                    throw ReplayLogError.system(e, path: path, doing: "truncate")
                }
            } else if UInt64(size) != reader.fileSize {
                throw ReplayLogError(.refused, path: path.string, "the log changed while it was being checked")
            }
        } catch {
            try? fd.close()
            try? direct?.close()
            throw error
        }
    }

    deinit {
        if !closed {
            try? flush()
            try? fd.close()
            try? direct?.close()
        }
    }

    /// The output buffer placed at `offset`, big enough for the largest entry twice.
    private static func output(_ fd: FileDescriptor, _ direct: FileDescriptor?, at offset: UInt64, slotSize: Int) -> OutputBuffer {
        let capacity = max(4 << 20, 2 * (ReplayLogFormat.entryHeaderSize + ReplayLogFormat.maxPayloadLength + slotSize))
        return OutputBuffer(file: fd.rawValue, at: offset, direct: direct?.rawValue, capacity: capacity)
    }

    private func lock() throws {
        if flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let e = Errno(rawValue: errno)
            if e == .wouldBlock { throw ReplayLogError(.refused, path: path.string, "another writer has this log open") }
            throw ReplayLogError.system(e, path: path, doing: "lock")
        }
    }

    private func usable() throws {
        if closed { throw ReplayLogError(.refused, path: path.string, "writer is closed") }
        if let failed { throw ReplayLogError(.io, path: path.string, "an earlier write failed (\(failed)); nothing more is appended") }
    }

    /// Appends one entry. The payload is copied; it may be empty.
    public func append(type: ReplayEventType, info: UInt32, domid: UInt16, vcpu: UInt16, cpu: CPUState,
                       payload: UnsafeRawBufferPointer) throws {
        try usable()
        let v = Int(vcpu)
        func refuse(_ s: String) -> ReplayLogError {
            ReplayLogError(.refused, path: path.string, offset: byteCount, entry: entryCount, s)
        }
        guard v < lastStamp.count else { throw refuse("vCPU \(vcpu) is not below the header's vCPU count \(lastStamp.count)") }
        guard domid < ReplayLogFormat.domidLimit else { throw refuse("domain id \(domid) is reserved") }
        guard payload.count <= ReplayLogFormat.maxPayloadLength else {
            throw refuse("payload length \(payload.count) exceeds the 1 MiB bound")
        }
        guard cpu.brctr >= lastStamp[v] else {
            throw refuse("vCPU \(vcpu) branch counter would go backwards: \(cpu.brctr) after \(lastStamp[v])")
        }
        var records = 0
        if let size = type.branchRecordSize {
            guard payload.count % size == 0 else { throw refuse("\(type.name) payload is not a whole number of \(size)-byte records") }
            records = payload.count / size
            guard cpu.brctr >= UInt64(records) else {
                throw refuse("\(records) branch records cannot end at branch counter \(cpu.brctr)")
            }
            if records > 0 && cpu.brctr - UInt64(records) + 1 <= lastRecord[v] {
                throw refuse("vCPU \(vcpu) branch records would overlap the previous batch (ending at \(lastRecord[v]))")
            }
        }
        let total = ReplayLogFormat.slotCount(payloadLength: payload.count, slotSize: slotSize) * slotSize
        do { try out.reserve(total) } catch { throw written(error) }
        let index = entryCount
        // Encoded in place, in the output buffer.
        out.put(count: total) { p in
            p.initializeMemory(as: UInt8.self, repeating: 0, count: total)
            p.storeBytes(of: ReplayLogFormat.entryMarker.littleEndian, toByteOffset: ReplayLogFormat.offMarker, as: UInt32.self)
            p.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: ReplayLogFormat.offLength, as: UInt32.self)
            p.storeBytes(of: type.rawValue.littleEndian, toByteOffset: ReplayLogFormat.offType, as: UInt16.self)
            p.storeBytes(of: domid.littleEndian, toByteOffset: ReplayLogFormat.offDomid, as: UInt16.self)
            p.storeBytes(of: vcpu.littleEndian, toByteOffset: ReplayLogFormat.offVCPU, as: UInt16.self)
            p.storeBytes(of: info.littleEndian, toByteOffset: ReplayLogFormat.offInfo, as: UInt32.self)
            p.storeBytes(of: index.littleEndian, toByteOffset: ReplayLogFormat.offIndex, as: UInt64.self)
            p.storeBytes(of: cpu.ip.littleEndian, toByteOffset: ReplayLogFormat.offIP, as: UInt64.self)
            p.storeBytes(of: cpu.brctr.littleEndian, toByteOffset: ReplayLogFormat.offBrctr, as: UInt64.self)
            p.storeBytes(of: cpu.rcx.littleEndian, toByteOffset: ReplayLogFormat.offRCX, as: UInt64.self)
            p.storeBytes(of: cpu.tsc.littleEndian, toByteOffset: ReplayLogFormat.offTSC, as: UInt64.self)
            p.storeBytes(of: cpu.cr3.littleEndian, toByteOffset: ReplayLogFormat.offCR3, as: UInt64.self)
            if payload.count > 0 {
                (p + ReplayLogFormat.entryHeaderSize).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            }
            let crc = CRC32C.entryChecksum(UnsafeRawPointer(p), byteCount: total)
            p.storeBytes(of: crc.littleEndian, toByteOffset: ReplayLogFormat.offCRC, as: UInt32.self)
        }
        byteCount += UInt64(total)
        entryCount += 1
        lastStamp[v] = cpu.brctr
        if records > 0 { lastRecord[v] = cpu.brctr }
    }

    /// Appends branch records (N × `BranchRecordLayout.size` bytes) as
    /// hw-branches-64 entries of at most `maxRecordsPerEntry` records. `cpu.brctr` is the
    /// counter after the last record; each entry is stamped for its own last record.
    public func appendBranches(vcpu: UInt16, cpu: CPUState, records: UnsafeRawBufferPointer,
                               domid: UInt16 = 0, source: BranchSource = .bts) throws {
        let size = BranchRecordLayout.size
        guard records.count % size == 0 else {
            throw ReplayLogError(.refused, path: path.string, "branch records are \(records.count) bytes, not a multiple of \(size)")
        }
        let n = records.count / size
        guard UInt64(n) <= cpu.brctr else {
            throw ReplayLogError(.refused, path: path.string, "\(n) branch records cannot end at branch counter \(cpu.brctr)")
        }
        var start = 0
        repeat {
            let count = min(ReplayLogWriter.maxRecordsPerEntry, n - start)
            var stamp = cpu
            stamp.brctr = cpu.brctr - UInt64(n - (start + count))
            try append(type: .hardwareBranches64, info: source.rawValue, domid: domid, vcpu: vcpu, cpu: stamp,
                       payload: UnsafeRawBufferPointer(rebasing: records[(start * size)..<((start + count) * size)]))
            start += count
        } while start < n
    }

    /// Writes buffered entries to the file (whole entries only).
    public func flush() throws {
        if failed != nil { return }
        do { try out.flush() } catch { throw written(error) }
    }

    /// Writes buffered entries and makes them durable.
    public func sync() throws {
        try usable()
        try flush()
        if fsync(fd.rawValue) != 0 { throw ReplayLogError.system(Errno(rawValue: errno), path: path, doing: "fsync") }
    }

    /// Flushes, syncs and closes. Further calls are refused.
    public func close() throws {
        guard !closed else { return }
        defer {
            closed = true
            try? fd.close()
            try? direct?.close()
        }
        if failed == nil {
            try flush()
            if fsync(fd.rawValue) != 0 { throw ReplayLogError.system(Errno(rawValue: errno), path: path, doing: "fsync") }
        }
    }

    /// A write error, named, after which nothing more is appended (the file may end in a
    /// torn entry).
    private func written(_ error: Error) -> Error {
        let e = (error as? SystemError)?.errno ?? (error as? Errno) ?? .ioError
        failed = e.description
        return ReplayLogError.system(e, path: path, doing: "write")
    }
}
