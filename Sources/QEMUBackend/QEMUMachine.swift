import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Problems specific to QEMU recordings and replays.
public struct QEMUError: Error, CustomStringConvertible, ExitStatusProviding {
    public let message: String
    public let exitStatus: Int32
    public init(_ message: String, status: Int32 = ExitStatus.failure) {
        self.message = message
        self.exitStatus = status
    }
    public var description: String { message }
}

/// What to record, and the QEMU command lines made from it.
///
/// Record and replay command lines must match exactly (a mismatch makes replay hang
/// silently), so the recording's argument vector is kept in `qemu.argv` and the replay's
/// is derived from it by replacing only host-side plumbing: `rr=record` → `rr=replay`,
/// the snapshot image (a per-replay copy), the serial log file (or the interactive
/// console's socket chardev, which becomes a file chardev) and the plugin's control
/// file; then `-S` and the QMP and gdb sockets are appended. QEMU runs with the state
/// directory as its working directory, so every state file is named relatively.
public struct QEMUMachine: Sendable {
    public enum Arch: String, Sendable, CaseIterable { case i386, x86_64 }

    public var kernel: FilePath
    public var initrd: FilePath?
    public var append: String?
    public var memoryMB: Int
    public var arch: Arch
    /// The serial port is interactive (`tt record -c`): a unix socket QEMU listens on and
    /// tt record connects to (QEMU waits for it before the guest starts, so no output is
    /// lost), declared as a chardev so that record/replay logs its input. Otherwise the
    /// serial port is an output-only file.
    public var interactiveConsole: Bool

    public init(kernel: FilePath, initrd: FilePath? = nil, append: String? = nil, memoryMB: Int = 64, arch: Arch = .i386,
                interactiveConsole: Bool = false) {
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.memoryMB = memoryMB
        self.arch = arch
        self.interactiveConsole = interactiveConsole
    }

    /// The interactive console's chardev in the recording. The replay declares the same
    /// chardev (id and order must match: record/replay numbers the registered chardevs)
    /// as a file: a replay takes the input from the recording, never from the backend,
    /// and writes the output to `console.replay` as without -c.
    static let recordConsoleChardev = "socket,id=console,path=\(StateFile.consoleSocket),server=on,wait=on"
    static let replayConsoleChardev = "file,id=console,path=\(StateFile.replayConsole)"

    public static let binary = "qemu-system-x86_64"
    /// How long tt waits for an answer from QEMU's QMP or gdb socket while the vCPU is
    /// stopped (a running vCPU is waited for by polling, without a limit).
    static let answerTimeoutMS: Int32 = 30_000

    /// The first line of `qemu-system-x86_64 --version` of the QEMU on PATH, e.g.
    /// "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".
    public static func installedVersion() throws -> String {
        let result = try Subprocess.run(.init([binary, "--version"],
                                               output: .collect(limit: 1 << 16), error: .sameAsOutput,
                                               deathSignal: SIGKILL), timeoutMS: 10_000)
        let text = result.standardOutputText
        guard result.status.isSuccess, let first = text.split(separator: "\n").first.map(String.init)?.trimmingWhitespace, !first.isEmpty else {
            throw QEMUError("\(binary) --version failed (\(result.status)): \(text.prefix(200))", status: ExitStatus.unavailable)
        }
        return first
    }

    /// Refuse a replay on another QEMU than the one that recorded (recordings made before
    /// the version was stored are taken as they are).
    public static func requireRecordingQEMU(_ state: StateDirectory) throws {
        guard let recorded = state.readIfPresent(StateFile.qemuVersion)?.trimmingWhitespace, !recorded.isEmpty else { return }
        let here = try installedVersion()
        guard here == recorded else {
            throw QEMUError("this recording was made with \(recorded), but \(binary) on PATH is \(here): replay it with the QEMU that recorded it",
                            status: ExitStatus.unavailable)
        }
    }

