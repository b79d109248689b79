// Runs the bundled guest under the real QEMU for the oracle tests: build, record, replay with
// the exec log, replay under gdb, and read symbols/instructions with binutils. Programs are
// spawned with argument vectors (no shell).

import Foundation
import TestProcesses
import TTSystem
import XCTest

enum Harness {
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Full path of a program found on PATH.
    static func which(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw Failure(description: "\(name) not found on PATH (scripts/setup installs it)")
    }

    /// Runs a program to completion (killing it after `timeout` seconds).
    @discardableResult
    static func run(_ argv: [String], timeout: TimeInterval = 120) throws -> Output {
        let r = try TestProcesses.run([try which(argv[0])] + argv.dropFirst(), timeout: timeout)
        if r.status == TestProcesses.timedOut {
            throw Failure(description: "\(argv.joined(separator: " ")) did not finish in \(Int(timeout)) s")
        }
        return Output(status: r.status, stdout: r.out, stderr: r.err)
    }

    /// Starts a program in the background, its output discarded.
    static func start(_ argv: [String]) throws -> RunningProcess {
        try Subprocess.spawn(Subprocess.Configuration([try which(argv[0])] + argv.dropFirst()))
    }

    /// A private scratch directory for this test process (re-created if removed).
    static var scratch: URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("tt-execlog-tests-\(getpid())", isDirectory: true)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        return dir
    }

    private static var counter = 0
    static func tempFile(_ stem: String) throws -> URL {
        counter += 1
        let url = scratch.appendingPathComponent("\(stem)-\(counter)")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        return url
    }

    /// Builds the bundled guests (quick when up to date).
    static func buildGuests() throws {
        let r = try run(["make", "-s", "-C", repoRoot.appendingPathComponent("guest").path])
        guard r.status == 0 else { throw Failure(description: "make -C guest failed: \(r.stderr)") }
    }
}

/// One of the two bundled guests.
struct Guest {
    let name: String
    let qemu: String
    let kernel: String      // what -kernel loads
    let symbols: String     // the ELF with symbols and DWARF
    let pcRegister: String  // gdb remote register number of the instruction pointer, in hex

    static let guest32 = Guest(name: "guest32", qemu: "qemu-system-i386",
                               kernel: path("guest32.elf"), symbols: path("guest32.elf"), pcRegister: "8")
    static let guest64 = Guest(name: "guest64", qemu: "qemu-system-x86_64",
                               kernel: path("guest64.mb.elf"), symbols: path("guest64.elf"), pcRegister: "10")

    private static func path(_ file: String) -> String {
        Harness.repoRoot.appendingPathComponent("guest/build/\(file)").path
    }

    /// The guest's image occupies [1 MiB, 2 MiB): the exec log is filtered to it, so it starts at
    /// `_start` and leaves out the firmware.
    static let imageRange = "0x100000..0x1fffff"

    /// The QEMU exit status of a successful run: isa-debug-exit value 0x10 → (0x10 << 1) | 1.
    static let successStatus: Int32 = 33

    /// The common QEMU argument vector; record and replay must use the same one.
    func qemuArguments(serial: String, rr: String, rrfile: String, extra: [String] = []) -> [String] {
        [qemu, "-display", "none", "-no-reboot", "-net", "none", "-monitor", "none",
         "-serial", "file:\(serial)",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-kernel", kernel,
         "-icount", "shift=auto,rr=\(rr),rrfile=\(rrfile)"] + extra
    }
}

/// Symbols and instruction boundaries from binutils (nm, objdump): independent of tt.
struct Disassembly {
    var symbols: [String: UInt64] = [:]
    /// Start address → the objdump text of the instruction ("call   100390 <fib>").
    var instructions: [UInt64: String] = [:]

    init(elf: String, objdumpExtra: [String] = []) throws {
        let nm = try Harness.run(["nm", elf])
        for line in nm.stdout.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, let a = UInt64(f[0], radix: 16) { symbols[String(f[2])] = a }
        }
        let od = try Harness.run(["objdump", "-d", "--no-show-raw-insn", "-w"] + objdumpExtra + [elf])
        for line in od.stdout.split(separator: "\n") {
            // "  100350:\tsub    $0x1c,%esp"
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let head = parts[0].trimmingCharacters(in: .whitespaces)
            guard head.hasSuffix(":"), let a = UInt64(head.dropLast(), radix: 16) else { continue }
            instructions[a] = parts[1].trimmingCharacters(in: .whitespaces)
        }
    }

    func address(_ symbol: String) throws -> UInt64 {
        guard let a = symbols[symbol] else { throw Harness.Failure(description: "no symbol \(symbol)") }
        return a
    }

    /// Addresses of the instructions in [symbol, next symbol) whose text starts with `mnemonic`.
    func instructions(in symbol: String, mnemonic: String) throws -> [UInt64] {
        let start = try address(symbol)
        let end = symbols.values.filter { $0 > start }.min() ?? UInt64.max
        return instructions.filter { $0.key >= start && $0.key < end && $0.value.hasPrefix(mnemonic) }
            .map(\.key).sorted()
    }
}
