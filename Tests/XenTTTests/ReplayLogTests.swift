import XCTest
import CCRC32C
import SystemPackage
import TTSystem
@testable import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// What a test wrote: the oracle the reader's answers are compared with.
struct ModelEntry: Equatable {
    var type: ReplayEventType
    var info: UInt32
    var domid: UInt16
    var vcpu: UInt16
    var cpu: CPUState
    var payload: [UInt8]
}

/// A private temporary directory, removed with everything in it when the test ends.
final class TempDir {
    let path: String
    init() {
        var template = Array("/tmp/tt-log-test-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }
    func file(_ name: String) -> FilePath { FilePath(path + "/" + name) }
    deinit {
        if let d = opendir(path) {
            while let e = readdir(d) {
                let name = withUnsafePointer(to: e.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(d)
        }
        rmdir(path)
    }
}

func readAll(_ path: FilePath) throws -> [UInt8] { try readSmallFile(path, limit: 1 << 30) ?? [] }

func writeAll(_ bytes: [UInt8], to path: FilePath) throws {
    let fd = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
    try fd.closeAfter { _ = try fd.writeAll(bytes) }
}

/// Random entries that obey the log's rules (per-vCPU counters only grow; branch batches
/// never overlap), from a seeded generator so failures reproduce.
func randomModel(count: Int, vcpus: Int, seed: UInt64, maxPayload: Int = 300) -> [ModelEntry] {
    var rng = SplitMix64(seed: seed)
    var counter = [UInt64](repeating: 0, count: vcpus)
    let types: [ReplayEventType] = ReplayEventType.known + [ReplayEventType(rawValue: 999), ReplayEventType(rawValue: 0)]
    var model = [ModelEntry]()
    for _ in 0..<count {
        let v = Int(rng.next() % UInt64(vcpus))
        let type = types[Int(rng.next() % UInt64(types.count))]
        var payload: [UInt8]
        if let size = type.branchRecordSize {
            let n = Int(rng.next() % 20)
            payload = (0..<(n * size)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            counter[v] += UInt64(n) + rng.next() % 3
        } else {
            let len = rng.next() % 4 == 0 ? Int(rng.next() % UInt64(maxPayload)) : Int(rng.next() % 16)
            payload = (0..<len).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            counter[v] += rng.next() % 3
        }
        let cpu = CPUState(ip: rng.next(), brctr: counter[v], rcx: rng.next(), tsc: rng.next(), cr3: rng.next() % 2 == 0 ? 0 : rng.next())
        model.append(ModelEntry(type: type, info: UInt32(truncatingIfNeeded: rng.next() % 40), domid: UInt16(rng.next() % 5),
                                vcpu: UInt16(v), cpu: cpu, payload: payload))
    }
    return model
}

func writeLog(_ model: [ModelEntry], to path: FilePath, vcpus: Int, slotSize: UInt32 = 128) throws {
    let w = try ReplayLogWriter(creating: path, header: ReplayLogHeader(producer: "test 1.0", guestWordSize: 64,
                                                                        vcpuCount: UInt16(vcpus), slotSize: slotSize))
    for m in model {
        try m.payload.withUnsafeBytes {
            try w.append(type: m.type, info: m.info, domid: m.domid, vcpu: m.vcpu, cpu: m.cpu, payload: $0)
        }
    }
    try w.close()
}

func model(of e: ReplayLogEntry) -> ModelEntry {
    ModelEntry(type: e.type, info: e.info, domid: e.domid, vcpu: e.vcpu, cpu: e.cpu, payload: Array(e.payload))
}

func readModel(_ r: ReplayLogReader) throws -> [(UInt64, ModelEntry)] {
    var out = [(UInt64, ModelEntry)]()
    while let e = try r.next() { out.append((e.index, model(of: e))) }
    return out
}

final class ReplayLogRoundTripTests: XCTestCase {
    func testRandomEntriesReadBackIdentical() throws {
        let dir = TempDir()
        for (seed, slot) in [(1 as UInt64, 128 as UInt32), (2, 256), (3, 4096), (4, 128)] {
            let vcpus = Int(seed % 3) + 1
            let m = randomModel(count: 400, vcpus: vcpus, seed: seed, maxPayload: seed == 4 ? 70000 : 300)
            let path = dir.file("rt\(seed).log")
            try writeLog(m, to: path, vcpus: vcpus, slotSize: slot)
            let r = try ReplayLogReader(path: path)
            XCTAssertEqual(r.header, ReplayLogHeader(producer: "test 1.0", guestWordSize: 64, vcpuCount: UInt16(vcpus), slotSize: slot))
            var offset = UInt64(slot)
            var i: UInt64 = 0
            while let e = try r.next() {
                XCTAssertEqual(model(of: e), m[Int(i)], "entry \(i)")
                XCTAssertEqual(e.index, i)
                XCTAssertEqual(e.offset, offset)
                XCTAssertEqual(e.offset % UInt64(slot), 0)
                offset += UInt64(e.slotCount) * UInt64(slot)
                i += 1
            }
            XCTAssertEqual(i, UInt64(m.count))
            XCTAssertEqual(offset, r.fileSize)
        }
    }

    func testFiltersByTypeAndVCPU() throws {
        let dir = TempDir()
        let m = randomModel(count: 300, vcpus: 3, seed: 11)
        let path = dir.file("f.log")
        try writeLog(m, to: path, vcpus: 3)
        let wanted: Set<ReplayEventType> = [.hardwareBranches64, .interrupt]
        var got = [ModelEntry]()
        try ReplayLogReader(path: path).forEach(types: wanted, vcpu: 1) { got.append(model(of: $0)) }
        XCTAssertEqual(got, m.filter { $0.vcpu == 1 && wanted.contains($0.type) })
        XCTAssertFalse(got.isEmpty)
    }

    func testBranchStampRuleAndSplitting() throws {
        let dir = TempDir()
        let path = dir.file("b.log")
        let w = try ReplayLogWriter(creating: path, header: ReplayLogHeader(producer: "xen", guestWordSize: 64, vcpuCount: 1))
        let n = 10000
        var records = [UInt64]()
        for k in 0..<n { records += [UInt64(0x1000 + k), UInt64(0x2000 + k), UInt64(k * 7)] }
        let last: UInt64 = 50_000
        try records.withUnsafeBytes { try w.appendBranches(vcpu: 0, cpu: CPUState(ip: 0xabc, brctr: last), records: $0) }
        try w.close()
        let r = try ReplayLogReader(path: path)
        var k = 0
        var entries = 0
        while let e = try r.next() {
            entries += 1
            XCTAssertEqual(e.type, .hardwareBranches64)
            XCTAssertEqual(e.cpu.ip, 0xabc)
            XCTAssertLessThanOrEqual(e.branchRecordCount, ReplayLogWriter.maxRecordsPerEntry)
            e.forEachBranch { from, to, format, brctr in
                XCTAssertEqual(from, UInt64(0x1000 + k))
                XCTAssertEqual(to, UInt64(0x2000 + k))
                XCTAssertEqual(format, UInt64(k * 7))
                // Record k of n ends the batch at `last`: counter last − (n − 1 − k).
                XCTAssertEqual(brctr, last - UInt64(n - 1 - k))
                k += 1
            }
        }
        XCTAssertEqual(k, n)
        XCTAssertEqual(entries, 3)
    }

    func test32BitRecords() throws {
        let dir = TempDir()
        let path = dir.file("b32.log")
        let w = try ReplayLogWriter(creating: path, header: ReplayLogHeader(producer: "xen", guestWordSize: 32, vcpuCount: 1))
        let recs: [UInt32] = [0xc010_0000, 0xc020_0000, 1, 0xffff_fff0, 0x10, 2]
        try recs.withUnsafeBytes {
            try w.append(type: .hardwareBranches32, info: 0, domid: 1, vcpu: 0, cpu: CPUState(brctr: 9), payload: $0)
        }
        try w.close()
        let reader = try ReplayLogReader(path: path)  // entries are valid while their reader lives
        let e = try XCTUnwrap(try reader.next())
        var got = [[UInt64]]()
        e.forEachBranch { got.append([$0, $1, $2, $3]) }
        XCTAssertEqual(got, [[0xc010_0000, 0xc020_0000, 1, 8], [0xffff_fff0, 0x10, 2, 9]])
    }

    func testWriterRefusesRuleBreaks() throws {
        let dir = TempDir()
        let path = dir.file("w.log")
        let w = try ReplayLogWriter(creating: path, header: ReplayLogHeader(producer: "q", guestWordSize: 64, vcpuCount: 2))
        let none = UnsafeRawBufferPointer(start: nil, count: 0)
        try w.append(type: .interrupt, info: 32, domid: 0, vcpu: 0, cpu: CPUState(brctr: 100), payload: none)
        XCTAssertThrowsError(try w.append(type: .interrupt, info: 32, domid: 0, vcpu: 0, cpu: CPUState(brctr: 99), payload: none))
        XCTAssertThrowsError(try w.append(type: .interrupt, info: 32, domid: 0, vcpu: 2, cpu: CPUState(brctr: 200), payload: none))
        XCTAssertThrowsError(try w.append(type: .interrupt, info: 32, domid: 0x7ff0, vcpu: 0, cpu: CPUState(brctr: 200), payload: none))
        let big = [UInt8](repeating: 0, count: ReplayLogFormat.maxPayloadLength + 1)
        XCTAssertThrowsError(try big.withUnsafeBytes { try w.append(type: .consoleOutput, info: 0, domid: 0, vcpu: 0, cpu: CPUState(brctr: 200), payload: $0) })
        let two = [UInt8](repeating: 1, count: 48)
        try two.withUnsafeBytes { try w.appendBranches(vcpu: 1, cpu: CPUState(brctr: 10), records: $0) }
        // Records 9 and 10 are taken; a batch ending at 10 again would repeat them.
        XCTAssertThrowsError(try two.withUnsafeBytes { try w.appendBranches(vcpu: 1, cpu: CPUState(brctr: 10), records: $0) })
        XCTAssertThrowsError(try two.withUnsafeBytes { try w.appendBranches(vcpu: 1, cpu: CPUState(brctr: 1), records: $0) })
        try w.close()
        XCTAssertEqual(try readModel(ReplayLogReader(path: path)).count, 2)
        XCTAssertThrowsError(try ReplayLogWriter(creating: path, header: ReplayLogHeader(producer: "q", guestWordSize: 64, vcpuCount: 2))) {
            XCTAssertTrue("\($0)".contains("refusing to overwrite"), "\($0)")
        }
    }

    func testAppendContinuesAndTornTailIsRefusedUnlessTruncated() throws {
        let dir = TempDir()
        let m = randomModel(count: 60, vcpus: 2, seed: 5)
        let path = dir.file("a.log")
        try writeLog(Array(m[0..<30]), to: path, vcpus: 2)
        do {
            let w = try ReplayLogWriter(appendingTo: path)
            for e in m[30..<60] {
                try e.payload.withUnsafeBytes { try w.append(type: e.type, info: e.info, domid: e.domid, vcpu: e.vcpu, cpu: e.cpu, payload: $0) }
            }
            try w.close()
        }
        XCTAssertEqual(try readModel(ReplayLogReader(path: path)).map { $0.1 }, m)
        // Tear the last entry: 100 bytes short.
        let whole = try readAll(path)
        try writeAll(Array(whole.dropLast(100)), to: path)
        XCTAssertThrowsError(try ReplayLogReader(path: path).forEach { _ in }) {
            XCTAssertEqual(($0 as? ReplayLogError)?.kind, .tornTail, "\($0)")
            XCTAssertEqual(($0 as? ReplayLogError)?.exitStatus, 65)
        }
        XCTAssertThrowsError(try ReplayLogWriter(appendingTo: path)) { XCTAssertTrue("\($0)".contains("torn"), "\($0)") }
        let w = try ReplayLogWriter(appendingTo: path, truncatingTornTail: true)
        try w.close()
        let back = try readModel(ReplayLogReader(path: path))
        XCTAssertEqual(back.map { $0.1 }, Array(m.dropLast()))
    }

    func testErrorsNameFileOffsetAndEntry() throws {
        let dir = TempDir()
        let path = dir.file("ttd.log")
        try writeLog(randomModel(count: 10, vcpus: 1, seed: 9), to: path, vcpus: 1)
        var bytes = try readAll(path)
        // Entry 2's payload length field → 9999999, then recompute nothing: the bound check fires first.
        var off = 128
        for _ in 0..<2 {
            let len = Int(bytes[off + 4]) | Int(bytes[off + 5]) << 8 | Int(bytes[off + 6]) << 16
            off += ReplayLogFormat.slotCount(payloadLength: len, slotSize: 128) * 128
        }
        let v: UInt32 = 9_999_999
        withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { bytes[off + 4 + i] = $0[i] } }
        try writeAll(bytes, to: path)
        XCTAssertThrowsError(try ReplayLogReader(path: path).forEach { _ in }) {
            XCTAssertEqual("\($0)", "\(path.string): byte \(off), entry 2: payload length 9999999 exceeds the 1 MiB bound")
        }
        XCTAssertThrowsError(try ReplayLogReader(path: dir.file("missing.log"))) {
            XCTAssertEqual(($0 as? ReplayLogError)?.exitStatus, 66)
        }
    }

    func testUnknownTypesAreSkippedNotErrors() throws {
        XCTAssertEqual(ReplayEventType(rawValue: 999).name, "unknown(999)")
        XCTAssertEqual(ReplayEventType.hardwareBranches64.name, "hw-branches-64")
        XCTAssertEqual(ReplayEventType(name: "unknown(999)"), ReplayEventType(rawValue: 999))
        let dir = TempDir()
        let path = dir.file("u.log")
        let m = [ModelEntry(type: .init(rawValue: 4000), info: 1, domid: 0, vcpu: 0, cpu: CPUState(brctr: 1), payload: [1, 2, 3]),
                 ModelEntry(type: .landmark, info: 2, domid: 0, vcpu: 0, cpu: CPUState(brctr: 2), payload: [])]
        try writeLog(m, to: path, vcpus: 1)
        XCTAssertEqual(try readModel(ReplayLogReader(path: path)).map { $0.1 }, m)
    }
}

final class ReplayLogDamageTests: XCTestCase {
    /// A log small enough to damage at every byte, with every event type.
    private func sample() throws -> (bytes: [UInt8], model: [ModelEntry], boundaries: [Int]) {
        let dir = TempDir()
        let m = randomModel(count: 40, vcpus: 2, seed: 42, maxPayload: 200)
        let path = dir.file("s.log")
        try writeLog(m, to: path, vcpus: 2)
        let bytes = try readAll(path)
        var boundaries = [128]
        let r = try ReplayLogReader(path: path)
        while let e = try r.next() { boundaries.append(Int(e.offset) + e.slotCount * 128) }
        return (bytes, m, boundaries)
    }

    func testEveryTruncationIsAnErrorOrAnExactPrefix() throws {
        let (bytes, m, boundaries) = try sample()
        for length in 0..<bytes.count {
            let cut = Array(bytes[0..<length])
            // Strict: an error, unless the cut falls on an entry boundary (a shorter valid log).
            do {
                let r = try cut.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "cut") }
                let got = try readModel(r)
                XCTAssertTrue(boundaries.contains(length), "truncation at \(length) read without error")
                XCTAssertEqual(got.map { $0.1 }, Array(m[0..<got.count]))
            } catch let e as ReplayLogError {
                XCTAssertFalse(boundaries.contains(length), "boundary \(length): \(e)")
                XCTAssertTrue("\(e)".hasPrefix("cut: byte "), "\(e)")
            }
            // Salvage: an exact prefix, and a report whenever bytes were cut mid-entry.
            if length >= 128 {
                let r = try cut.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "cut", salvage: true) }
                let got = try readModel(r)
                XCTAssertEqual(got.map { $0.1 }, Array(m[0..<got.count]), "salvage at \(length)")
                XCTAssertEqual(r.salvageReport.isEmpty, boundaries.contains(length), "report at \(length)")
                if let b = boundaries.last(where: { $0 <= length }) {
                    XCTAssertEqual(got.count, boundaries.firstIndex(of: b)!, "intact entries kept at \(length)")
                }
            }
        }
    }