    /// The recording's argument vector. The kernel and initrd are copies inside the
    /// state directory, so a rebuilt guest cannot break an old recording.
    public func recordArguments(plugin: FilePath) -> [String] {
        var a = [Self.binary, "-machine", "pc", "-cpu", "qemu64", "-smp", "1", "-m", String(memoryMB),
                 "-kernel", StateFile.kernel]
        if initrd != nil { a += ["-initrd", StateFile.initrd] }
        if let append { a += ["-append", append] }
        a += ["-display", "none", "-no-reboot", "-net", "none", "-monitor", "none"]
        a += interactiveConsole ? ["-chardev", Self.recordConsoleChardev, "-serial", "chardev:console"]
                                : ["-serial", "file:" + StateFile.recordConsole]
        a += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
              "-icount", "shift=auto,rr=record,rrfile=\(StateFile.recording),rrsnapshot=init",
              "-drive", "file=\(StateFile.snapshot),if=none,id=snapdisk",
              "-global", "apic-common.vapic=off",
              "-plugin", plugin.string + ",shm=" + StateFile.recordShm]
        return a
    }

    /// The machine a stored `qemu.argv` describes — accepted only when the vector is
    /// exactly what `recordArguments` makes for it, so that the state directory never
    /// chooses the program that runs (as root), its options or what QEMU loads: the
    /// program is `binary` from PATH and the plugin is tt's own, whatever the file says.
    public init(validatingRecorded argv: [String], file: FilePath) throws {
        func value(after flag: String) -> String? {
            guard let i = argv.firstIndex(of: flag), i + 1 < argv.count else { return nil }
            return argv[i + 1]
        }
        guard let m = value(after: "-m"), let mb = Int(m), (1...65536).contains(mb) else {
            throw QEMUError("\(file): not a tt recording's command line (no valid -m); refusing to run it", status: ExitStatus.dataError)
        }
        self.init(kernel: FilePath(StateFile.kernel), initrd: argv.contains("-initrd") ? FilePath(StateFile.initrd) : nil,
                  append: value(after: "-append"), memoryMB: mb, interactiveConsole: argv.contains("-chardev"))
        let recordedPlugin = value(after: "-plugin") ?? ""
        let expected = recordArguments(plugin: FilePath(String(recordedPlugin.dropLast(",shm=\(StateFile.recordShm)".count))))
        guard recordedPlugin.hasSuffix(",shm=" + StateFile.recordShm), argv == expected else {
            let at = (0..<min(argv.count, expected.count)).first { argv[$0] != expected[$0] } ?? min(argv.count, expected.count)
            let found = at < argv.count ? "'\(argv[at])'" : "nothing"
            let wanted = at < expected.count ? "'\(expected[at])'" : "nothing"
            throw QEMUError("\(file): line \(at + 1) is \(found) where tt records \(wanted); not a tt recording's command line, refusing to run it",
                            status: ExitStatus.dataError)
        }
    }

    /// The replay's argument vector, derived from the recording's.
    public static func replayArguments(fromRecord record: [String]) throws -> [String] {
        var out: [String] = []
        var replaced = 0
        for arg in record {
            var a = arg
            if a.hasPrefix("shift=") && a.contains("rr=record") {
                a = a.replacing("rr=record", with: "rr=replay", maxReplacements: 1); replaced += 1
            } else if a == "file=\(StateFile.snapshot),if=none,id=snapdisk" {
                a = "file=\(StateFile.replaySnapshot),if=none,id=snapdisk"; replaced += 1
            } else if a == "file:" + StateFile.recordConsole {
                a = "file:" + StateFile.replayConsole; replaced += 1
            } else if a == recordConsoleChardev {
                a = replayConsoleChardev; replaced += 1
            } else if a.hasSuffix(",shm=" + StateFile.recordShm) {
                a = String(a.dropLast(StateFile.recordShm.count)) + StateFile.replayShm; replaced += 1
            }
            out.append(a)
        }
        guard replaced == 4 else {
            throw QEMUError("\(StateFile.argv) is not a tt recording's command line (found \(replaced) of 4 parts to adapt)",
                            status: ExitStatus.dataError)
        }
        return out + ["-S", "-qmp", "unix:\(StateFile.qmp),server=on,wait=off", "-gdb", "unix:\(StateFile.gdb),server=on,wait=off"]
    }
}

/// Finding tt's own files: the plugin library and the bundled guest kernels.
public enum TTInstallation {
    /// The plugin: $TT_PLUGIN, else libttplugin.so next to the executable (the build
    /// directory), else /usr/lib/tt/libttplugin.so.
    public static func plugin() throws -> FilePath {
        var candidates: [String] = []
        if let e = getenv("TT_PLUGIN") { candidates.append(String(cString: e)) }
        if let dir = TTConfiguration.executableDirectory() { candidates.append(dir.appending("libttplugin.so").string) }
        candidates.append("/usr/lib/tt/libttplugin.so")
        for c in candidates where access(c, R_OK) == 0 { return FilePath(c) }
        throw QEMUError("the QEMU plugin libttplugin.so was not found (looked at \(candidates.joined(separator: ", "))); run scripts/setup or set TT_PLUGIN",
                        status: ExitStatus.unavailable)
    }

    /// The bundled guest: (kernel for -kernel, file with its symbols).
    public static func bundledGuest(_ arch: QEMUMachine.Arch) throws -> (kernel: FilePath, symbols: FilePath) {
        var dirs: [String] = []
        if let e = getenv("TT_GUEST_DIR") { dirs.append(String(cString: e)) }
        for root in TTConfiguration.packageRootCandidates() { dirs.append(root.appending("guest/build").string) }
        dirs.append("/usr/share/tt/guest")
        let (kernel, symbols) = arch == .i386 ? ("guest32.elf", "guest32.elf") : ("guest64.mb.elf", "guest64.elf")
        for d in dirs where access(d + "/" + kernel, R_OK) == 0 {
            return (FilePath(d).appending(kernel), FilePath(d).appending(symbols))
        }
        throw QEMUError("the bundled guest \(kernel) was not found (looked in \(dirs.joined(separator: ", "))); run scripts/setup or give --kernel",
                        status: ExitStatus.unavailable)
    }
}

/// Copy a file (mode 0600), e.g. the kernel into the state directory or the snapshot image.
func copyFile(from: FilePath, to: FilePath) throws {
    // A kernel named on the command line must be a regular file (not a FIFO, a directory, /proc).
    let src = try SafeFiles.openForReading(from).fd
    defer { try? src.close() }
    let dst = try SafeFiles.createTemporary(to)
    defer { try? dst.close() }
    var buf = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = try SystemError.naming(from, "read") { try buf.withUnsafeMutableBytes { try src.read(into: $0) } }
        if n == 0 { break }
        _ = try SystemError.naming(to, "write") { try dst.writeAll(buf[0..<n]) }
    }
}

/// The last non-empty line of a log file, for error messages.
func lastLine(of path: FilePath) -> String? {
    guard let text = try? StateDirectory.readSmallFileTail(path) else { return nil }
    return text.split(separator: "\n").last.map(String.init)
}

extension StateDirectory {
    static func readSmallFileTail(_ p: FilePath) throws -> String {
        let fd = try FileDescriptor.open(p, .readOnly, options: [.closeOnExec])
        return try fd.closeAfter {
            let size = try fd.seek(offset: 0, from: .end)
            _ = try fd.seek(offset: max(0, size - 4096), from: .start)
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = try buf.withUnsafeMutableBytes { try fd.read(into: $0) }
            return String(decoding: buf[0..<n], as: UTF8.self)
        }
    }
}
