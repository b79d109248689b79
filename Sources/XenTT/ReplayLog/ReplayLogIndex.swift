import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Branch counter → byte offset, per vCPU: what makes `ReplayLogReader.seek` logarithmic.
/// Kept in a sidecar file `LOG.idx` (layout in docs/replay-log-format.md) or built in memory.
public struct ReplayLogIndex: Equatable, Sendable {
    public struct Point: Equatable, Sendable {
        public var brctr: UInt64
        public var offset: UInt64
        public var index: UInt64
    }

    public static let magic: [UInt8] = [0x89, 0x54, 0x54, 0x49, 0x44, 0x58, 0x0D, 0x0A]
    public static let version: UInt16 = 1
    public static let defaultSpacing: UInt64 = 65536
    static let headerSize = 64

    public var spacing: UInt64
    /// Per vCPU, sorted by offset (and so by brctr).
    public var points: [[Point]]
    public var coveredLength: UInt64
    public var entryCount: UInt64
    public var lastEntryOffset: UInt64
    public var lastEntryCRC: UInt32
    public var logHeaderCRC: UInt32

    public var pointCount: Int { points.reduce(0) { $0 + $1.count } }

    /// `LOG.idx` next to `LOG`.
    public static func sidecarPath(for log: FilePath) -> FilePath { FilePath(log.string + ".idx") }

    /// Indexes the whole log at `path` (checking every entry as a reader does).
    public static func build(logAt path: FilePath, salvage: Bool = false, spacing: UInt64 = defaultSpacing) throws -> ReplayLogIndex {
        let reader = try ReplayLogReader(path: path, salvage: salvage)
        var index = empty(for: reader, spacing: spacing)
        try index.scan(reader)
        return index
    }

    /// Indexes the log `other` reads, through a second reader over the same bytes.
    static func build(reusing other: ReplayLogReader, salvage: Bool) throws -> ReplayLogIndex {
        let reader = try ReplayLogReader(bytes: other.bytes, path: other.path, salvage: salvage)
        var index = empty(for: reader, spacing: defaultSpacing)
        try index.scan(reader)
        return index
    }

    static func empty(for reader: ReplayLogReader, spacing: UInt64) -> ReplayLogIndex {
        ReplayLogIndex(spacing: max(spacing, UInt64(reader.header.slotSize)),
                       points: [[Point]](repeating: [], count: Int(reader.header.vcpuCount)),
                       coveredLength: reader.dataStart, entryCount: 0, lastEntryOffset: 0, lastEntryCRC: 0,
                       logHeaderCRC: reader.headerCRC)
    }

    /// Adds the entries appended since this index was built.
    mutating func extend(reusing other: ReplayLogReader, salvage: Bool) throws {
        let reader = try ReplayLogReader(bytes: other.bytes, path: other.path, salvage: salvage)
        reader.position(at: coveredLength, index: entryCount)
        try scan(reader)
    }

    /// Reads entries from the reader's position to the end, recording points.
    private mutating func scan(_ reader: ReplayLogReader) throws {
        var lastPoint = points.map { $0.last?.offset }
        while let e = try reader.next() {
            let v = Int(e.vcpu)
            if let last = lastPoint[v], e.offset - last < spacing {
            } else {
                points[v].append(Point(brctr: e.cpu.brctr, offset: e.offset, index: e.index))
                lastPoint[v] = e.offset
            }
            lastEntryOffset = e.offset
            lastEntryCRC = e.checksum
            entryCount = e.index + 1
            coveredLength = e.offset + UInt64(e.slotCount) * UInt64(reader.header.slotSize)
        }
    }

    // MARK: The sidecar file

