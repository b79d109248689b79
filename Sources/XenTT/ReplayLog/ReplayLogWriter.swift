import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Appends entries to a replay log. Append only: the header is written once at creation,
/// entries are buffered whole and written with O_APPEND, nothing earlier is rewritten.
/// The writer enforces the reader's rules, so it cannot produce a log the reader refuses.
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
    private let slotSize: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var used = 0
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
            fd = try FileDescriptor.open(path, .writeOnly, options: [.create, .exclusiveCreate, .append, .closeOnExec],
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
        buffer = .allocate(byteCount: ReplayLogWriter.bufferSize(slotSize), alignment: 16)
        do {
            try lock()
            var first = header.encoded()
            first += [UInt8](repeating: 0, count: slotSize - first.count)
            try first.withUnsafeBytes { try writeAll($0) }
            byteCount = UInt64(slotSize)
        } catch {
            try? fd.close()
            buffer.deallocate()
            throw error
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
            fd = try FileDescriptor.open(path, .writeOnly, options: [.append, .closeOnExec, .noFollow])
        } catch let e as Errno {
            throw ReplayLogError.system(e, path: path, doing: "open")
        }
        buffer = .allocate(byteCount: ReplayLogWriter.bufferSize(slotSize), alignment: 16)
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
            buffer.deallocate()
            throw error
        }
    }

    deinit {
        if !closed {
            try? flush()
            try? fd.close()
        }
        buffer.deallocate()
    }

    private static func bufferSize(_ slot: Int) -> Int {
        max(1 << 20, ReplayLogFormat.entryHeaderSize + ReplayLogFormat.maxPayloadLength + slot) + (1 << 20)
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
        if used + total > buffer.count { try flush() }
        let p = buffer.baseAddress! + used
        p.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        p.storeBytes(of: ReplayLogFormat.entryMarker.littleEndian, toByteOffset: ReplayLogFormat.offMarker, as: UInt32.self)
        p.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: ReplayLogFormat.offLength, as: UInt32.self)
        p.storeBytes(of: type.rawValue.littleEndian, toByteOffset: ReplayLogFormat.offType, as: UInt16.self)
        p.storeBytes(of: domid.littleEndian, toByteOffset: ReplayLogFormat.offDomid, as: UInt16.self)
        p.storeBytes(of: vcpu.littleEndian, toByteOffset: ReplayLogFormat.offVCPU, as: UInt16.self)
        p.storeBytes(of: info.littleEndian, toByteOffset: ReplayLogFormat.offInfo, as: UInt32.self)
        p.storeBytes(of: entryCount.littleEndian, toByteOffset: ReplayLogFormat.offIndex, as: UInt64.self)
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
        used += total
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
        guard used > 0 else { return }
        defer { used = 0 }
        try writeAll(UnsafeRawBufferPointer(start: buffer.baseAddress, count: used))
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
        }
        if failed == nil {
            try flush()
            if fsync(fd.rawValue) != 0 { throw ReplayLogError.system(Errno(rawValue: errno), path: path, doing: "fsync") }
        }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            _ = try fd.writeAll(bytes)
        } catch let e as Errno {
            failed = e.description
            throw ReplayLogError.system(e, path: path, doing: "write")
        }
    }
}