    func testEverySingleByteCorruptionIsCaughtAndSalvageKeepsEveryIntactEntry() throws {
        let (bytes, m, boundaries) = try sample()
        var rng = SplitMix64(seed: 99)
        for at in 0..<bytes.count {
            for flip in [UInt8(1) << UInt8(at % 8), UInt8(truncatingIfNeeded: rng.next() | 1)] {
                var bad = bytes
                bad[at] ^= flip
                // Strict: every byte is under a checksum, so every corruption is an error.
                do {
                    let r = try bad.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "bad") }
                    _ = try readModel(r)
                    XCTFail("corruption at byte \(at) (^\(flip)) went unnoticed")
                } catch let e as ReplayLogError {
                    XCTAssertEqual(e.exitStatus, 65)
                    XCTAssertTrue("\(e)".hasPrefix("bad: byte "), "\(e)")
                }
                // Salvage: the damaged entry is skipped and reported; every other entry is kept.
                guard at >= 128 else { continue } // a damaged file header is not salvageable
                let damaged = boundaries.lastIndex(where: { $0 <= at })!
                let r = try bad.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "bad", salvage: true) }
                let got = try readModel(r)
                var expected = m.enumerated().map { (UInt64($0.offset), $0.element) }
                expected.remove(at: damaged)
                XCTAssertTrue(got.elementsEqual(expected, by: { $0.0 == $1.0 && $0.1 == $1.1 }), "salvage of byte \(at) ^\(flip)")
                XCTAssertFalse(r.salvageReport.isEmpty)
                XCTAssertEqual(r.salvageReport.skips.first?.start, UInt64(boundaries[damaged]))
            }
        }
    }

    /// A checksum-valid entry whose index is wrong (a jump forward) is the one skipped:
    /// the intact entries after it, which go on from the expected index, are all kept.
    func testSalvageSkipsAWrongIndexNotTheEntriesAfterIt() throws {
        let (bytes, m, boundaries) = try sample()
        for damaged in [3, 20, m.count - 5] {
            var bad = bytes
            let at = boundaries[damaged]
            let total = boundaries[damaged + 1] - at
            bad.withUnsafeMutableBytes { p in
                p.storeBytes(of: UInt64(damaged + 1000).littleEndian, toByteOffset: at + 24, as: UInt64.self)
                let head = tt_crc32c_update(0, p.baseAddress! + at, 20)
                p.storeBytes(of: tt_crc32c_update(head, p.baseAddress! + at + 24, total - 24).littleEndian,
                             toByteOffset: at + 20, as: UInt32.self)
            }
            let r = try bad.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "idx", salvage: true) }
            let got = try readModel(r)
            var expected = m.enumerated().map { (UInt64($0.offset), $0.element) }
            expected.remove(at: damaged)
            XCTAssertTrue(got.elementsEqual(expected, by: { $0.0 == $1.0 && $0.1 == $1.1 }),
                          "entry \(damaged) with index \(damaged + 1000): kept \(got.map { $0.0 })")
            XCTAssertEqual(r.salvageReport.skips.map { $0.start }, [UInt64(at)])
        }
    }

    func testHeaderDamageIsNamed() throws {
        let (bytes, _, _) = try sample()
        for at in 0..<128 {
            var bad = bytes
            bad[at] ^= 0x40
            XCTAssertThrowsError(try bad.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "h", salvage: true) }) {
                XCTAssertTrue("\($0)".hasPrefix("h: byte "), "\($0)")
            }
        }
    }

    /// A header whose checksum is right but whose fields break a rule: the error names the
    /// field's offset (docs/replay-log-format.md: slot size 16, word size 20, vCPU count 22).
    func testHeaderFieldProblemsNameTheFieldOffset() throws {
        let cases: [(ReplayLogHeader, String)] = [
            (ReplayLogHeader(producer: "t", guestWordSize: 64, vcpuCount: 1, slotSize: 100), "h: byte 16: slot size 100"),
            (ReplayLogHeader(producer: "t", guestWordSize: 16, vcpuCount: 1), "h: byte 20: guest word size 16"),
            (ReplayLogHeader(producer: "t", guestWordSize: 64, vcpuCount: 0), "h: byte 22: vCPU count 0"),
            (ReplayLogHeader(producer: "t\u{7}", guestWordSize: 64, vcpuCount: 1), "h: byte 32: producer name contains a control character"),
        ]
        for (header, expected) in cases {
            let bytes = header.encoded() + [UInt8](repeating: 0, count: 128)
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "h") }) {
                XCTAssertTrue("\($0)".hasPrefix(expected), "\($0)")
            }
        }
    }

    /// A deterministic stand-in for the fuzzer: random multi-byte mutations, insertions and
    /// deletions; the reader must never crash and a salvaging reader may only return entries
    /// that were written, at their index, in order.
    func testRandomMutationsNeverYieldWrongEntries() throws {
        let (bytes, m, _) = try sample()
        var rng = SplitMix64(seed: 2024)
        for round in 0..<1500 {
            var bad = bytes
            for _ in 0..<(1 + Int(rng.next() % 8)) {
                let at = 128 + Int(rng.next() % UInt64(bad.count - 128))
                switch rng.next() % 4 {
                case 0: bad[at] = UInt8(truncatingIfNeeded: rng.next())
                case 1: bad.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                case 2: bad.remove(at: at)
                default:
                    let n = min(Int(rng.next() % 300), bad.count - at)
                    bad.replaceSubrange(at..<(at + n), with: [UInt8](repeating: 0, count: n))
                }
            }
            for salvage in [false, true] {
                do {
                    let r = try bad.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "m", salvage: salvage) }
                    var last: Int64 = -1
                    while let e = try r.next() {
                        XCTAssertLessThan(Int(e.index), m.count, "round \(round)")
                        guard Int(e.index) < m.count else { break }
                        XCTAssertEqual(model(of: e), m[Int(e.index)], "round \(round)")
                        XCTAssertGreaterThan(Int64(e.index), last)
                        last = Int64(e.index)
                    }
                } catch is ReplayLogError {
                    XCTAssertFalse(salvage, "salvage threw in round \(round)")
                }
            }
        }
    }
}

