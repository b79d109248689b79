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
/// silently), so the recording's argument vector is kept in `qemu.argv`; a replay runs
/// only after that vector is found to be exactly what `recordArguments` makes for the
/// machine it describes, and its own vector is the same one with only host-side plumbing
/// renamed: `rr=record` → `rr=replay`, the snapshot image (a per-replay copy), the disks'
/// overlays (fresh per replay), the serial log file (the interactive console's socket
/// chardev becomes a file chardev) and the plugin's control file; then `-S` and the gdb
/// socket are appended. QEMU runs with the state directory as
/// its working directory, so every state file is named relatively.
public struct QEMUMachine: Sendable {
    public enum Arch: String, Sendable, CaseIterable { case i386, x86_64 }

    public var kernel: FilePath
    public var initrd: FilePath?
    public var append: String?
    public var memoryMB: Int
    public var arch: Arch
    /// QEMU's CPU model (`-cpu`), `tt record --cpu`.
    public var cpu: String
    /// How many `--disk` images the guest has: disk N is `StateFile.diskOverlay(N)` through
    /// QEMU's block-replay driver (the images themselves are in `StateFile.disks`).
    public var diskCount: Int
    /// `tt record --qemu-arg`: arguments for what tt does not model, each passing
    /// `refusal(ofQEMUArgument:)`; they come after tt's own, before the plugin.
    public var extraArguments: [String]
    /// The serial port is interactive (`tt record -c`): a unix socket QEMU listens on and
    /// tt record connects to (QEMU waits for it before the guest starts, so no output is
    /// lost), declared as a chardev so that record/replay logs its input. Otherwise the
    /// serial port is an output-only file.
    public var interactiveConsole: Bool
    /// `tt record --net user[,OPTION=VALUE…]`: QEMU's user-mode network on a virtio-net NIC,
    /// its traffic recorded and replayed through QEMU's `filter-replay`; nil: no network.
    public var network: String?
    /// QEMU's machine (`-machine`): the PC without its HPET. QEMU 10's HPET model does not
    /// save when a timer was last armed (it re-arms no sooner than 1 µs after that): once a
    /// guest has programmed the HPET (Linux does), a snapshot loaded in replay re-arms a
    /// timer at a time already passed, which needs a clock event the replay log does not
    /// have there, and the vCPU never runs again (docs/sessions.md, Unresumable snapshots).
    /// Recordings made before with the HPET (`pc`) are replayed as they were made.
    public var machineType = QEMUMachine.defaultMachineType

    public static let defaultCPU = "qemu64"
    public static let defaultMachineType = "pc,hpet=off"
    static let acceptedMachineTypes = [defaultMachineType, "pc"]

    public init(kernel: FilePath, initrd: FilePath? = nil, append: String? = nil, memoryMB: Int = 64, arch: Arch = .i386,
                cpu: String = QEMUMachine.defaultCPU, diskCount: Int = 0, extraArguments: [String] = [],
                interactiveConsole: Bool = false, network: String? = nil) {
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.memoryMB = memoryMB
        self.arch = arch
        self.cpu = cpu
        self.diskCount = diskCount
        self.extraArguments = extraArguments
        self.interactiveConsole = interactiveConsole
        self.network = network
    }

    /// The interactive console's chardev in the recording. The replay declares the same
    /// chardev (id and order must match: record/replay numbers the registered chardevs)
    /// as a file: a replay takes the input from the recording, never from the backend,
    /// and writes the output to `console.replay` as without -c.
    static let recordConsoleChardev = "socket,id=console,path=\(StateFile.consoleSocket),server=on,wait=on"
    static let replayConsoleChardev = "file,id=console,path=\(StateFile.replayConsole)"

    public static let binary = "qemu-system-x86_64"
    /// How long tt waits for an answer from QEMU's gdb socket while the vCPU is
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

    // MARK: VM options

