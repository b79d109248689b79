import XCTest
import Foundation
import SystemPackage
import ArgumentParser
import XenTT
@testable import TTCommands

/// `tt log` against logs written with the writer: expected lines are built from the values
/// written and the format documented in docs/replay-log-format.md, not from the command's code.
final class LogCommandTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/tt-logcmd-XXXXXX".utf8CString)
        dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    override func tearDownWithError() throws {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            unlink(dir + "/" + name)
        }
        rmdir(dir)
    }

    /// Runs `tt ARGS` in-process with stdout and stderr sent to files; returns (status, out, err).
    private func run(_ args: [String]) throws -> (Int32, String, String) {
        let outPath = dir + "/stdout", errPath = dir + "/stderr"
        let outFD = open(outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let errFD = open(errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let savedOut = dup(1), savedErr = dup(2)
        fflush(stdout)
        dup2(outFD, 1)
        dup2(errFD, 2)
        let status = CommandMain.status(TT.self, arguments: args)
        fflush(stdout)
        fflush(stderr)
        dup2(savedOut, 1)
        dup2(savedErr, 2)
        close(savedOut); close(savedErr); close(outFD); close(errFD)
        let out = try String(contentsOfFile: outPath, encoding: .utf8)
        let err = try String(contentsOfFile: errPath, encoding: .utf8)
        return (status, out, err)
    }

    private struct Written {
        var type: ReplayEventType, name: String, info: UInt32, infoName: String, vcpu: UInt16, brctr: UInt64, length: Int
    }

    /// A small log: branch batches on two vCPUs, a clock read, a landmark, an unknown type.
    private func writeSample(_ path: String) throws -> [Written] {
        let w = try ReplayLogWriter(creating: FilePath(path),
                                    header: ReplayLogHeader(producer: "qemu 7.2.22", guestWordSize: 64, vcpuCount: 2))
        var written = [Written]()
        let records = (0..<30).map { UInt64($0) }  // 10 records of 24 bytes
        try records.withUnsafeBytes { try w.appendBranches(vcpu: 0, cpu: CPUState(ip: 0x1000, brctr: 0x10), records: $0) }
        written.append(Written(type: .hardwareBranches64, name: "hw-branches-64", info: 0, infoName: "bts", vcpu: 0, brctr: 0x10, length: 240))
        let tsc: UInt64 = 12345
        try withUnsafeBytes(of: tsc) { try w.append(type: .clockRead, info: 0, domid: 0, vcpu: 1, cpu: CPUState(brctr: 7), payload: $0) }
        written.append(Written(type: .clockRead, name: "clock-read", info: 0, infoName: "rdtsc", vcpu: 1, brctr: 7, length: 8))
        try records.withUnsafeBytes { try w.appendBranches(vcpu: 1, cpu: CPUState(ip: 0x2000, brctr: 0x1_2345_6789_abcd), records: $0) }
        written.append(Written(type: .hardwareBranches64, name: "hw-branches-64", info: 0, infoName: "bts", vcpu: 1, brctr: 0x1_2345_6789_abcd, length: 240))
        let text = Array("main".utf8)
        try text.withUnsafeBytes { try w.append(type: .landmark, info: 3, domid: 0, vcpu: 0, cpu: CPUState(brctr: 0x20), payload: $0) }
        written.append(Written(type: .landmark, name: "landmark", info: 3, infoName: "#3", vcpu: 0, brctr: 0x20, length: 4))
        try text.withUnsafeBytes { try w.append(type: .init(rawValue: 300), info: 0x2a, domid: 0, vcpu: 0, cpu: CPUState(brctr: 0x20), payload: $0) }
        written.append(Written(type: .init(rawValue: 300), name: "unknown(300)", info: 0x2a, infoName: "0x2a", vcpu: 0, brctr: 0x20, length: 4))
        try w.close()
        return written
    }

    func testDumpLinesFollowTheDocumentedFormat() throws {
        let path = dir + "/ttd.log"
        let written = try writeSample(path)
        let (status, out, err) = try run(["log", "dump", path])
        XCTAssertEqual(status, 0, err)
        let expected = written.map { w -> String in
            let hex = String(w.brctr, radix: 16)
            return String(repeating: "0", count: max(0, 12 - hex.count)) + hex + " \(w.name) \(w.infoName) \(w.length) vcpu=\(w.vcpu)"
        }
        XCTAssertEqual(out.split(separator: "\n").map(String.init), expected)
    }

    func testDumpJSONAndConcise() throws {
        let path = dir + "/ttd.log"
        let written = try writeSample(path)
        let (status, out, _) = try run(["log", "dump", "--json", path])
        XCTAssertEqual(status, 0)
        let objects = try out.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        XCTAssertEqual(objects.count, written.count)
        for (o, w) in zip(objects, written) {
            XCTAssertEqual(o["event"] as? String, w.name)
            XCTAssertEqual(o["infoName"] as? String, w.infoName)
            XCTAssertEqual((o["brctr"] as? NSNumber)?.uint64Value, w.brctr)
            XCTAssertEqual(o["vcpu"] as? Int, Int(w.vcpu))
            XCTAssertEqual(o["length"] as? Int, w.length)
        }
        let (s2, concise, _) = try run(["log", "dump", "--concise", path])
        XCTAssertEqual(s2, 0)
        let fields = concise.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(fields.map { $0.count }, [Int](repeating: 13, count: written.count))
        // offset index type info domid vcpu payloadLength slotCount ip brctr rcx tsc cr3
        XCTAssertEqual(fields.map { $0[1] }, (0..<written.count).map(String.init))
        XCTAssertEqual(fields.map { $0[2] }, written.map { String($0.type.rawValue) })
        XCTAssertEqual(fields.map { $0[9] }, written.map { String($0.brctr) })
        XCTAssertEqual(fields[0][0], "128")
    }

    func testSummaryCountsAndRanges() throws {
        let path = dir + "/ttd.log"
        _ = try writeSample(path)
        let (status, out, _) = try run(["log", "summary", "--json", path])
        XCTAssertEqual(status, 0)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        XCTAssertEqual(o["entries"] as? Int, 5)
        XCTAssertEqual(o["producer"] as? String, "qemu 7.2.22")
        let events = try XCTUnwrap(o["events"] as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: events.map { ($0["event"] as! String, $0) })
        XCTAssertEqual(byName["hw-branches-64"]?["entries"] as? Int, 2)
        XCTAssertEqual(byName["hw-branches-64"]?["records"] as? Int, 20)
        XCTAssertEqual(byName["unknown(300)"]?["entries"] as? Int, 1)
        let vcpus = try XCTUnwrap(o["vcpu"] as? [[String: Any]])
        // vCPU 0: records 7...16 (10 records ending at 0x10), then stamps up to 0x20.
        XCTAssertEqual(vcpus[0]["brctrFirst"] as? Int, 7)
        XCTAssertEqual(vcpus[0]["brctrLast"] as? Int, 0x20)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        XCTAssertEqual(o["bytes"] as? Int, size)
    }

    /// A log in a recording's state directory: the summary lists the recording's checkpoint
    /// index (the lines of tt index --list), unresumable marks included; none without one.
    func testSummaryListsTheRecordingsCheckpointIndex() throws {
        let path = dir + "/trace.ttlog"
        _ = try writeSample(path)
        XCTAssertFalse(try run(["log", "summary", path]).1.contains("checkpoint"))
        try """
            tt-checkpoint-index 1
            spacing 1000000
            checkpoint 1000000 137074 0xe9dc7 0x1dc1d 0xd3ae9f54 137074 1000000 957892 3 1 0
            checkpoint 2000000 330417 0xc3f4e 0x5728 0x71fcf735 330416 2000000 1 3 1 0
            unresumable 2000000

            """.write(toFile: dir + "/index.checkpoints", atomically: false, encoding: .utf8)
        let (status, out, _) = try run(["log", "summary", path])
        XCTAssertEqual(status, 0)
        let name = URL(fileURLWithPath: dir).lastPathComponent
        XCTAssertEqual(Array(out.split(separator: "\n").suffix(3)), [
            "checkpoint index of \(name): 2 checkpoints, spacing 1000000; images 0 MB",
            "checkpoint 1 icount 1000000 brctr 137074 at 0xe9dc7:137074:0x1dc1d registers 0xd3ae9f54",
            "checkpoint 2 icount 2000000 brctr 330417 at 0xc3f4e:330417:0x5728 registers 0x71fcf735 (unresumable: QEMU cannot run on from its snapshot)",
        ])
        let json = try run(["log", "summary", "--json", path])
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.1.utf8)) as? [String: Any])
        let index = try XCTUnwrap(o["checkpointIndex"] as? [String: Any])
        XCTAssertEqual(index["spacing"] as? Int, 1_000_000)
        let checkpoints = try XCTUnwrap(index["checkpoints"] as? [[String: Any]])
        XCTAssertEqual(checkpoints.map { $0["icount"] as? Int }, [1_000_000, 2_000_000])
        XCTAssertEqual(checkpoints.map { $0["brctr"] as? Int }, [137074, 330417])
        XCTAssertEqual(checkpoints.map { $0["ip"] as? String }, ["0xe9dc7", "0xc3f4e"])
        XCTAssertEqual(checkpoints.map { $0["unresumable"] as? Bool }, [false, true])
    }

    func testExitStatuses() throws {
        let path = dir + "/ttd.log"
        _ = try writeSample(path)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(try run(["log", "summary", dir + "/missing.log"]).0, 66)
        // Torn: the last entry cut short.
        try Data(bytes.dropLast(50)).write(to: URL(fileURLWithPath: dir + "/torn.log"))
        let (s1, _, e1) = try run(["log", "dump", dir + "/torn.log"])
        XCTAssertEqual(s1, 65)
        XCTAssertTrue(e1.hasPrefix("tt: \(dir)/torn.log: byte "), e1)
        XCTAssertEqual(e1.filter { $0 == "\n" }.count, 1, "one line: \(e1)")
        // Corrupt: one byte of the second entry; --salvage keeps the others and reports.
        bytes[128 + 384 + 40] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/bad.log"))
        XCTAssertEqual(try run(["log", "summary", dir + "/bad.log"]).0, 65)
        let (s2, out, e2) = try run(["log", "dump", "--salvage", dir + "/bad.log"])
        XCTAssertEqual(s2, 0)
        XCTAssertEqual(out.split(separator: "\n").count, 4)
        XCTAssertTrue(e2.contains("salvaged: skipped bytes"), e2)
        // Not a log at all.
        try Data(repeating: 0x41, count: 500).write(to: URL(fileURLWithPath: dir + "/text.log"))
        let (s3, _, e3) = try run(["log", "dump", dir + "/text.log"])
        XCTAssertEqual(s3, 65)
        XCTAssertTrue(e3.contains("byte 0") && e3.contains("not a tt replay log"), e3)
    }

    func testIndexCommandWritesAValidSidecar() throws {
        let path = dir + "/ttd.log"
        _ = try writeSample(path)
        let (status, out, _) = try run(["log", "index", path])
        XCTAssertEqual(status, 0)
        XCTAssertTrue(out.hasPrefix("\(path).idx: 5 entries"), out)
        let reader = try ReplayLogReader(path: FilePath(path))
        guard case .valid = ReplayLogIndex.load(sidecar: FilePath(path + ".idx"), for: reader) else {
            return XCTFail("tt log index wrote an index its reader refuses")
        }
        try reader.seek(vcpu: 1, toBranchCount: 8)
        XCTAssertEqual(try reader.next()?.cpu.brctr, 0x1_2345_6789_abcd)
        XCTAssertEqual(reader.indexSource, .sidecar)
    }
}
