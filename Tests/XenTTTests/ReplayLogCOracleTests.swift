import SystemPackage
import TestProcesses
import TTSystem
import XCTest
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// The replay-log format checked against an independent implementation: the C writer
/// (scripts/bench/gen-input.c) and reader (scripts/bench/extract.c) written from
/// docs/replay-log-format.md for the benchmarks, compiled here with gcc. Expected values
/// are the ones each test chose, never output of tt's own reader or writer.
final class ReplayLogCOracleTests: XCTestCase {
    private var dir: TempDir!

    override func setUp() { dir = TempDir() }
    override func tearDown() { dir = nil }

    /// Compiles one of the C programs of scripts/bench into the test's directory.
    private func compile(_ name: String) throws -> String {
        let source = TestProcesses.packageRoot.appendingPathComponent("scripts/bench/\(name).c").path
        let binary = dir.file(name).string
        let gcc = try TestProcesses.run(["gcc", "-O2", "-msse4.2", "-o", binary, source])
        guard gcc.status == 0 else { throw XCTSkip("gcc cannot build \(source): \(gcc.err)") }
        return binary
    }

    private func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    /// tt's writer → the C reader: every record the test chose, through entries split at
    /// 4096 records and past an entry of another type, comes out in the C program's BTS
    /// file byte for byte; a counter range picks exactly the records the stamp rule gives.
    func testLogWrittenByTTIsReadByTheCReader() throws {
        let extract = try compile("extract")
        let n = 5000
        let lastCounter: UInt64 = 20_000  // record k has counter 15001 + k
        var records: [(from: UInt64, to: UInt64, format: UInt64)] = []
        for k in 0..<UInt64(n) { records.append((0xffff_8000_0000_0000 + 16 * k, 0x40_0000 + 3 * k, 11 * k)) }

        let log = dir.file("tt.log")
        let w = try ReplayLogWriter(creating: log, header: ReplayLogHeader(producer: "oracle", guestWordSize: 64, vcpuCount: 1))
        try [UInt8](repeating: 0xee, count: 40).withUnsafeBytes {
            try w.append(type: .interrupt, info: 3, domid: 0, vcpu: 0, cpu: CPUState(ip: 0x1234, brctr: 100), payload: $0)
        }
        let encoded = records.flatMap { le64($0.from) + le64($0.to) + le64($0.format) }
        try encoded.withUnsafeBytes { try w.appendBranches(vcpu: 0, cpu: CPUState(ip: 0x40_0000, brctr: lastCounter), records: $0) }
        try w.close()

        let all = dir.file("all.bts").string
        let whole = try TestProcesses.run([extract, "0", "0xffffffffffffffff", log.string, all])
        XCTAssertEqual(whole.status, 0, whole.err)
        XCTAssertEqual(try readSmallFile(FilePath(all), limit: 1 << 20), encoded)

        let some = dir.file("some.bts").string
        let range = try TestProcesses.run([extract, "16000", "17000", log.string, some])
        XCTAssertEqual(range.status, 0, range.err)
        // Counters 16000…17000 are records 999…1999.
        XCTAssertEqual(try readSmallFile(FilePath(some), limit: 1 << 20), Array(encoded[(999 * 24)..<(2000 * 24)]))
    }

    /// The C writer → tt's reader: the entries the test asked for (N records in entries of
    /// 4096, stamped with the running count; gen-input's fixed ip 0x1000, domain 1, vCPU 0,
    /// info 0), each record inside the functions
    /// the test listed, and the records equal to the C program's own BTS file.
    func testLogWrittenByTheCWriterIsReadByTT() throws {
        let generate = try compile("gen-input")
        let listing = dir.file("nm.txt")
        // `nm -S` lines: address, size, type, name.
        let functions: [ClosedRange<UInt64>] = [0x401000...0x40103f, 0x402000...0x40201f]
        let nm = "0000000000401000 0000000000000040 T alpha\n0000000000402000 0000000000000020 t beta\n"
        let fd = try FileDescriptor.open(listing, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        _ = try fd.closeAfter { try fd.writeAll(nm.utf8) }
        let n = 10_000
        let log = dir.file("c.log"), bts = dir.file("c.bts")
        let gen = try TestProcesses.run([generate, "\(n)", bts.string, log.string], input: listing.string)
        XCTAssertEqual(gen.status, 0, gen.err)

        let reader = try ReplayLogReader(path: log)
        XCTAssertEqual(reader.header.version, 1)
        XCTAssertEqual(reader.header.slotSize, 128)
        XCTAssertEqual(reader.header.vcpuCount, 1)
        XCTAssertEqual(reader.header.guestWordSize, 64)
        XCTAssertEqual(reader.header.producer, "bench")
        var stamps: [UInt64] = [], indexes: [UInt64] = [], counters: [UInt64] = []
        var decoded: [UInt8] = []
        while let e = try reader.next() {
            XCTAssertEqual(e.type, .hardwareBranches64)
            XCTAssertEqual(e.vcpu, 0)
            XCTAssertEqual(e.domid, 1)  // gen-input stamps its entries domain 1
            XCTAssertEqual(e.cpu.ip, 0x1000)
            XCTAssertEqual(e.info, 0)
            stamps.append(e.cpu.brctr)
            indexes.append(e.index)
            e.forEachBranch { from, to, format, counter in
                XCTAssertTrue(functions.contains { $0.contains(from) }, "from 0x\(String(from, radix: 16))")
                XCTAssertTrue(functions.contains { $0.contains(to) }, "to 0x\(String(to, radix: 16))")
                XCTAssertEqual(format, 0)
                counters.append(counter)
                decoded += le64(from) + le64(to) + le64(format)
            }
        }
        XCTAssertEqual(indexes, [0, 1, 2])
        XCTAssertEqual(stamps, [4096, 8192, 10_000])
        XCTAssertEqual(counters, Array(1...UInt64(n)))
        XCTAssertEqual(decoded, try readSmallFile(bts, limit: 1 << 20))
    }
}
