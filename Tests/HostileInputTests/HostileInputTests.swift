import Foundation
import TestProcesses
import XCTest

/// tt runs as root: hostile paths, files and recordings given to the built `tt` and
/// `bts-dump` must be refused with one line naming the path and the right exit status —
/// and the decoy files around them (a regular file, a symlink, a FIFO, a directory with a
/// file, a character device) must come out of the whole suite with the same type, mode
/// and contents.
final class HostileInputTests: XCTestCase {
    var scratch = ""

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "tt-hostile-\(getpid())-\(UUID().uuidString.prefix(8))"
        XCTAssertEqual(mkdir(scratch, 0o755), 0)
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: TestProcesses.tt), "tt is not built")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: TestProcesses.guest("guest32.elf")), "the bundled guest is not built (make -C guest)")
    }

    override func tearDown() {
        // Only what this test made: the tree is in its own fresh directory.
        try? FileManager.default.removeItem(atPath: scratch)
    }

    func path(_ name: String) -> String { scratch + "/" + name }

    /// Run a built command in the scratch directory; a time-out (a hang on a FIFO) fails.
    @discardableResult
    func run(_ argv: [String], expect: Int32, mentioning: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> TestProcesses.Result {
        let cwd = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(scratch)
        defer { FileManager.default.changeCurrentDirectoryPath(cwd) }
        let r = try TestProcesses.run(argv, timeout: 60)
        let what = argv.map { ($0 as NSString).lastPathComponent }.joined(separator: " ")
        XCTAssertNotEqual(r.status, TestProcesses.timedOut, "hung: \(what)", file: file, line: line)
        XCTAssertEqual(r.status, expect, "\(what): \(r.err)\(r.out)", file: file, line: line)
        for m in mentioning {
            XCTAssertTrue(r.err.contains(m), "\(what): stderr does not mention '\(m)': \(r.err)", file: file, line: line)
        }
        if expect != 0 {
            let lines = r.err.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(what): not one error line: \(r.err)", file: file, line: line)
        }
        return r
    }

    var tt: String { TestProcesses.tt }
    var btsDump: String { TestProcesses.buildDirectory.appendingPathComponent("bts-dump").path }

    /// 11. A line program gone negative (line_base patched to -128) gives no line, never a
    /// trap or "line":-121.
    func testNegativeDWARFLinesAreNoLines() throws {
        let source = path("a.c"), binary = path("a")
        try "int g;\nint f(int x) {\n  g = x;\n  return x + 1;\n}\nint main(void) { return f(2); }\n"
            .write(toFile: source, atomically: false, encoding: .utf8)
        let cc = try TestProcesses.run(["gcc", "-g", "-O0", "-gdwarf-5", "-o", binary, source])
        try XCTSkipUnless(cc.status == 0, "no gcc: \(cc.err)")
        // .debug_line's file offset from the section headers, then its header's line_base
        // byte (DWARF 5: unit_length 4, version 2, address and selector sizes 1+1,
        // header_length 4, min_inst_length, max_ops, default_is_stmt, line_base).
        let sections = try TestProcesses.run(["readelf", "-S", "-W", binary])
        let row = try XCTUnwrap(sections.out.split(separator: "\n").first { $0.contains(" .debug_line ") })
        let fields = row.split(separator: " ")
        let at = try XCTUnwrap(fields.firstIndex(of: ".debug_line"))
        let offset = try XCTUnwrap(Int(fields[at + 3], radix: 16))
        var bytes = try XCTUnwrap(FileManager.default.contents(atPath: binary))
        XCTAssertEqual(bytes[offset + 4], 5, "DWARF 5 line table")
        XCTAssertEqual(Int8(bitPattern: bytes[offset + 15]), -5, "line_base where expected")
        bytes[offset + 15] = 0x80
        try bytes.write(to: URL(fileURLWithPath: binary))
        let nm = try TestProcesses.run(["nm", binary])
        let f = try XCTUnwrap(nm.out.split(separator: "\n").first { $0.hasSuffix(" T f") }?.split(separator: " ").first)
        let address = "0x" + String(UInt64(f, radix: 16)! + 8, radix: 16)
        let text = try run([tt, "symbolize", "--symbols", binary, "--lines", address], expect: 0)
        XCTAssertTrue(text.out.contains("<f+8>") && !text.out.contains(" at "), text.out)
        let json = try run([tt, "symbolize", "--symbols", binary, "--lines", "--json", address], expect: 0)
        XCTAssertFalse(json.out.contains("\"line\":-"), json.out)
    }

    // MARK: decoys

    struct Snapshot: Equatable {
        var type: mode_t, mode: mode_t, uid: uid_t, size: Int64, rdev: UInt64
        var contents: Data?
        var link: String?
        var entries: [String]?
    }

    func snapshot(_ names: [String]) -> [String: Snapshot] {
        var out: [String: Snapshot] = [:]
        for n in names {
            var st = stat()
            guard lstat(path(n), &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            out[n] = Snapshot(type: type, mode: st.st_mode & 0o7777, uid: st.st_uid, size: Int64(st.st_size), rdev: UInt64(st.st_rdev),
                              contents: type == S_IFREG ? FileManager.default.contents(atPath: path(n)) : nil,
                              link: type == S_IFLNK ? try? FileManager.default.destinationOfSymbolicLink(atPath: path(n)) : nil,
                              entries: type == S_IFDIR ? (try? FileManager.default.contentsOfDirectory(atPath: path(n)))?.sorted() : nil)
        }
        return out
    }

    func makeDecoys() -> [String] {
        XCTAssertTrue(FileManager.default.createFile(atPath: path("decoy-file"), contents: Data("precious\n".utf8),
                                                    attributes: [.posixPermissions: 0o644]))
        XCTAssertEqual(symlink("decoy-file", path("decoy-link")), 0)
        XCTAssertEqual(mkfifo(path("decoy-fifo"), 0o644), 0)
        XCTAssertEqual(mkdir(path("decoy-dir"), 0o755), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: path("decoy-dir/keep"), contents: Data("keep\n".utf8)))
        var names = ["decoy-file", "decoy-link", "decoy-fifo", "decoy-dir", "decoy-dir/keep"]
        if geteuid() == 0 {
            XCTAssertEqual(mknod(path("decoy-null"), S_IFCHR | 0o666, makedev(1, 3)), 0)
            names.append("decoy-null")
        }
        return names
    }

    private func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t {
        dev_t((UInt64(major & 0xfff) << 8) | UInt64(minor & 0xff) | (UInt64(minor & ~0xff) << 12) | (UInt64(major & ~0xfff) << 32))
    }

    // MARK: the suite

    func testHostileInputsAreRefusedAndDamageNothing() throws {
        let decoys = makeDecoys()
        let before = snapshot(decoys)
        XCTAssertEqual(before.count, decoys.count)
        let root = geteuid() == 0
        let decoyTargets = ["decoy-file", "decoy-link", "decoy-fifo"] + (root ? ["decoy-null"] : [])
        // As an output, a regular file is what the user asks to replace; everything else is refused.
        let outputTargets = ["decoy-link", "decoy-fifo", "decoy-dir"] + (root ? ["decoy-null"] : [])

        // 1. -s naming something that is not a directory: refused, nothing chmod'ed.
        for d in decoyTargets {
            try run([tt, "record", "-s", "./" + d, "x"], expect: 73, mentioning: [d])
        }
        // 3. -s naming a directory that is not a recording: not recorded into, not removed.
        try run([tt, "record", "-s", "./decoy-dir", "x"], expect: 73, mentioning: ["decoy-dir", "not a tt recording"])
        try run([tt, "record", "-D", "-s", "./decoy-dir", "x"], expect: 66, mentioning: ["decoy-dir"])
        try run([tt, "record", "-D", "-s", ".", "x"], expect: 66)

        // A real recording to aim the rest at.
        try run([tt, "record", "-s", "./d", "d"], expect: 0)
        var st = stat()
        XCTAssertEqual(lstat(path("d/.tt-recording"), &st), 0, "the recording marker")

        // 2, 4. trace-task outputs: a device, FIFO, directory or symlink is never replaced
        // or written through; neither is a symlink at OUT.partial.
        let trace = [tt, "trace-task", "-s", "./d", "--start", "tail_caller#2", "--end", "serial_puts"]
        for d in outputTargets {
            try run(trace + ["-o", "./" + d, "d"], expect: 73, mentioning: [d])
        }
        XCTAssertEqual(symlink("decoy-file", path("o.bts.partial")), 0)
        try run(trace + ["-o", "./o.bts", "d"], expect: 73, mentioning: ["o.bts.partial", "symbolic link"])
        try run(trace + ["-o", "./missing-dir/o.bts", "d"], expect: 73, mentioning: ["missing-dir"])
        // 14. Outputs are 0600, like every state file.
        try run(trace + ["-o", "./t.bts", "d"], expect: 0)
        XCTAssertEqual(lstat(path("t.bts"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        try run(trace + ["d"], expect: 0)
        XCTAssertEqual(lstat(path("d/trace.bts"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)

        // The sidecar index and bts extract -o follow the same rules.
        try run([tt, "log", "generate", "--size", "4K", "--vcpus", "1", "./log"], expect: 0)
        for d in outputTargets {
            try run([tt, "bts", "extract", "-o", "./" + d, "./log"], expect: 73, mentioning: [d])
        }
        XCTAssertEqual(symlink("decoy-file", path("log.idx")), 0)
        try run([tt, "log", "index", "./log"], expect: 73, mentioning: ["log.idx"])

        // 5. A state directory's qemu.argv never chooses the program; foreign or
        // group-writable state directories are refused with the reason.
        let evil = path("evil.sh")
        XCTAssertTrue(FileManager.default.createFile(atPath: evil, contents: Data("#!/bin/sh\ntouch \(path("pwned"))\n".utf8),
                                                    attributes: [.posixPermissions: 0o755]))
        try FileManager.default.copyItem(atPath: path("d"), toPath: path("E"))
        var argv = try String(contentsOfFile: path("E/qemu.argv"), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        argv[0] = Substring(evil)
        try argv.joined(separator: "\n").write(toFile: path("E/qemu.argv"), atomically: false, encoding: .utf8)
        try run([tt, "replay", "-p", "-s", "./E", "d"], expect: 65, mentioning: ["qemu.argv", "refusing to run it"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("pwned")), "tt ran the program qemu.argv named")
        XCTAssertEqual(chmod(path("E"), 0o770), 0)
        try run([tt, "replay", "-p", "-s", "./E", "d"], expect: 66, mentioning: ["E", "writable by its group"])
        if root {
            XCTAssertEqual(chmod(path("E"), 0o700), 0)
            XCTAssertEqual(chown(path("E"), 1, 1), 0)
            try run([tt, "replay", "-p", "-s", "./E", "d"], expect: 66, mentioning: ["owned by uid 1"])
        }
        // 13. Another user on root's recording hears why, not "no recording here".
        if root, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
            try run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", tt, "where", "-s", path("d"), "d"],
                    expect: 66, mentioning: ["owned by uid 0, not by you (uid 65534)"])
        }
        // A symlink to a recording is not followed.
        XCTAssertEqual(symlink("d", path("dlink")), 0)
        try run([tt, "replay", "-p", "-s", "./dlink", "d"], expect: 73, mentioning: ["dlink", "symbolic link"])

        // 6. A recording QEMU failed is incomplete: tt record fails with QEMU's reason,
        // and replays refuse it.
        XCTAssertTrue(FileManager.default.createFile(atPath: path("not-a-kernel"), contents: Data("garbage\n".utf8)))
        try run([tt, "record", "--kernel", "./not-a-kernel", "-s", "./k", "k"], expect: 1, mentioning: ["incomplete", "QEMU"])
        try run([tt, "replay", "-p", "-s", "./k", "k"], expect: 65, mentioning: ["incomplete"])
        try run([tt, "record", "--kernel", "./no-such-kernel", "-s", "./m", "m"], expect: 66, mentioning: ["no-such-kernel"])
        try run([tt, "record", "--kernel", "./decoy-fifo", "-s", "./m2", "m2"], expect: 66, mentioning: ["decoy-fifo", "FIFO"])

        // 12. FIFOs and /proc files as inputs: refused at once, never waited on.
        try run([btsDump, "./decoy-fifo"], expect: 66, mentioning: ["decoy-fifo", "FIFO"])
        try run([tt, "symbolize", "--symbols", "./decoy-fifo", "0x100000"], expect: 66, mentioning: ["decoy-fifo"])
        try run([btsDump, "/proc/self/status"], expect: 66, mentioning: ["/proc/self/status"])
        try run([tt, "log", "dump", "./decoy-fifo"], expect: 66, mentioning: ["decoy-fifo"])

        // 13. Messages that say what is wrong, and no raw control characters.
        let r = try run([tt, "run-until", "-s", "./d", "d", "x\u{1b}[31m\u{7}"], expect: 65, mentioning: ["\\x1b", "\\x07"])
        XCTAssertFalse(r.err.contains("\u{1b}") || r.err.contains("\u{7}"), "raw control characters: \(r.err)")
        try run([tt, "run-until", "-s", "./d", "d", "sym#99999999999999999999"], expect: 65, mentioning: ["larger than"])
        try run([tt, "run-until", "-s", "./d", "d", "caf\u{e9}"], expect: 65, mentioning: ["'\u{e9}'"])

        // 3 again: -D on the recording removes tt's files only, and the directory when empty.
        XCTAssertTrue(FileManager.default.createFile(atPath: path("d/mine"), contents: Data("mine\n".utf8)))
        try run([tt, "record", "-D", "-s", "./d", "d"], expect: 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path("d")), ["mine"])

        XCTAssertEqual(snapshot(decoys), before, "a decoy file changed")
    }
}