    /// QEMU options `--qemu-arg` must not give (matched as `-opt`, `--opt` and `-opt=value`),
    /// with the reason: they would break record/replay, take over what tt controls, or have
    /// an option of tt's own. Everything else is passed through.
    static let refusedOptions: [String: String] = {
        var table: [String: String] = [:]
        func refuse(_ names: [String], _ why: String) { for n in names { table[n] = why } }
        refuse(["icount"], "tt sets -icount itself: it is the record/replay")
        refuse(["plugin"], "tt loads its own plugin")
        refuse(["gdb", "s"], "tt owns the gdb stub of the replay")
        refuse(["qmp", "qmp-pretty", "chardev", "mon", "monitor", "nographic", "serial", "readconfig"],
               "tt owns QEMU's monitor, control sockets and serial console")
        refuse(["smp"], "QEMU's record/replay does not support SMP (tt records with -smp 1)")
        refuse(["accel", "enable-kvm", "machine", "M"], "record/replay needs TCG on tt's machine (-machine pc)")
        refuse(["snapshot", "loadvm", "incoming"], "the recording starts from tt's own snapshot")
        refuse(["S", "daemonize", "no-shutdown", "action", "pidfile", "D"], "tt controls how the VM starts, runs and ends")
        refuse(["kernel", "initrd", "append", "cpu", "m"], "tt has its own option for it (--kernel, --initrd, --append, --cpu, -M)")
        refuse(["drive", "blockdev", "hda", "hdb", "hdc", "hdd", "cdrom", "fda", "fdb", "mtdblock", "sd", "pflash"],
               "a disk outside QEMU's block replay is not recorded (and tt's snapshot drive is tt's); use --disk")
        refuse(["net", "netdev", "nic"], "tt makes the network (--net user[,…], its traffic recorded)")
        refuse(["set"], "it changes options tt set")
        return table
    }()

    /// Why `--qemu-arg ARG` is refused, or nil when QEMU may be given it.
    public static func refusal(ofQEMUArgument arg: String) -> String? {
        if arg.isEmpty { return "an empty argument" }
        if arg.contains("\n") { return "it contains a newline" }
        if arg.hasPrefix("-") {
            var name = Substring(arg.dropFirst())
            if name.hasPrefix("-") { name = name.dropFirst() }
            if let eq = name.firstIndex(of: "=") { name = name[..<eq] }
            if let why = refusedOptions[String(name)] { return why }
        }
        if arg.contains("snapdisk") || arg.contains("blkreplay") { return "it names tt's own drives" }
        if arg.contains("vapic") { return "tt sets apic-common.vapic=off (loading a snapshot in a replay deadlocks otherwise)" }
        return nil
    }

    /// Why `--cpu MODEL` is refused, or nil.
    public static func refusal(ofCPU cpu: String) -> String? {
        if cpu.isEmpty || cpu.hasPrefix("-") { return "not a CPU model (see qemu-system-x86_64 -cpu help)" }
        if cpu.contains("\n") { return "it contains a newline" }
        return nil
    }

    /// Options of `--net user,…` that tt passes on; the rest of QEMU's user-network options
    /// are refused: `guestfwd=…cmd:` and `smb=` run host programs, `tftp=`/`bootfile=` serve
    /// host files, `id=` is tt's.
    static let networkOptions: Set<String> = ["hostfwd", "restrict", "net", "host", "dns", "dhcpstart", "hostname", "domainname", "ipv6"]

    /// Why `--net SPEC` is refused, or nil.
    public static func refusal(ofNetwork spec: String) -> String? {
        let parts = spec.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.first == "user" else { return "only QEMU's user-mode network is recorded: user[,hostfwd=…]" }
        if spec.contains(",,") { return "QEMU's doubled-comma escapes are not accepted here" }
        if spec.contains(where: { $0.isNewline || $0 == " " }) { return "it contains spaces or newlines" }
        for option in parts.dropFirst() {
            guard let eq = option.firstIndex(of: "="), eq != option.startIndex else { return "'\(option)' is not OPTION=VALUE" }
            let name = String(option[..<eq])
            guard networkOptions.contains(name) else {
                return "option '\(name)' is refused (allowed: \(networkOptions.sorted().joined(separator: ", ")))"
            }
        }
        return nil
    }

    /// The network's arguments: the user-mode backend, a virtio-net NIC on it, and the replay
    /// filter that records its traffic (and feeds it back in a replay). Not an e1000: QEMU
    /// 10's replay of a guest with one hangs before the guest's first output (measured with
    /// QEMU alone; rtl8139 and virtio-net replay byte-identical).
    private static func networkArguments(_ spec: String) -> [String] {
        ["-netdev", spec + ",id=net0", "-device", "virtio-net-pci,netdev=net0", "-object", "filter-replay,id=netreplay,netdev=net0"]
    }

