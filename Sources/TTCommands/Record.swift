import ArgumentParser
import SystemPackage
import QEMUBackend
import XenTT

/// `tt record`: record a guest's run with QEMU icount record/replay.
struct Record: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record a guest's run into a state directory.",
        discussion: """
            With no --kernel, the bundled guest is recorded. Returns when the guest ends
            (or at once with --detach). The state directory holds everything needed to
            replay: the recording, the snapshot image, the exact QEMU argument vector
            (qemu.argv) and the symbol file's path (symfile).
            """)

    @Flag(name: .customShort("c"), help: "Show the guest console live.")
    var console = false
    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Flag(name: .customShort("f"), help: "Replace an existing recording.")
    var force = false
    @Flag(name: .customShort("S"), help: "Stop a recording in progress, keeping its state.")
    var stop = false
    @Flag(name: .customShort("D"), help: "Stop a recording in progress and remove its state directory.")
    var destroy = false
    @Option(name: .customShort("M"), help: "Guest memory in MB.")
    var memory = 64
    @Option(help: "Guest kernel (a 32-bit multiboot ELF, or a Linux bzImage).")
    var kernel: String?
    @Option(help: "Initial ramdisk.")
    var initrd: String?
    @Option(help: "Kernel command line.")
    var append: String?
    @Option(help: "Symbol file of the guest kernel (default: the kernel itself).")
    var symbols: String?
    @Flag(help: "Return at once; the recording runs until the guest ends or tt record -S.")
    var detach = false
    @Option(help: "Architecture of the bundled guest: i386 or x86_64.")
    var arch: String = "i386"
    @Option(help: BackendChoice.help)
    var backend: BackendChoice = .auto
    @OptionGroup var state: StateOptions

    func validate() throws {
        if stop && destroy { throw ValidationError("-S and -D exclude each other") }
        guard (1...65536).contains(memory) else { throw ValidationError("-M \(memory): memory must be 1..65536 MB") }
        guard QEMUMachine.Arch(rawValue: arch) != nil else { throw ValidationError("--arch \(arch): expected i386 or x86_64") }
    }

    func run() throws {
        try reporting {
            if backend.usesXen { return try recordWithXen() }
            let dir = try state.resolve()
            if stop || destroy {
                guard dir.exists else { throw StateError.missing(dir.path) }
                guard StateOwnership.isRecording(dir) else { throw StateError.missing(dir.path) }
                let lock = try dir.lock()
                let stopped = QEMURecorder.stop(dir)
                if destroy {
                    _ = QEMUReplayBackend(state: dir).vmPID.map { ChildProcess.terminate($0) }
                    withExtendedLifetime(lock) {}
                    try SessionBackends.removeRecording(dir)
                    printLine("tt: removed \(dir.path)")
                } else {
                    printLine(stopped ? "tt: recording \(dir.name) stopped; state kept in \(dir.path)" : "tt: no recording of \(dir.name) in progress")
                }
                return
            }
            if dir.exists { QEMURecorder.cleanStale(dir) }
            try StateOwnership.check(dir.path)
            if dir.exists && StateOwnership.isRecording(dir) {
                guard force else { throw StateError.exists(dir.path) }
                let lock = try dir.lock()
                if let p = QEMURecorder.recordingPID(dir) { throw StateError.vmRunning(dir.path, pid: p) }
                if let p = QEMUReplayBackend(state: dir).vmPID { throw StateError.vmRunning(dir.path, pid: p) }
                withExtendedLifetime(lock) {}
                try SessionBackends.removeRecording(dir, replacing: true)
            }
            try dir.create()
            let lock = try dir.lock()
            let archValue = QEMUMachine.Arch(rawValue: arch)!
            let kernelPath: FilePath
            var symbolPath: FilePath
            if let kernel {
                kernelPath = FilePath(kernel)
                symbolPath = FilePath(symbols ?? kernel)
            } else {
                let guest = try TTInstallation.bundledGuest(archValue)
                kernelPath = guest.kernel
                symbolPath = symbols.map { FilePath($0) } ?? guest.symbols
            }
            let machine = QEMUMachine(kernel: kernelPath, initrd: initrd.map { FilePath($0) }, append: append,
                                      memoryMB: memory, arch: archValue)
            SignalWatcher.install()
            let pid = try QEMURecorder.start(dir, machine: machine, symbols: symbolPath, detached: detach, debug: debug)
            if detach {
                printLine("tt: recording \(dir.name) (QEMU pid \(pid)) in \(dir.path); tt record -S \(dir.name) stops it")
                return
            }
            let summary = try QEMURecorder.wait(pid, state: dir, console: console)
            withExtendedLifetime(lock) {}
            if summary.signal != 0 {
                printLine("tt: recording \(dir.name) interrupted by signal \(summary.signal); QEMU stopped, state kept in \(dir.path)")
                throw ExitCode(SignalWatcher.exitStatus(summary.signal))
            }
            if let why = summary.incomplete {
                throw QEMUError("recording \(dir.name) in \(dir.path) is incomplete: \(why)")
            }
            // isa-debug-exit makes QEMU exit with (value << 1) | 1.
            let exit = summary.exitStatus.map { $0 & 1 == 1 ? "guest exit code \($0 >> 1) (QEMU status \($0))" : "QEMU exit status \($0)" } ?? "QEMU killed"
            printLine("tt: recorded \(dir.name): \(summary.instructions) instructions, \(summary.branches) taken branches, \(exit); state in \(dir.path)")
        }
    }
}