final class ReplayLogIndexTests: XCTestCase {
    /// First entry of `vcpu` with brctr ≥ `count`, by a plain scan of the model (the oracle).
    private func oracle(_ m: [ModelEntry], vcpu: UInt16, count: UInt64) -> Int? {
        m.firstIndex { $0.vcpu == vcpu && $0.cpu.brctr >= count }
    }

    private func checkSeeks(_ r: ReplayLogReader, _ m: [ModelEntry], vcpus: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = SplitMix64(seed: seed)
        let maxCounter = m.map { $0.cpu.brctr }.max()! + 5
        for _ in 0..<300 {
            let v = UInt16(rng.next() % UInt64(vcpus))
            let target = rng.next() % maxCounter
            try r.seek(vcpu: v, toBranchCount: target)
            let e = try r.next()
            let want = oracle(m, vcpu: v, count: target)
            XCTAssertEqual(e.map { Int($0.index) }, want, "seek vCPU \(v) to \(target)", file: file, line: line)
            if let e, let want {
                XCTAssertEqual(model(of: e), m[want], file: file, line: line)
                // Reading goes on in file order.
                if want + 1 < m.count { XCTAssertEqual(try r.next().map { model(of: $0) }, m[want + 1], file: file, line: line) }
            }
        }
    }