    /// Why `--smp N` is refused, or nil.
    public static func refusal(ofSMP n: Int) -> String? {
        if n < 1 { return "a VM needs at least one CPU" }
        if n > 1 { return "QEMU's record/replay does not support SMP; only --smp 1 can be recorded" }
        return nil
    }

    // MARK: argument vectors

    /// The recording's argument vector. The kernel and initrd are copies inside the
    /// state directory, so a rebuilt guest cannot break an old recording.
    public func recordArguments(plugin: FilePath) -> [String] { arguments(plugin: plugin, replay: false, overIndex: false) }

    /// The replay's argument vector: the recording's with the host-side plumbing renamed,
    /// started paused (`-S`) with tt's gdb socket (no QMP socket: see HumanMonitor.swift).
    /// The guest's end (isa-debug-exit, poweroff) pauses a replay instead of ending QEMU: a
    /// live replay stays usable there (a snapshot load goes back), even when the command that was running it died and the vCPU
    /// ran on to the end.
    /// `overIndex`: the replay's snapshot image and disk overlays are copy-on-write layers over
    /// the checkpoint index's (`createLayer`), read through them.
    public func replayArguments(plugin: FilePath, overIndex: Bool) -> [String] {
        arguments(plugin: plugin, replay: true, overIndex: overIndex)
            + ["-S", "-gdb", "unix:\(StateFile.gdb),server=on,wait=off",
               "-action", "shutdown=pause"]
    }

