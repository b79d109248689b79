import ArgumentParser
import XenBackend
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
            (qemu.argv) and the symbol file's path (symfile); with --disk, each image's
            identity (disks: a replay refuses an image that changed) and the overlay the
            recording wrote into (the image itself is never written).

            With -c (QEMU) the guest's serial console is interactive: what you type goes
            to the guest (the terminal is in raw mode until tt record ends; Ctrl-C goes to
            the guest too), and its input is part of the recording, so a replay sees the
            same keys at the same instruction. Ctrl-A then x ends the recording (QEMU is
            stopped as by -S and the recording stays complete and replayable), Ctrl-A
            Ctrl-A sends one Ctrl-A, Ctrl-A h prints the keys. When standard input is not a
            terminal its bytes are forwarded the same way. The output is also kept in
            console.record. With --detach -c the console is kept for tt console NAME to
            attach to (and detach from, Ctrl-A d) while the recording runs; output shown
            while nobody is attached is in console.record and shown first on attaching.

            -S stops a recording in progress from another terminal, a detached one or a
            foreground one (its tt record then ends as if the guest had).
            """)

    @Flag(name: .customShort("c"), help: "Interactive guest console (QEMU): the serial port on this terminal, input recorded; Ctrl-A x ends the recording, Ctrl-A h helps. With --detach: tt console NAME attaches to it.")
    var console = false
    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Flag(name: .customShort("f"), help: "Replace an existing recording.")
    var force = false
    @Flag(name: .customShort("S"), help: "Stop a recording in progress (detached, or foreground from another terminal), keeping its state.")
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
    @Option(help: ArgumentHelp("QEMU's CPU model (qemu-system-x86_64 -cpu help).", valueName: "model"))
    var cpu: String = QEMUMachine.defaultCPU
    @Option(help: ArgumentHelp("Virtual CPUs: QEMU's record/replay supports only 1.", valueName: "n"))
    var smp = 1
    @Option(name: .customLong("disk"), help: ArgumentHelp(
        "A disk image (raw or qcow2; repeatable, at most \(StateFile.maxDisks)): an IDE disk the recording reads and writes through an overlay, never the image itself; replays need it unchanged.",
        valueName: "image"))
    var disks: [String] = []
    @Option(name: .customLong("qemu-arg"), parsing: .unconditionalSingleValue, help: ArgumentHelp(
        "An argument passed to QEMU as it is, for what tt does not model (repeatable; one per argument, e.g. --qemu-arg -name --qemu-arg foo). Options that would break record/replay or tt's control of QEMU are refused.",
        valueName: "arg"))
    var qemuArguments: [String] = []
    @Option(help: ArgumentHelp(
        "A network: QEMU's user-mode network on a virtio-net NIC, its traffic recorded (filter-replay), e.g. user or user,hostfwd=tcp:127.0.0.1:2222-:22.",
        valueName: "user[,option=value…]"))
    var net: String?
    @Option(help: ArgumentHelp(
        "A folder made into an ext4 image (mkfs.ext4 -d, no root needed), kept in the state directory as rootfs.ext4: the first disk.",
        valueName: "dir"))
    var rootfs: String?
    @Option(help: "Symbol file of the guest kernel (default: the kernel itself).")
    var symbols: String?
    @Flag(help: "Return at once; the recording runs until the guest ends or tt record -S.")
    var detach = false
    @Option(help: "Architecture of the bundled guest: i386 or x86_64.")
    var arch: String = "i386"
    @Option(help: BackendChoice.help)
    var backend: BackendChoice = .auto
    @Flag(help: "--backend xen: prepare a live session instead of recording (stock Xen: no going back, no branch counter); tt replay -p creates the domain paused.")
    var live = false
    @Option(help: ArgumentHelp("--backend xen: the guest type.", valueName: "pv|pvh|hvm"))
    var guestType: String = "pv"
    @OptionGroup var state: StateOptions

    func validate() throws {
        if stop && destroy { throw ValidationError("-S and -D exclude each other") }
        guard (1...65536).contains(memory) else { throw ValidationError("-M \(memory): memory must be 1..65536 MB") }
        guard QEMUMachine.Arch(rawValue: arch) != nil else { throw ValidationError("--arch \(arch): expected i386 or x86_64") }
        guard XenGuestType(rawValue: guestType) != nil else { throw ValidationError("--guest-type \(guestType): expected pv, pvh or hvm") }
        if live && backend != .xen { throw ValidationError("--live needs --backend xen") }
    }

    /// The VM options a recording cannot have, refused with one line (64) before anything
    /// else is looked at: the same checks a replay applies to the stored qemu.argv.
    func refuseUnrecordableVMOptions() throws {
        if let why = QEMUMachine.refusal(ofSMP: smp) { throw ValidationError("--smp \(smp): \(why)") }
        if let why = QEMUMachine.refusal(ofCPU: cpu) { throw ValidationError("--cpu \(cpu): \(why)") }
        for arg in qemuArguments {
            if let why = QEMUMachine.refusal(ofQEMUArgument: arg) { throw ValidationError("--qemu-arg \(arg): refused: \(why)") }
        }
        if disks.count + (rootfs == nil ? 0 : 1) > StateFile.maxDisks {
            throw ValidationError("--disk, --rootfs: at most \(StateFile.maxDisks) disks")
        }
        if let net, let why = QEMUMachine.refusal(ofNetwork: net) { throw ValidationError("--net \(net): \(why)") }
    }

    /// The one recording flow, for every backend: -S/-D on a recording in progress; the
    /// state directory (refused if it holds a recording, unless -f); the symbol file's
    /// absolute path; then the backend's recorder.
    func run() throws {
        let archValue = QEMUMachine.Arch(rawValue: arch)!
        try refuseUnrecordableVMOptions()
        // The one-line refusal comes before anything else is looked at.
        if backend == .xen { try XenSessions.requireAvailable() }
        if stop || destroy {
            let dir = try state.resolve()
            guard dir.exists else { throw StateError.missing(dir.path) }
            guard StateOwnership.isRecording(dir) else { throw StateError.missing(dir.path) }
            // A foreground recording's tt record holds the lock: its QEMU is stopped and that
            // tt record finishes the recording and exits (then the lock is ours).
            var stoppedForeground = false
            let lock: StateLock
            do {
                lock = try dir.lock()
            } catch StateError.busy(let path, let holder) {
                guard try BackendKind(recordedIn: dir) == .qemu, let l = try QEMURecorder.stopForeground(dir, lockHolder: holder) else {
                    throw StateError.busy(path, pid: holder)
                }
                lock = l
                stoppedForeground = true
            }
            defer { withExtendedLifetime(lock) {} }
            // The recording's own backend stops it, whatever --backend says.
            let stopped = try SessionBackends.recorder(try BackendKind(recordedIn: dir), arch: archValue).stopRecording(in: dir)
                || stoppedForeground
            if destroy {
                // A replay VM of the recording goes with it.
                if dir.fileExists(StateFile.backend) || dir.fileExists(StateFile.argv) {
                    try? SessionBackends.backend(for: dir, debug: debug).kill()
                }
                try SessionBackends.removeRecording(dir)
                printLine("tt: removed \(dir.path)")
            } else {
                printLine(stopped ? "tt: recording \(dir.name) stopped; state kept in \(dir.path)" : "tt: no recording of \(dir.name) in progress")
            }
            return
        }
        let kind: BackendKind = backend.usesXen ? .xen : .qemu
        if kind == .xen && (cpu != QEMUMachine.defaultCPU || !disks.isEmpty || !qemuArguments.isEmpty || net != nil || rootfs != nil) {
            throw ValidationError("--cpu, --disk, --rootfs, --net and --qemu-arg need the QEMU backend (--backend qemu)")
        }
        // First, before any state is touched: can this backend record here at all?
        let recorder = kind == .xen
            ? try XenRecorder(guestType: XenGuestType(rawValue: guestType)!, live: live)
            : try SessionBackends.recorder(kind, arch: archValue)
        let dir = try state.resolve()
        try StateOwnership.check(dir.path)
        if dir.exists && StateOwnership.isRecording(dir) {
            guard force else { throw StateError.exists(dir.path) }
            let lock = try dir.lock()
            if let replay = try? SessionBackends.backend(for: dir, debug: debug) { replay.cleanUpAfterDeadOwners() }
            if let vm = recorder.runningVM(in: dir) { throw StateError.vmRunning(dir.path, vm: vm) }
            withExtendedLifetime(lock) {}
            try SessionBackends.removeRecording(dir, replacing: true)
        }
        var request: RecordingRequest
        if let kernel {
            request = RecordingRequest(kernel: try absolute(kernel), initrd: try initrd.map(absolute), append: append,
                                       symbols: try absolute(symbols ?? kernel), memoryMB: memory,
                                       detach: detach, console: console, debug: debug,
                                       cpu: cpu, disks: try disks.map(absolute), qemuArguments: qemuArguments, network: net)
        } else {
            guard kind == .qemu else {
                throw ValidationError("--backend xen needs --kernel (a PV or PVH guest kernel; the bundled guest boots under QEMU only)")
            }
            let guest = try TTInstallation.bundledGuest(archValue)
            request = RecordingRequest(kernel: guest.kernel, initrd: try initrd.map(absolute), append: append,
                                       symbols: try symbols.map(absolute) ?? guest.symbols, memoryMB: memory,
                                       detach: detach, console: console, debug: debug,
                                       cpu: cpu, disks: try disks.map(absolute), qemuArguments: qemuArguments, network: net)
        }
        let created = !dir.exists
        try dir.create()
        let lock = try dir.lock()
        defer { withExtendedLifetime(lock) {} }
        let outcome: RecordingOutcome
        do {
            if let rootfs { request.disks.insert(try RootFilesystemImage.make(from: try absolute(rootfs), in: dir), at: 0) }
            try dir.write(StateFile.symfile, request.symbols.string + "\n")
            let progress = ProgressLine()
            defer { progress.end() }
            outcome = try recorder.record(request, into: dir, cancellation: .onSignals(),
                                          progress: progress.reporter("recording \(dir.name)", counting: .instructions))
        } catch {
            // A recording that failed before it began leaves nothing behind (not even the
            // lock file) in a directory this command created; one the VM began is kept,
            // marked incomplete, with the VM's own log of why.
            if created && !dir.fileExists(StateFile.incomplete) { _ = try? StateOwnership.remove(dir) }
            throw error
        }
        switch outcome {
        case .detached(let vm):
            printLine("tt: recording \(dir.name) in \(vm), state in \(dir.path); tt record -S \(dir.name) stops it")
            if console && kind == .qemu { printLine("tt: its console: tt console \(dir.name) (Ctrl-A d detaches)") }
        case .finished(let summary):
            printLine("tt: recorded \(dir.name): \(summary); state in \(dir.path)")
        case .interrupted(let signal):
            printLine("tt: recording \(dir.name) interrupted by signal \(signal); VM stopped, state kept in \(dir.path)")
            throw ExitCode(Cancelled(signal: signal).exitStatus)
        }
    }

    /// Paths given on the command line, absolute: every later command may run elsewhere.
    private func absolute(_ path: String) throws -> FilePath {
        guard let p = absolutePath(FilePath(path)) else {
            throw SystemError(path: FilePath(path), message: "cannot make the path absolute: the current directory is gone")
        }
        return p
    }
}