    func testSeekInMemoryAndThroughSidecar() throws {
        let dir = TempDir()
        let vcpus = 3
        let m = randomModel(count: 3000, vcpus: vcpus, seed: 77, maxPayload: 2000)
        let path = dir.file("i.log")
        try writeLog(m, to: path, vcpus: vcpus)
        let r = try ReplayLogReader(path: path)
        try checkSeeks(r, m, vcpus: vcpus, seed: 1)
        XCTAssertEqual(r.indexSource, .builtInMemory)

        // A sidecar with a small spacing, so that seeks jump between many points.
        let index = try ReplayLogIndex.build(logAt: path, spacing: 1024)
        XCTAssertGreaterThan(index.pointCount, 50)
        try index.write(to: ReplayLogIndex.sidecarPath(for: path))
        let r2 = try ReplayLogReader(path: path)
        try checkSeeks(r2, m, vcpus: vcpus, seed: 2)
        XCTAssertEqual(r2.indexSource, .sidecar)
        XCTAssertNil(r2.sidecarProblem)
        // The sidecar round-trips.
        let bytes = try readAll(ReplayLogIndex.sidecarPath(for: path))
        XCTAssertEqual(try bytes.withUnsafeBytes { try ReplayLogIndex.decode($0, slotSize: 128).get() }, index)
    }