    public func encoded() -> [UInt8] {
        let vcpus = points.count
        var b = [UInt8](repeating: 0, count: ReplayLogIndex.headerSize + 8 * vcpus + 24 * pointCount)
        b.withUnsafeMutableBytes { p in
            p.copyBytes(from: ReplayLogIndex.magic)
            p.storeBytes(of: ReplayLogIndex.version.littleEndian, toByteOffset: 8, as: UInt16.self)
            p.storeBytes(of: UInt32(vcpus).littleEndian, toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: spacing.littleEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: coveredLength.littleEndian, toByteOffset: 24, as: UInt64.self)
            p.storeBytes(of: entryCount.littleEndian, toByteOffset: 32, as: UInt64.self)
            p.storeBytes(of: lastEntryOffset.littleEndian, toByteOffset: 40, as: UInt64.self)
            p.storeBytes(of: lastEntryCRC.littleEndian, toByteOffset: 48, as: UInt32.self)
            p.storeBytes(of: logHeaderCRC.littleEndian, toByteOffset: 52, as: UInt32.self)
            var at = ReplayLogIndex.headerSize
            for list in points {
                p.storeBytes(of: UInt64(list.count).littleEndian, toByteOffset: at, as: UInt64.self)
                at += 8
            }
            for list in points {
                for pt in list {
                    p.storeBytes(of: pt.brctr.littleEndian, toByteOffset: at, as: UInt64.self)
                    p.storeBytes(of: pt.offset.littleEndian, toByteOffset: at + 8, as: UInt64.self)
                    p.storeBytes(of: pt.index.littleEndian, toByteOffset: at + 16, as: UInt64.self)
                    at += 24
                }
            }
            let crc = ReplayLogIndex.checksum(UnsafeRawBufferPointer(p))
            p.storeBytes(of: crc.littleEndian, toByteOffset: 60, as: UInt32.self)
        }
        return b
    }