    private func arguments(plugin: FilePath, replay: Bool, overIndex: Bool) -> [String] {
        var a = [Self.binary, "-machine", machineType, "-cpu", cpu, "-smp", "1", "-m", String(memoryMB),
                 "-kernel", StateFile.kernel]
        if initrd != nil { a += ["-initrd", StateFile.initrd] }
        if let append { a += ["-append", append] }
        a += ["-display", "none", "-no-reboot"]
        a += network.map(Self.networkArguments) ?? ["-net", "none"]
        a += ["-monitor", "none"]
        if interactiveConsole {
            a += ["-chardev", replay ? Self.replayConsoleChardev : Self.recordConsoleChardev, "-serial", "chardev:console"]
        } else {
            a += ["-serial", "file:" + (replay ? StateFile.replayConsole : StateFile.recordConsole)]
        }
        a += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
              "-icount", "shift=auto,rr=\(replay ? "replay" : "record"),rrfile=\(StateFile.recording),rrsnapshot=init",
              "-drive", Self.image(replay ? StateFile.replaySnapshot : StateFile.snapshot, overIndex: overIndex) + ",if=none,id=snapdisk"]
        for n in 0..<diskCount {
            a += Self.diskArguments(n, image: Self.image(replay ? StateFile.replayDiskOverlay(n) : StateFile.diskOverlay(n), overIndex: overIndex))
        }
        a += ["-global", "apic-common.vapic=off"]
        a += extraArguments
        a += ["-plugin", plugin.string + ",shm=" + (replay ? StateFile.replayShm : StateFile.recordShm)]
        return a
    }

    /// A drive's image: the qcow2 file itself, or (`overIndex`) the qcow2 image whose bytes
    /// are read through the copy-on-write layer `file`. The layer is an inline child, not a
    /// drive of its own: savevm and loadvm take every drive, and it holds no snapshots.
    private static func image(_ file: String, overIndex: Bool) -> String {
        overIndex ? "driver=qcow2,file.driver=qcow2,file.file.driver=file,file.file.filename=\(file)" : "file=\(file)"
    }

    /// Disk N: its overlay (`image`: how the drive opens it), QEMU's block-replay driver
    /// over it, and an IDE disk.
    private static func diskArguments(_ n: Int, image: String) -> [String] {
        ["-drive", "\(image),if=none,id=img\(n)-orig",
         "-drive", "driver=blkreplay,if=none,image=img\(n)-orig,id=img\(n)",
         "-device", "ide-hd,drive=img\(n)"]
    }

    /// The machine a stored `qemu.argv` describes — accepted only when the vector is
    /// exactly what `recordArguments` makes for it, so that the state directory never
    /// chooses the program that runs (as root), its options or what QEMU loads: the
    /// program is `binary` from PATH and the plugin is tt's own, whatever the file says;
    /// the CPU model and `--qemu-arg` arguments pass the same checks as on tt record's
    /// command line.
    public init(validatingRecorded argv: [String], file: FilePath) throws {
        func refuse(_ why: String) -> QEMUError {
            QEMUError("\(file): \(why); not a tt recording's command line, refusing to run it", status: ExitStatus.dataError)
        }
        func value(after flag: String) -> String? {
            guard let i = argv.firstIndex(of: flag), i + 1 < argv.count else { return nil }
            return argv[i + 1]
        }
        guard let m = value(after: "-m"), let mb = Int(m), (1...65536).contains(mb) else { throw refuse("no valid -m") }
        guard let cpu = value(after: "-cpu") else { throw refuse("no -cpu") }
        if let why = Self.refusal(ofCPU: cpu) { throw refuse("-cpu \(cpu): \(why)") }
        // Disks: consecutive after tt's snapshot drive.
        var disks = 0
        if let snap = argv.firstIndex(of: "file=\(StateFile.snapshot),if=none,id=snapdisk") {
            var i = snap + 1
            while disks < StateFile.maxDisks, i + 6 <= argv.count,
                  Array(argv[i..<i + 6]) == Self.diskArguments(disks, image: Self.image(StateFile.diskOverlay(disks), overIndex: false)) {
                disks += 1; i += 6
            }
        }
        self.init(kernel: FilePath(StateFile.kernel), initrd: argv.contains("-initrd") ? FilePath(StateFile.initrd) : nil,
                  append: value(after: "-append"), memoryMB: mb, cpu: cpu, diskCount: disks,
                  interactiveConsole: argv.contains("-chardev"),
                  network: value(after: "-netdev").map { String($0.hasSuffix(",id=net0") ? $0.dropLast(",id=net0".count) : Substring($0)) })
        if let network, let why = Self.refusal(ofNetwork: network) { throw refuse("-netdev \(network): \(why)") }
        guard let machine = value(after: "-machine"), Self.acceptedMachineTypes.contains(machine) else { throw refuse("no valid -machine") }
        machineType = machine
        // tt's own part is the vector without the extra arguments: they are what lies
        // between it and the plugin.
        let recordedPlugin = argv.last ?? ""
        guard recordedPlugin.hasSuffix(",shm=" + StateFile.recordShm) else { throw refuse("the last argument is not tt's plugin") }
        let plugin = FilePath(String(recordedPlugin.dropLast(",shm=\(StateFile.recordShm)".count)))
        let own = recordArguments(plugin: plugin)
        if argv.count > own.count {
            extraArguments = Array(argv[(own.count - 2)..<(argv.count - 2)])
            for arg in extraArguments {
                if let why = Self.refusal(ofQEMUArgument: arg) { throw refuse("'\(arg)' is refused: \(why)") }
            }
        }
        let expected = recordArguments(plugin: plugin)
        guard argv == expected else {
            let at = (0..<min(argv.count, expected.count)).first { argv[$0] != expected[$0] } ?? min(argv.count, expected.count)
            let found = at < argv.count ? "'\(argv[at])'" : "nothing"
            let wanted = at < expected.count ? "'\(expected[at])'" : "nothing"
            throw refuse("line \(at + 1) is \(found) where tt records \(wanted)")
        }
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

/// Copy a file (mode 0600): the kernel into the state directory, the recording's snapshot
/// image (the guest's memory at its start) for a replay. Written O_DIRECT where the file
/// system allows (`OutputBuffer(file:at:direct:)`): a 1.4 GB image took 1.4–1.9 s so,
/// 1.5–5.0 s through the page cache with most of it system time (`dd` measurements).
func copyFile(from: FilePath, to: FilePath) throws {
    // A kernel named on the command line must be a regular file (not a FIFO, a directory, /proc).
    let src = try SafeFiles.openForReading(from).fd
    defer { try? src.close() }
    let dst = try SafeFiles.createTemporary(to)
    defer { try? dst.close() }
    let direct = SafeFiles.reopenDirect(dst)
    defer { try? direct?.close() }
    let out = OutputBuffer(file: dst.rawValue, at: 0, direct: direct?.rawValue)
    var buf = [UInt8](repeating: 0, count: 4 << 20)
    while true {
        let n = try SystemError.naming(from, "read") { try buf.withUnsafeMutableBytes { try src.read(into: $0) } }
        if n == 0 { break }
        try SystemError.naming(to, "write") { try buf.withUnsafeBytes { try out.append(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) } }
    }
    try SystemError.naming(to, "write") { try out.flush() }
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