    func testAppendedLogExtendsTheSidecar() throws {
        let dir = TempDir()
        let m = randomModel(count: 800, vcpus: 2, seed: 78)
        let path = dir.file("g.log")
        try writeLog(Array(m[0..<500]), to: path, vcpus: 2)
        try ReplayLogIndex.build(logAt: path, spacing: 512).write(to: ReplayLogIndex.sidecarPath(for: path))
        let w = try ReplayLogWriter(appendingTo: path)
        for e in m[500...] {
            try e.payload.withUnsafeBytes { try w.append(type: e.type, info: e.info, domid: e.domid, vcpu: e.vcpu, cpu: e.cpu, payload: $0) }
        }
        try w.close()
        let r = try ReplayLogReader(path: path)
        try checkSeeks(r, m, vcpus: 2, seed: 3)
        XCTAssertEqual(r.indexSource, .sidecarExtended)
    }

    func testStaleAndCorruptSidecarsAreDetectedAndIgnored() throws {
        let dir = TempDir()
        let m = randomModel(count: 600, vcpus: 2, seed: 79)
        let path = dir.file("s.log")
        try writeLog(m, to: path, vcpus: 2)
        let sidecar = ReplayLogIndex.sidecarPath(for: path)
        try ReplayLogIndex.build(logAt: path, spacing: 512).write(to: sidecar)
        let good = try readAll(sidecar)

        // Corrupt: every single-byte flip of the sidecar is noticed.
        for at in stride(from: 0, to: good.count, by: 7) {
            var bad = good
            bad[at] ^= 0x10
            try writeAll(bad, to: sidecar)
            let r = try ReplayLogReader(path: path)
            guard case .corrupt = ReplayLogIndex.load(sidecar: sidecar, for: r) else {
                return XCTFail("flip at \(at) not detected")
            }
        }
        var bad = good
        bad[200] ^= 0x10
        try writeAll(bad, to: sidecar)
        let r1 = try ReplayLogReader(path: path)
        try checkSeeks(r1, m, vcpus: 2, seed: 4)
        XCTAssertEqual(r1.indexSource, .builtInMemory)
        XCTAssertTrue(r1.sidecarProblem?.hasPrefix("corrupt") ?? false)

        // Stale: another log of the same shape under the same name.
        try writeAll(good, to: sidecar)
        unlink(path.string)
        let m2 = randomModel(count: 600, vcpus: 2, seed: 80)
        try writeLog(m2, to: path, vcpus: 2)
        let r2 = try ReplayLogReader(path: path)
        guard case .stale = ReplayLogIndex.load(sidecar: sidecar, for: r2) else { return XCTFail("stale index taken as valid") }
        try checkSeeks(r2, m2, vcpus: 2, seed: 5)
        XCTAssertTrue(r2.sidecarProblem?.hasPrefix("stale") ?? false)

        // An index of a prefix stays valid; a log cut shorter than the index covers makes it stale.
        let whole = try readAll(path)
        var ends = [Int]()
        let scan = try ReplayLogReader(path: path)
        while let e = try scan.next() { ends.append(Int(e.offset) + e.slotCount * 128) }
        try writeAll(Array(whole[0..<ends[ends.count / 2]]), to: path)
        try ReplayLogIndex.build(logAt: path, spacing: 512).write(to: sidecar)
        try writeAll(whole, to: path)
        let r3 = try ReplayLogReader(path: path)
        guard case .valid = ReplayLogIndex.load(sidecar: sidecar, for: r3) else { return XCTFail("prefix index refused") }
        try writeAll(Array(whole[0..<ends[ends.count / 4]]), to: path)
        let r4 = try ReplayLogReader(path: path)
        guard case .stale = ReplayLogIndex.load(sidecar: sidecar, for: r4) else { return XCTFail("index beyond the log taken as valid") }
    }
}

