import Foundation
import TestProcesses
import XCTest

/// Runs a program (argument vector, no shell) and returns its standard output.
func runTool(_ argv: [String], allowFailure: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let r = try TestProcesses.run(argv, timeout: 3600)
    if r.status != 0 && !allowFailure {
        XCTFail("\(argv.joined(separator: " ")) exited \(r.status): \(r.err)", file: file, line: line)
    }
    return r.out
}

/// The fixtures, compiled once per test run into a temporary directory.
enum Fixtures {
    static let sourceDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let buildDir: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-symbolize-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()
    private static var built: [String: String] = [:]

    /// `-g -O2`, freestanding and static so that -m32 needs no 32-bit libc.
    static func binary(bits: Int) throws -> String {
        let key = "fx\(bits)"
        if let b = built[key] { return b }
        let out = buildDir.appendingPathComponent(key).path
        _ = try runTool(["gcc", "-g", "-O2", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie", "-m\(bits)",
                         sourceDir.appendingPathComponent("unit_a.c").path,
                         sourceDir.appendingPathComponent("unit_b.c").path, "-o", out])
        built[key] = out
        return out
    }

    /// Aliases and same-address symbols (aliases_main.c, aliases.S, aliases_one.S), 64-bit;
    /// with `stripped`, a copy without DWARF (GDB then chooses among minimal symbols only).
    static func aliases(stripped: Bool) throws -> String {
        let key = stripped ? "aliases-nodwarf" : "aliases"
        if let b = built[key] { return b }
        let full = buildDir.appendingPathComponent("aliases").path
        if built["aliases"] == nil {
            _ = try runTool(["gcc", "-g", "-O2", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie", "-m64"]
                            + ["aliases_main.c", "aliases.S", "aliases_one.S"].map { sourceDir.appendingPathComponent($0).path }
                            + ["-o", full])
            built["aliases"] = full
        }
        guard stripped else { return full }
        let out = buildDir.appendingPathComponent(key).path
        _ = try runTool(["objcopy", "--strip-debug", full, out])
        built[key] = out
        return out
    }

    /// A dynamically linked PIE user program (PLT entries), built with extra flags.
    static func userProgram(_ name: String, flags: [String]) throws -> String {
        let out = buildDir.appendingPathComponent(name).path
        _ = try runTool(["gcc", "-g", "-O2"] + flags + [sourceDir.appendingPathComponent("user_main.c").path, "-o", out])
        return out
    }

    /// A copy with the DWARF removed (symbol table kept).
    static func withoutDWARF(bits: Int) throws -> String {
        let out = buildDir.appendingPathComponent("fx\(bits)-nodwarf").path
        _ = try runTool(["objcopy", "--strip-debug", try binary(bits: bits), out])
        return out
    }

    /// A stripped copy with a build-id whose debug file sits in `<root>/.build-id/xx/rest.debug`.
    /// Returns the stripped file and the debug root.
    static func withBuildID(bits: Int) throws -> (file: String, root: String) {
        let dir = buildDir.appendingPathComponent("buildid\(bits)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let full = dir.appendingPathComponent("fx-full").path
        _ = try runTool(["gcc", "-g", "-O2", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie", "-m\(bits)",
                         "-Wl,--build-id=sha1", sourceDir.appendingPathComponent("unit_a.c").path,
                         sourceDir.appendingPathComponent("unit_b.c").path, "-o", full])
        // The build-id as readelf shows it: "    Build ID: <hex>".
        let notes = try runTool(["readelf", "-n", full])
        guard let line = notes.split(separator: "\n").first(where: { $0.contains("Build ID:") }),
              let id = line.split(separator: " ").last.map(String.init), id.count > 2 else {
            throw CocoaError(.fileReadCorruptFile)
        }
        let root = dir.appendingPathComponent("debugroot")
        let idDir = root.appendingPathComponent(".build-id").appendingPathComponent(String(id.prefix(2)))
        try FileManager.default.createDirectory(at: idDir, withIntermediateDirectories: true)
        _ = try runTool(["objcopy", "--only-keep-debug", full, idDir.appendingPathComponent(String(id.dropFirst(2)) + ".debug").path])
        let stripped = dir.appendingPathComponent("fx").path
        _ = try runTool(["objcopy", "--strip-debug", full, stripped])
        return (stripped, root.path)
    }

    /// A stripped copy whose DWARF and symbols live in a separate file named by .gnu_debuglink.
    static func withDebugLink(bits: Int) throws -> String {
        let dir = buildDir.appendingPathComponent("debuglink\(bits)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let debug = dir.appendingPathComponent("fx.debug").path
        let stripped = dir.appendingPathComponent("fx").path
        _ = try runTool(["objcopy", "--only-keep-debug", try binary(bits: bits), debug])
        _ = try runTool(["objcopy", "--strip-all", "--add-gnu-debuglink=\(debug)", try binary(bits: bits), stripped])
        return stripped
    }
}

/// Every instruction of the text sections, from objdump: address and raw bytes.
func objdumpInstructions(_ file: String) throws -> [(address: UInt64, bytes: [UInt8])] {
    var result: [(UInt64, [UInt8])] = []
    for line in try runTool(["objdump", "-d", "-w", file]).split(separator: "\n") {
        // "  401100:\tf3 0f 1e fa          \tendbr64"
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count >= 2, fields[0].hasSuffix(":"),
              let a = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
        let bytes = fields[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
        result.append((a, bytes))
    }
    return result
}

/// What gdb prints between `<` and `>` for `print/a ADDR`, or "" when it prints no name.
/// One gdb run per file, with a generated command file.
func gdbNames(_ file: String, _ addresses: [UInt64]) throws -> [String] {
    let cmds = Fixtures.buildDir.appendingPathComponent("cmds-\(UUID().uuidString)")
    try addresses.map { "print/a 0x\(String($0, radix: 16))" }.joined(separator: "\n").appending("\n")
        .write(to: cmds, atomically: true, encoding: .utf8)
    let out = try runTool(["gdb", "-batch", "-nx", "-x", cmds.path, file])
    let lines = out.split(separator: "\n").filter { $0.hasPrefix("$") }
    return lines.map { line in
        guard let open = line.firstIndex(of: "<"), line.hasSuffix(">") else { return "" }
        return String(line[line.index(after: open)..<line.index(before: line.endIndex)])
    }
}