    private static func checksum(_ p: UnsafeRawBufferPointer) -> UInt32 {
        CRC32C.update(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<60])), UnsafeRawBufferPointer(rebasing: p[64...]))
    }

    /// Decodes sidecar bytes; the error says why they are corrupt.
    public static func decode(_ p: UnsafeRawBufferPointer, slotSize: UInt64) -> Result<ReplayLogIndex, IndexProblem> {
        func corrupt(_ s: String) -> Result<ReplayLogIndex, IndexProblem> { .failure(IndexProblem(s)) }
        guard p.count >= headerSize else { return corrupt("\(p.count) bytes, shorter than its header") }
        guard magic.elementsEqual(p[0..<8]) else { return corrupt("bad magic") }
        let version = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        guard version == ReplayLogIndex.version else { return corrupt("version \(version) is not \(ReplayLogIndex.version)") }
        let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 60, as: UInt32.self))
        guard stored == checksum(p) else { return corrupt("checksum mismatch") }
        let vcpus = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        guard vcpus <= ReplayLogFormat.maxVCPUs, p.count >= headerSize + 8 * vcpus else { return corrupt("vCPU count \(vcpus) does not fit") }
        var index = ReplayLogIndex(
            spacing: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
            points: [],
            coveredLength: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)),
            entryCount: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 32, as: UInt64.self)),
            lastEntryOffset: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 40, as: UInt64.self)),
            lastEntryCRC: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 48, as: UInt32.self)),
            logHeaderCRC: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 52, as: UInt32.self)))
        var counts = [Int]()
        var total = 0
        for v in 0..<vcpus {
            let n = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: headerSize + 8 * v, as: UInt64.self))
            guard n <= UInt64(p.count / 24) else { return corrupt("vCPU \(v) point count \(n) does not fit") }
            counts.append(Int(n))
            total += Int(n)
        }
        guard p.count == headerSize + 8 * vcpus + 24 * total else {
            return corrupt("\(p.count) bytes where its counts need \(headerSize + 8 * vcpus + 24 * total)")
        }
        guard index.spacing >= slotSize, index.spacing <= 1 << 40 else { return corrupt("spacing \(index.spacing) is not in slot size...2^40") }
        var at = headerSize + 8 * vcpus
        for v in 0..<vcpus {
            var list = [Point]()
            list.reserveCapacity(counts[v])
            for _ in 0..<counts[v] {
                let pt = Point(brctr: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt64.self)),
                               offset: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)),
                               index: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at + 16, as: UInt64.self)))
                at += 24
                if pt.offset % slotSize != 0 || pt.offset < slotSize || pt.offset >= index.coveredLength || pt.index >= index.entryCount {
                    return corrupt("vCPU \(v) point at offset \(pt.offset) lies outside the indexed entries")
                }
                if let last = list.last, pt.offset <= last.offset || pt.brctr < last.brctr || pt.index <= last.index {
                    return corrupt("vCPU \(v) points are not in order")
                }
                list.append(pt)
            }
            index.points.append(list)
        }
        return .success(index)
    }

    public struct IndexProblem: Error, CustomStringConvertible {
        public let description: String
        init(_ s: String) { description = s }
    }

    public enum Status {
        case missing
        case valid(ReplayLogIndex)
        case corrupt(String)
        case stale(String)
    }

    /// Loads the sidecar at `sidecar` and checks it against the log `reader` reads.
    /// Leaves the reader's position wherever it was.
    public static func load(sidecar: FilePath, for reader: ReplayLogReader) -> Status {
        let data: [UInt8]
        do {
            guard let d = try readSmallFile(sidecar, limit: 1 << 30) else { return .missing }
            data = d
        } catch {
            return .corrupt("cannot read: \(error)")
        }
        let slot = UInt64(reader.header.slotSize)
        let decoded = data.withUnsafeBytes { decode($0, slotSize: slot) }
        let index: ReplayLogIndex
        switch decoded {
        case .failure(let p): return .corrupt(p.description)
        case .success(let i): index = i
        }
        if index.points.count != Int(reader.header.vcpuCount) {
            return .stale("indexes \(index.points.count) vCPUs, the log has \(reader.header.vcpuCount)")
        }
        if index.logHeaderCRC != reader.headerCRC { return .stale("it belongs to another log (header checksum differs)") }
        if index.coveredLength > reader.fileSize {
            return .stale("it covers \(index.coveredLength) bytes, the log has \(reader.fileSize)")
        }
        if index.entryCount == 0 {
            return index.coveredLength == reader.dataStart ? .valid(index) : .stale("empty index with a non-empty extent")
        }
        do {
            guard index.lastEntryOffset >= reader.dataStart, index.lastEntryOffset < index.coveredLength,
                  case .entry(let e) = try reader.decode(at: index.lastEntryOffset),
                  e.checksum == index.lastEntryCRC, e.index == index.entryCount - 1,
                  e.offset + UInt64(e.slotCount) * slot == index.coveredLength else {
                return .stale("its last indexed entry is not in the log any more")
            }
        } catch {
            return .stale("cannot check its last entry: \(error)")
        }
        return .valid(index)
    }

    /// Writes the sidecar atomically: a temporary file in the same directory, fsync, rename.
    public func write(to path: FilePath) throws {
        let tmp = FilePath(path.string + ".tmp.\(getpid())")
        let bytes = encoded()
        var created = false
        do {
            // Never through a symlink planted at the temporary's name, never over a non-file.
            try SafeFiles.requireReplaceable(path)
            let fd = try SafeFiles.createTemporary(tmp)
            created = true
            try fd.closeAfter {
                _ = try fd.writeAll(bytes)
                guard fsync(fd.rawValue) == 0 else { throw Errno(rawValue: errno) }
            }
            try SafeFiles.commit(tmp, to: path)
        } catch let e as Errno {
            if created { _ = unlink(tmp.string) }
            throw ReplayLogError(.io, path: path.string, "writing the index: \(e.description)")
        } catch let e as SystemError {
            if created { _ = unlink(tmp.string) }
            throw ReplayLogError(.cannotCreate, path: path.string, "writing the index: \(e)")
        }
    }
}