/// Inputs the fuzzer found (fuzz/ReplayLogFuzz), kept as regression tests.
final class ReplayLogFuzzRegressionTests: XCTestCase {
    /// A sequence number of 2^64 − 1 once overflowed `index + 1` while indexing for a seek.
    func testHugeEntryIndexIsRefusedNotOverflowed() throws {
        let dir = TempDir()
        let path = dir.file("h.log")
        try writeLog(randomModel(count: 5, vcpus: 1, seed: 3), to: path, vcpus: 1)
        var bytes = try readAll(path)
        bytes.withUnsafeMutableBytes { p in
            p.storeBytes(of: UInt64.max, toByteOffset: 128 + 24, as: UInt64.self)
            // Re-checksum so the index itself is what the reader meets.
            let length = Int(p.loadUnaligned(fromByteOffset: 128 + 4, as: UInt32.self))
            let total = ReplayLogFormat.slotCount(payloadLength: length, slotSize: 128) * 128
            let crc = CRC32C.entryChecksum(UnsafeRawPointer(p.baseAddress! + 128), byteCount: total)
            p.storeBytes(of: crc.littleEndian, toByteOffset: 128 + 20, as: UInt32.self)
        }
        let strict = try bytes.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "h") }
        XCTAssertThrowsError(try strict.next()) { XCTAssertTrue("\($0)".contains("not below 2^63"), "\($0)") }
        let salvage = try bytes.withUnsafeBytes { try ReplayLogReader(bytes: $0, name: "h", salvage: true) }
        XCTAssertEqual(try readModel(salvage).map { $0.0 }, [1, 2, 3, 4])
        try salvage.seek(vcpu: 0, toBranchCount: 0)
        XCTAssertEqual(try salvage.next()?.index, 1)
    }
}
