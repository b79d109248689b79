import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `ReplayBackend` over QEMU's icount replay: the VM is controlled through its gdbstub
/// (runs, breakpoints, steps, registers) and the monitor commands the stub passes on
/// (replay breaks, icount, snapshots; HumanMonitor.swift), and the branch counter lives in
/// tt's TCG plugin's shared control file. The replay VM outlives the command that started
/// it; its pid and socket are in the state directory.
public final class QEMUReplayBackend: ReplayBackend {
    public let name = "qemu"
    public let capabilities: BackendCapabilities = [.seeking, .branchTracing]
    public let state: StateDirectory
    /// Print protocol steps on stderr.
    public var debug = false
    /// The CPU the VM's threads run on (`CPUPlacement`: why); nil: unpinned. A `--jobs`
    /// worker's backend is given a CPU of its own.
    public var cpu: Int32? = CPUPlacement.cpu(forReplay: 0)

    private var gdb: GDBRemoteClient?
    private var shm: PluginControlBlock?
    private var pid: Int32 = 0
    private var breakpoints: Set<UInt64> = []
    private var sink: BranchSink?
    private var ended = false
    /// Instruction counts where forward runs stop for `watchHandler` (ascending).
    private var watched: [UInt64] = []
    private var watchHandler: ((Position) throws -> Void)?
    /// The icount QEMU's `replay-break` is armed at for a watched count, if any.
    private var armedWatch: UInt64?
    /// The icount of the snapshot last loaded (not the recording's start), while runs since
    /// then are watched for a stall.
    private var loadedSnapshot: UInt64?
    /// A run that executes no instruction for this long is stuck (QEMU 10 can spin so after
    /// a snapshot load, and once in an index pass after a savevm): it is interrupted.
    public var stallTimeoutMS = 5000
    /// A VM that has not stopped this long after it was interrupted is ended.
    public var stopTimeoutMS = 10_000
    /// QEMU may hold a replay break tt set: QEMU aborts (an assertion) when a new one is set,
    /// or a seek made, while the one it holds lies behind the current icount, so an old one
    /// is deleted first.
    private var breakMayBeArmed = false
    /// The VM's images are copy-on-write layers over the checkpoint index's (`boot`).
    private var bootedOverIndex = false

    private func setReplayBreak(_ gdb: GDBRemoteClient, at icount: UInt64) throws {
        if breakMayBeArmed { _ = try? gdb.monitor("replay_delete_break") }
        breakMayBeArmed = true
        _ = try gdb.monitor("replay_break \(icount)")
    }

    private func deleteReplayBreak(_ gdb: GDBRemoteClient) {
        guard breakMayBeArmed else { return }
        _ = try? gdb.monitor("replay_delete_break")
        breakMayBeArmed = false
    }

    public init(state: StateDirectory) {
        self.state = state
    }

    private typealias F = StateFile

    public var isLive: Bool { vmPID != nil }

    /// The replay VM's pid, if one runs.
    public var vmPID: Int32? {
        guard let p = QEMURecorder.readPID(state, F.pid), QEMURecorder.isOurQEMU(p, state) else { return nil }
        return p
    }

    public var vmDescription: String? { vmPID.map { "QEMU (pid \($0))" } }

    public func cleanUpAfterDeadOwners() { QEMURecorder.cleanStale(state) }

    public func followConsole(until cancellation: Cancellation) throws {
        guard let pid = vmPID else { return }
        // The replay pauses at the guest's end (see replayArguments): follow until the vCPU
        // has executed nothing for a second, which the plugin's instruction count tells
        // without taking the stub from whoever drives the replay. A vCPU can also sit still that
        // long mid-run (measured: a Linux guest's replay on a loaded 2-core machine stopped
        // counting for over a second while loading a module), so when the recording's own
        // count is known (record.shm) the stop counts as the end only near it: QEMU serves
        // the final shutdown on its main loop, a few instructions off between runs.
        let counters = try PluginControlBlock.open(at: state.file(F.replayShm))
        let recorded = (try? PluginControlBlock.open(at: state.file(F.recordShm)))?.instructions ?? 0
        let endSlack: UInt64 = 1_000_000
        var last = counters.instructions, lastChange = monotonicMilliseconds()
        QEMURecorder.followConsole(state.file(F.replayConsole), whileAlive: pid, cancellation: cancellation) {
            let now = counters.instructions
            if now != last { last = now; lastChange = monotonicMilliseconds() }
            return monotonicMilliseconds() - lastChange < 1000 || now + endSlack < recorded
        }
    }

    private func log(_ s: @autoclosure () -> String) {
        if debug { fputs("tt: qemu: \(s())\n", stderr) }
    }

    // MARK: lifecycle

    public func boot(outlivesCommand: Bool) throws {
        try state.requireRecording()
        if let vm = vmDescription { throw StateError.vmRunning(state.path, vm: vm) }
        if let p = QEMURecorder.recordingPID(state) { throw StateError.vmRunning(state.path, vm: "recording QEMU (pid \(p))") }
        try QEMUMachine.requireRecordingQEMU(state)
        for f in [F.gdb, F.pid] { state.remove(f) }
        let record = try state.readLines(F.argv)
        let machine = try QEMUMachine(validatingRecorded: record, file: state.file(F.argv))
        let disks = try DiskImage.requireUnchanged(state)
        guard disks.count == machine.diskCount else {
            throw StateError.badFile(state.file(F.disks), "\(disks.count) disk images for the \(machine.diskCount) disks of \(F.argv)")
        }
        // With a checkpoint index (tt index), the replay boots with its image, which holds
        // `init` and the index's snapshots (and each disk's overlay with the same ones),
        // through copy-on-write layers; without, with a copy of the recording's image.
        let indexed = state.fileExists(F.index) && state.fileExists(F.indexImage)
            && (0..<disks.count).allSatisfy { state.fileExists(F.indexDiskOverlay($0)) }
        if indexed {
            try DiskImage.createLayer(F.replaySnapshot, over: F.indexImage, in: state)
            for n in disks.indices { try DiskImage.createLayer(F.replayDiskOverlay(n), over: F.indexDiskOverlay(n), in: state) }
        } else {
            try copyFile(from: state.file(F.snapshot), to: state.file(F.replaySnapshot))
            for (n, disk) in disks.enumerated() { try disk.createOverlay(F.replayDiskOverlay(n), in: state, initSnapshot: true) }
        }
        bootedOverIndex = indexed
        let argv = machine.replayArguments(plugin: try TTInstallation.plugin(), overIndex: indexed)
        log(indexed ? "booting with the checkpoint index's snapshots (\(F.indexImage))" : "booting with \(F.snapshot)")
        shm = try PluginControlBlock.create(at: state.file(F.replayShm))
        try state.writeLines(F.replayArgv, argv)
        state.remove(F.replayLog)
        state.remove(F.replayConsole)
        log(argv.joined(separator: " ") + (cpu.map { " (on CPU \($0))" } ?? ""))
        let oldMask = umask(0o177) // QEMU's sockets: 0600 from the start (a socket is 0777 less the umask)
        defer { umask(oldMask) }
        // A replay booted for one command dies with that command, however it ends.
        pid = try Subprocess.spawn(.init(argv, workingDirectory: state.path, output: .append(state.file(F.replayLog)),
                                         error: .sameAsOutput, deathSignal: outlivesCommand ? nil : SIGKILL, cpu: cpu)).pid
        do {
            // The pid file says whose the VM is: a command's own VM is killed by the next
            // command once that one is gone (cleanUpAfterDeadOwners), never adopted.
            try state.write(F.pid, outlivesCommand ? "\(pid)\ndetached\n" : "\(pid)\nowner \(getpid())\n")
            try connect(timeoutMS: 30_000)
            guard shm!.pluginAttached else { throw QEMUError("the QEMU plugin did not attach to \(F.replayShm)") }
        } catch {
            RunningProcess(pid: pid).terminate()
            state.remove(F.pid)
            throw error
        }
        ended = false
        loadedSnapshot = nil
    }

    /// Connect to the gdbstub, waiting for QEMU to create its socket.
    private func connect(timeoutMS: Int) throws {
        cachedRegs = nil
        var waited = 0
        while gdb == nil {
            if pid > 0, !RunningProcess(pid: pid).isAlive || RunningProcess(pid: pid).reap() != nil {
                throw QEMUError("QEMU exited while starting the replay: \(lastLine(of: state.file(F.replayLog)) ?? "no message")")
            }
            // A socket not there yet is retried; a QEMU that accepts but never answers is an
            // error at once (the clients' answer time-out), never a loop of time-outs.
            do {
                gdb = try GDBRemoteClient(path: state.file(F.gdb))
            } catch let timeout as UnixSocket.Timeout {
                throw QEMUError("QEMU (pid \(pid)) does not answer: \(timeout)", status: ExitStatus.unavailable)
            } catch {}
            if gdb != nil { break }
            guard waited < timeoutMS else { throw QEMUError("QEMU did not open its control sockets within \(timeoutMS / 1000) s") }
            usleep(20_000)
            waited += 20
        }
        _ = chmod(state.file(F.gdb).string, 0o600)
        // Whatever is awaited from QEMU, the ring keeps being drained (docs/qemu-plugin-shm.md).
        gdb!.whileWaiting = { [unowned self] in try self.whileWaiting() }
        // The stub stops the VM when gdb connects (a detached replay left running, too):
        // drop any stale packet, then sync with a query.
        try gdb!.drainUnsolicited()
        _ = try gdb!.request("?")
    }

    public func attach() throws {
        guard let p = vmPID else { throw StateError.noVM(state.path) }
        pid = p
        let block = try PluginControlBlock.open(at: state.file(F.replayShm))
        shm = block
        try connect(timeoutMS: 5_000)
        // A controller that died while tracing left the switch on: nobody would drain the
        // ring, and the plugin waits when it is full. Switch it off, drop what is there.
        if block.tracing {
            block.setTracing(false, after: block.brctr)
            block.drain { _ in }
        }
        ended = false
        // A command that ended (or died) may have left a replay break in QEMU.
        breakMayBeArmed = true
    }

    public func detach() {
        detachBreakpoints()
        if let gdb, !ended { deleteReplayBreak(gdb) }
        armedWatch = nil
        gdb = nil
    }

    public func kill() throws {
        detach()
        if let p = vmPID { RunningProcess(pid: p).terminate() }
        removeReplayFiles()
        pid = 0
    }

    /// The files of a replay VM that is gone (the recording's files stay; the session's
    /// timeline forgets the checkpoints, which lived in the replay's image).
    private func removeReplayFiles() {
        for f in [F.pid, F.gdb, F.replaySnapshot] + (0..<F.maxDisks).map(F.replayDiskOverlay) { state.remove(f) }
    }

    private func requireVM() throws -> (GDBRemoteClient, PluginControlBlock) {
        guard !ended, let gdb, let shm else {
            throw QEMUError(ended ? "the replay has ended (start it again with tt replay)" : "not connected to a replay VM")
        }
        return (gdb, shm)
    }

    // MARK: position

    private struct Regs {
        var bytes: [UInt8]
        func u64(_ off: Int) -> UInt64 {
            guard off + 8 <= bytes.count else { return 0 }
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(bytes[off + i]) << (8 * i) }
            return v
        }
        func u32(_ off: Int) -> UInt64 { u64(off) & 0xffff_ffff }
        // x86-64 `g` layout of QEMU 7.2: 16 GPRs, rip@128, eflags@136, cs..gs@140..160 (u32),
        // fs_base, gs_base, k_gs_base, then cr0@188.
        var rip: UInt64 { u64(128) }
        var rcx: UInt64 { u64(16) }
        var cs: UInt64 { u32(140) }
        var cr0: UInt64? { bytes.count >= 196 ? u64(188) : nil }
        var rsp: UInt64 { u64(56) }
        var ss: UInt64 { u32(144) }
        var efer: UInt64 { u64(228) }
        var realMode: Bool { cr0.map { $0 & 1 == 0 } ?? false }
    }

    /// Registers of the current stop (the vCPU has not moved since they were read); set to
    /// nil wherever the vCPU may move, which forgets the stop's icount too.
    private var cachedRegs: Regs? { didSet { if cachedRegs == nil { cachedICount = nil } } }
    /// QEMU's instruction count at the current stop, once read (`stopICount`).
    private var cachedICount: UInt64?

    /// QEMU's instruction count at this stop (one monitor round trip per stop).
    private func stopICount() throws -> UInt64 {
        if let cachedICount { return cachedICount }
        let n = try requireVM().0.replayICount()
        cachedICount = n
        return n
    }

    private func readRegs() throws -> Regs {
        if let cachedRegs { return cachedRegs }
        let r = Regs(bytes: try requireVM().0.readRegisterBytes(limit: 236))
        cachedRegs = r
        return r
    }

    /// The linear address of the next instruction, as the plugin sees addresses
    /// (cs base + ip). Protected and long mode guests here use flat code segments; in
    /// real mode the base is not always cs * 16 (after reset it is 0xffff0000), so it is
    /// read from the monitor's register dump.
    private func linearIP(_ regs: Regs) throws -> UInt64 {
        guard regs.realMode else { return regs.rip }
        let dump = try requireVM().0.monitor("info registers")
        for line in dump.split(whereSeparator: \.isNewline) where line.hasPrefix("CS =") {
            let fields = line.dropFirst(4).split(separator: " ")
            if fields.count >= 2, let base = UInt64(fields[1], radix: 16) { return base &+ (regs.rip & 0xffff) }
        }
        return (regs.cs << 4) &+ (regs.rip & 0xffff)
    }

    /// The plugin's rule applied at a stop at `ip`, with the frame read through the stub.
    private func pendingArrivals(_ shm: PluginControlBlock, at ip: UInt64) -> [(from: UInt64, to: UInt64)] {
        shm.pendingArrivals(at: ip) { [self] in
            guard let regs = try? readRegs(), let gdb else { return nil }
            let width: Int32, sp: UInt64
            if regs.realMode { width = 16; sp = (regs.ss & 0xffff) * 16 + (regs.rsp & 0xffff) }
            else if regs.efer & (1 << 10) != 0 { width = 64; sp = regs.rsp }
            else { width = 32; sp = regs.rsp & 0xffff_ffff }
            guard let bytes = try? gdb.readMemory(at: sp, count: 0x30), bytes.count == 0x30 else { return nil }
            return (bytes, width, sp)
        }
    }

    public func position() throws -> Position {
        let here = try landmark()
        if ended, let shm { shm.settle(); return Position(landmark: here, icount: shm.instructions) }
        return Position(landmark: here, icount: try stopICount())
    }

    public func landmark() throws -> Landmark {
        if ended, let shm {
            // QEMU is gone; the control file still holds the last instruction it ran.
            shm.settle()
            return Landmark(ip: shm.last.pc, brctr: shm.brctr, cx: 0)
        }
        let (_, shm) = try requireVM()
        let regs = try readRegs()
        let ip = try linearIP(regs)
        try drainRing()
        shm.settle()
        // The arrival at ip is counted in the report only, never written back: if an
        // interrupt is pending at this stop, the free run goes from the last instruction
        // straight into the handler (one transfer), and the plugin must see it that way.
        let pending = UInt64(pendingArrivals(shm, at: ip).count)
        return Landmark(ip: ip, brctr: shm.brctr + pending, cx: regs.rcx)
    }

    /// CRC-32C of every byte of the gdbstub's `g` packet (general, segment, control, FPU and
    /// SSE registers as QEMU's stub sends them).
    public func registerHash() throws -> UInt32? {
        let bytes = try requireVM().0.readRegisterBytes()
        return bytes.withUnsafeBytes { CRC32C.checksum($0) }
    }

    public func registers() throws -> [RegisterValue] {
        let r = Regs(bytes: try requireVM().0.readRegisterBytes())
        let names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"]
        var out = names.enumerated().map { RegisterValue(name: $1, value: r.u64($0 * 8)) }
        out.append(RegisterValue(name: "eflags", value: r.u32(136)))
        for (i, s) in ["cs", "ss", "ds", "es", "fs", "gs"].enumerated() { out.append(RegisterValue(name: s, value: r.u32(140 + 4 * i))) }
        return out
    }

    public func readMemory(at address: UInt64, count: Int) throws -> [UInt8] {
        try requireVM().0.readMemory(at: address, count: count)
    }

    // MARK: running

    public func insertBreakpoint(at address: UInt64) throws {
        let (gdb, _) = try requireVM()
        guard !breakpoints.contains(address) else { return }
        try gdb.expectOK("Z0,\(String(address, radix: 16)),1")
        breakpoints.insert(address)
    }

    public func removeBreakpoint(at address: UInt64) throws {
        let (gdb, _) = try requireVM()
        guard breakpoints.contains(address) else { return }
        try gdb.expectOK("z0,\(String(address, radix: 16)),1")
        breakpoints.remove(address)
    }

    public func watchICounts(_ icounts: [UInt64], handler: ((Position) throws -> Void)?) {
        watched = handler == nil ? [] : icounts.sorted()
        watchHandler = handler
    }

    /// The first watched icount after `icount`.
    private func nextWatched(after icount: UInt64) -> UInt64? {
        watched.first { $0 > icount }
    }

    /// At a stop at exactly a watched icount: hand the position over (the replay-break that
    /// stopped here is spent). True if it was one.
    private func handleWatchStop() throws -> Bool {
        guard let armed = armedWatch, let shm else { return false }
        // The plugin's instruction count is never below icount (it can run a few ahead: 5
        // after 4.7 G instructions of a Linux boot, instructions QEMU executed again after
        // an I/O access): below the break, this stop is not it, with no monitor round
        // trip at each breakpoint hit. Near it, QEMU's icount decides.
        guard shm.instructions >= armed else { return false }
        let now = try stopICount()
        if now < armed { return false }
        armedWatch = nil
        if now > armed {
            deleteReplayBreak(try requireVM().0)
            return false
        }
        let position = try position()
        log("passing checkpoint icount \(armed): \(position.landmark)")
        try watchHandler?(position)
        return true
    }

    /// The plugin's count may run ahead of icount by this much at most (see handleWatchStop).
    private static let countDrift: UInt64 = 1 << 20

    /// Arm QEMU's replay break at the next watched icount, if any and none is armed; drop an
    /// armed one a step has passed (it would stop a run at once where no one asked).
    private func armNextWatch() throws {
        guard let shm, !watched.isEmpty else { return }
        let plugin = shm.instructions
        if let armed = armedWatch {
            guard plugin >= armed else { return }
            let (gdb, _) = try requireVM()
            guard try stopICount() >= armed else { return }
            deleteReplayBreak(gdb)
            armedWatch = nil
        }
        guard nextWatched(after: plugin > Self.countDrift ? plugin - Self.countDrift : 0) != nil else { return }
        let (gdb, _) = try requireVM()
        guard let w = nextWatched(after: try stopICount()) else { return }
        try setReplayBreak(gdb, at: w)
        armedWatch = w
    }

    private func markEnded() {
        ended = true
        armedWatch = nil
        breakpoints = []
        gdb = nil
        if pid > 0 { _ = RunningProcess(pid: pid).waitGone(timeoutMS: 2000) }
        removeReplayFiles()
    }

    public func step() throws -> StopReason {
        let (gdb, _) = try requireVM()
        cachedRegs = nil
        // At the guest's end the stub would wait for a run that QEMU refuses to start.
        if try gdb.guestEnded() { return .ended }
        do {
            let reply = try gdb.step()
            try drainRing()
            if reply.hasPrefix("W") || reply.hasPrefix("X") { markEnded(); return .exited }
            return .stepped
        } catch is UnixSocket.PeerClosed {
            try? drainRing()
            markEnded()
            return .exited
        }
    }

    public func continueUntilStop(hintBrctr: UInt64?, cancellation: Cancellation,
                                  progress: ((UInt64) -> Void)?) throws -> StopReason {
        do {
            // QEMU's stub re-hits a breakpoint at once when continued on it: step off first.
            // A step that lands on a breakpoint address is not taken as a hit: a step can
            // stop where the free run never is (an interrupt pending before that
            // instruction, see docs/qemu-plugin-shm.md); continuing from there re-hits the
            // breakpoint at once, or delivers the interrupt first, as the free run does.
            let stepped = try step()
            if stepped != .stepped { return stepped }
            if let hintBrctr, let reason = try fastForward(toward: hintBrctr, cancellation: cancellation, progress: progress) {
                return reason
            }
            switch try runUntilStop(cancellation: cancellation, progress: progress) {
            case .exited: return .exited
            case .interrupted, .deadline: return .interrupted // (no deadline is given here)
            // A stop at no breakpoint that nobody asked for: the replay ran out.
            case .stopped(let ip): return breakpoints.contains(ip) ? .breakpoint : .ended
            }
        } catch is UnixSocket.PeerClosed {
            // QEMU closed its sockets: the guest ended (isa-debug-exit) or the replay did.
            try? drainRing()
            markEnded()
            return .exited
        }
    }

    /// Breakpoint hits far before the wanted branch count cost a stop each (a hot
    /// function is hit thousands of times). Instead, with the breakpoints lifted, stop
    /// with `replay-break` after as many instructions as there are branches to go, less
    /// one: each instruction adds at most one transfer, so the count stays below the
    /// wanted one and nothing wanted is skipped. Repeat until close; then the
    /// breakpoints go back. Returns a reason only when the replay ended or was interrupted.
    private func fastForward(toward target: UInt64, cancellation: Cancellation,
                             progress: ((UInt64) -> Void)?) throws -> StopReason? {
        let closeEnough: UInt64 = 64
        var lifted = false
        defer {
            if lifted, let gdb, !ended {
                for b in breakpoints { _ = try? gdb.request("Z0,\(String(b, radix: 16)),1") }
            }
        }
        while true {
            let here = try position()
            guard here.landmark.brctr + closeEnough < target, let icount = here.icount else { return nil }
            if !lifted {
                let (gdb, _) = try requireVM()
                for b in breakpoints { try gdb.expectOK("z0,\(String(b, radix: 16)),1") }
                lifted = true
            }
            let (gdb, _) = try requireVM()
            let budget = target - here.landmark.brctr - 1
            // A watched icount (an indexed checkpoint) on the way is a stop of its own.
            var stopAt = icount + budget
            if let w = nextWatched(after: icount), w < stopAt { stopAt = w }
            log("fast-forward: brctr \(here.landmark.brctr) → at most \(target - 1), replay-break at icount \(stopAt)")
            try setReplayBreak(gdb, at: stopAt)
            armedWatch = nil
            let outcome = try runOnce(cancellation: cancellation, progress: progress)
            if case .exited = outcome { return .exited }
            guard case .stopped = outcome else {
                deleteReplayBreak(gdb)
                return .interrupted
            }
            let now = try stopICount()
            // Not where the break was set (and no breakpoint is armed): the replay ran out.
            guard now == stopAt else {
                deleteReplayBreak(gdb)
                return .ended
            }
            // Stopped by the break, which QEMU deletes as it stops (replay_stop_vm).
            breakMayBeArmed = false
            if watched.contains(now) {
                log("passing checkpoint icount \(now)")
                try watchHandler?(try position())
            }
            // Stopped at a breakpoint's address: the caller judges it as a hit. Continuing
            // from there does not always stop at it first (a CI run missed copy_block's entry
            // that way and passed the target); judging it twice is harmless for an exact
            // target, the only kind fast-forwarded.
            if breakpoints.contains(try landmark().ip) { return .breakpoint }
        }
    }

    /// Continue with the gdb stub's `c` (about 1.3 ms per breakpoint hit), then wait for its stop
    /// reply while draining the ring, reporting progress, and watching for QEMU's exit and
    /// for signals (an interrupt is the protocol's 0x03 byte: the only byte ever sent
    /// to the stub while the vCPU runs).
    private enum Outcome { case stopped(UInt64), exited, interrupted, deadline }

    /// The cancellation of the `c` in progress: while it is set, the vCPU runs and the stub
    /// may be sent the interrupt byte (once).
    private var runCancellation: Cancellation?
    private var interruptSent = false

    /// Run while any reply from QEMU is awaited: drain the ring (a full ring holds the
    /// vCPU, which then answers nothing) and pass a cancellation on to a running vCPU.
    private func whileWaiting() throws {
        try drainRing()
        if let c = runCancellation, c.isCancelled, !interruptSent, let gdb {
            interruptSent = true
            try gdb.sendInterrupt()
        }
    }

    /// Run until a stop that is not a watched icount's (those are handed to the handler and
    /// the run goes on; a watched stop on a breakpoint's address is also that breakpoint's).
    private func runUntilStop(cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> Outcome {
        while true {
            try armNextWatch()
            let outcome = try runOnce(cancellation: cancellation, progress: progress)
            guard case .stopped(let ip) = outcome, try handleWatchStop(), !breakpoints.contains(ip) else { return outcome }
        }
    }

    /// Run the vCPU (gdb `c`) until the next stop of any kind.
    private func runOnce(cancellation: Cancellation, progress: ((UInt64) -> Void)?, deadline: Double? = nil) throws -> Outcome {
        let (gdb, shm) = try requireVM()
        cachedRegs = nil
        try gdb.sendPacket("c")
        let exitFD = RunningProcess(pid: pid).exitDescriptor()?.rawValue ?? -1
        interruptSent = false
        runCancellation = cancellation
        defer {
            if exitFD >= 0 { close(exitFD) }
            runCancellation = nil
        }
        var lastProgress = monotonicMilliseconds()
        var deadlinePassed = false
        var reply = ""
        var lastCount = shm.instructions, lastMove = monotonicMilliseconds(), stalled = false
        var waitingForStop: Int?
        while true {
            if let packet = try gdb.receivePacketIfStarted() {
                reply = packet
                break
            }
            // QEMU 10 can spin without executing anything (measured with a Linux guest past
            // its decompressor after a snapshot load, and once after a savevm in a delay loop):
            // stop it and say so, instead of waiting.
            if !interruptSent {
                if shm.instructions != lastCount {
                    lastCount = shm.instructions
                    lastMove = monotonicMilliseconds()
                } else if monotonicMilliseconds() - lastMove >= stallTimeoutMS {
                    log("no instruction executed for \(stallTimeoutMS) ms at instruction \(lastCount)")
                    stalled = true
                    interruptSent = true
                    try gdb.sendInterrupt()
                }
            }
            // An interrupted VM that does not stop (the one after a savevm did not, ran on
            // and then spun) is ended: the command fails instead of waiting for ever.
            if interruptSent {
                let now = monotonicMilliseconds()
                let since = waitingForStop ?? now
                waitingForStop = since
                if now - since >= stopTimeoutMS {
                    let at = shm.instructions
                    _ = RunningProcess(pid: pid).terminate()
                    markEnded()
                    pid = 0
                    throw QEMUError("the replay VM did not stop within \(stopTimeoutMS / 1000) s of being interrupted (at instruction \(at)\(stalled ? ", where it had executed nothing for \(stallTimeoutMS / 1000) s" : "")): QEMU is stuck; it was ended",
                                    status: ExitStatus.unavailable)
                }
            }
            var fds = [pollfd(fd: gdb.fileDescriptor, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)]
            var timeout: Int32 = sink == nil ? 100 : 5
            if let deadline, !interruptSent {
                let left = deadline - monotonicSeconds()
                if left <= 0 {
                    interruptSent = true
                    deadlinePassed = true
                    try gdb.sendInterrupt()
                } else {
                    timeout = min(timeout, Int32((left * 1000).rounded(.up)))
                }
            }
            _ = poll(&fds, 3, timeout)
            try drainRing()
            if fds[1].revents != 0 && fds[0].revents == 0 { try drainRing(); markEnded(); return .exited }
            if cancellation.isCancelled && !interruptSent {
                interruptSent = true
                try gdb.sendInterrupt()
            }
            if let progress, monotonicMilliseconds() - lastProgress >= 200 {
                lastProgress = monotonicMilliseconds()
                progress(shm.brctr)
            }
        }
        if reply.hasPrefix("W") || reply.hasPrefix("X") { try drainRing(); markEnded(); return .exited }
        try drainRing()
        if stalled {
            deleteReplayBreak(gdb)
            armedWatch = nil
            if let loaded = loadedSnapshot {
                throw SessionError.stalled(checkpointICount: loaded, at: try landmark(), seconds: stallTimeoutMS / 1000)
            }
            throw QEMUError("the replay executed no instruction for \(stallTimeoutMS / 1000) s at \(try landmark()): QEMU's replay is stuck there",
                            status: ExitStatus.unavailable)
        }
        if interruptSent { return deadlinePassed && !cancellation.isCancelled ? .deadline : .interrupted }
        return .stopped(try linearIP(try readRegs()))
    }

    public func resumeDetached() throws {
        let (gdb, _) = try requireVM()
        detachBreakpoints()
        cachedRegs = nil
        // The VM runs on after the stub's connection closes; the next command's
        // connection stops it again.
        _ = try gdb.monitor("cont")
    }

    /// Lift every breakpoint (best effort) and forget them.
    private func detachBreakpoints() {
        if let gdb {
            for b in breakpoints { _ = try? gdb.request("z0,\(String(b, radix: 16)),1") }
        }
        breakpoints = []
    }

    /// Connected is stopped: the stub stops the VM when gdb connects, and every run of
    /// this controller waits for its stop.
    public func pause() throws {
        let (gdb, _) = try requireVM()
        cachedRegs = nil
        try gdb.drainUnsolicited()
    }

    public func runToICount(_ icount: UInt64, deadline: Double?, cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> StopReason {
        let (gdb, _) = try requireVM()
        let now = try stopICount()
        if now == icount { return .stepped }
        guard now < icount else { throw QEMUError("cannot run to icount \(icount): the replay is already at \(now)") }
        if try gdb.guestEnded() { return .ended }
        for b in breakpoints { try gdb.expectOK("z0,\(String(b, radix: 16)),1") }
        defer {
            if !ended, let gdb = self.gdb { for b in breakpoints { _ = try? gdb.request("Z0,\(String(b, radix: 16)),1") } }
        }
        armedWatch = nil
        do {
            try setReplayBreak(gdb, at: icount)
            let outcome = try runOnce(cancellation: cancellation, progress: progress, deadline: deadline)
            if case .exited = outcome { return .exited }
            deleteReplayBreak(gdb)
            if case .interrupted = outcome { return .interrupted }
            let now = try stopICount()
            if now == icount { return .stepped }
            // The deadline's interrupt and the end of the recording can meet: the end wins.
            if case .deadline = outcome, try !gdb.guestEnded() { return .deadline }
            return .ended
        } catch is UnixSocket.PeerClosed {
            try? drainRing()
            markEnded()
            return .exited
        }
    }

    /// The replay's image, with the snapshots this VM saved (`init` and tt-ICOUNT), becomes
    /// the index image later replays boot with (and each disk's overlay likewise): QEMU is
    /// asked to quit, so that the images are closed and complete, then they are renamed.
    public func keepCheckpoints() throws {
        let (gdb, _) = try requireVM()
        // Its images are layers over the index's (boot), not images of their own.
        guard !bootedOverIndex else { throw QEMUError("a replay booted from the checkpoint index cannot make the index; remove the index first") }
        let vm = pid
        detachBreakpoints()
        _ = try? gdb.monitor("quit")
        self.gdb = nil
        guard vm > 0, RunningProcess(pid: vm).waitGone(timeoutMS: 30_000) else {
            try kill()
            throw QEMUError("QEMU (pid \(vm)) did not quit; the index's snapshots were not kept")
        }
        for f in [F.indexImage] + (0..<F.maxDisks).map(F.indexDiskOverlay) { state.remove(f) }
        try state.rename(F.replaySnapshot, to: F.indexImage)
        for n in 0..<F.maxDisks where state.fileExists(F.replayDiskOverlay(n)) {
            try state.rename(F.replayDiskOverlay(n), to: F.indexDiskOverlay(n))
        }
        ended = true
        removeReplayFiles()
        pid = 0
    }

    /// A checkpoint is a QEMU snapshot (`savevm tt-ICOUNT`, ~0.08 s) in the replay's own
    /// image, plus the plugin's state at that moment, which snapshots do not hold:
    /// backendState = [brctr, insns, last_pc, last_size, last_flags, last_target, H,
    /// handler 1, …, handler H] (the handler entries it had learned).
    public func saveCheckpoint(at position: Position) throws -> Checkpoint? {
        let (gdb, shm) = try requireVM()
        // The start needs none: the recording's own `init` is there.
        guard let icount = position.icount, icount > 0 else { return nil }
        shm.settle()
        let handlers = shm.handlers
        let counters = [shm.brctr, shm.instructions, shm.load(PluginControlBlock.Offset.lastPC),
                        shm.load(PluginControlBlock.Offset.lastSize), shm.load(PluginControlBlock.Offset.lastFlags),
                        shm.load(PluginControlBlock.Offset.lastTarget), UInt64(handlers.count)] + handlers
        do {
            let out = try gdb.monitor("savevm \(Self.snapshotName(icount))")
            guard out.trimmingWhitespace.isEmpty else {
                log("savevm: \(out)")
                return nil
            }
        } catch let failure as GDBRemoteClient.MonitorFailure {
            log("savevm: \(failure)")
            return nil
        }
        log("snapshot \(Self.snapshotName(icount)) at brctr \(position.landmark.brctr)")
        return Checkpoint(icount: icount, brctr: position.landmark.brctr, backendState: counters)
    }

    /// The snapshot of the checkpoint at `icount`: the recording's initial one at 0, else
    /// the one `saveCheckpoint` took there.
    static func snapshotName(_ icount: UInt64) -> String { icount == 0 ? "init" : "tt-\(icount)" }

    /// `loadvm` of the checkpoint's snapshot (the recording's initial one for the start)
    /// puts the replay exactly at its icount, stopped (HMP's loadvm returns when it is
    /// done; QMP's replay-seek returned at once and ran on to the icount); then the
    /// plugin's state is put back to what it was when it was taken (all 0 and no handler
    /// known at the start). Without the handlers a run on from there could count an
    /// interrupt after an indirect transfer as one transfer where a run from the start
    /// counts two: a checkpoint without them (taken by an older tt) is refused.
    public func restore(_ checkpoint: Checkpoint) throws -> Position {
        let (gdb, shm) = try requireVM()
        let c = checkpoint.icount == 0 ? [0, 0, 0, 0, 0, 0, 0] : checkpoint.backendState
        guard c.count >= 7, c[6] == UInt64(c.count - 7) else {
            throw QEMUError("the checkpoint at icount \(checkpoint.icount) holds \(c.count) plugin words, not the counters and handler table this tt restores (an index made by an older tt: make it again with tt index)",
                            status: ExitStatus.dataError)
        }
        let name = Self.snapshotName(checkpoint.icount)
        log("restore icount \(checkpoint.icount) (snapshot \(name), brctr \(checkpoint.brctr))")
        cachedRegs = nil
        armedWatch = nil
        deleteReplayBreak(gdb)
        if try gdb.guestEnded() {
            // At the guest's end (run state "shutdown") a loaded snapshot keeps that state and
            // the vCPU never runs again; replay_seek leaves it: it loads the snapshot and
            // starts the vCPU with a replay break at that very icount, which stops it before
            // any instruction. The interrupt byte, handled before the next packet, makes sure
            // it has stopped; the icount is checked below.
            _ = try gdb.monitor("replay_seek \(checkpoint.icount)")
            breakMayBeArmed = true
            try gdb.sendInterrupt()
        } else {
            _ = try gdb.monitor("loadvm \(name)")
        }
        try gdb.drainUnsolicited()
        guard try gdb.replayICount() == checkpoint.icount else {
            throw QEMUError("loading snapshot \(name) put the replay elsewhere than icount \(checkpoint.icount)")
        }
        shm.restore(brctr: c[0], instructions: c[1], lastPC: c[2], lastSize: c[3], lastFlags: c[4], lastTarget: c[5],
                    handlers: Array(c[7...]))
        loadedSnapshot = checkpoint.icount > 0 ? checkpoint.icount : nil
        return try position()
    }

    // MARK: tracing

    public func setTracing(_ newSink: BranchSink?) throws {
        let (_, shm) = try requireVM()
        let here = try landmark()
        if let newSink {
            // Records after the current landmark only: the arrival here (which the
            // plugin counts when this instruction runs) is not part of the trace.
            sink = newSink
            shm.setTracing(true, after: here.brctr)
        } else {
            try drainRing()
            // The arrival here is part of the trace (records up to and including the
            // current landmark) but the plugin has not seen it yet: deliver it now. It
            // will count it, untraced, when this instruction runs.
            let arrivals = pendingArrivals(shm, at: here.ip)
            if let sink, !arrivals.isEmpty {
                let first = here.brctr - UInt64(arrivals.count) + 1
                for (k, arrival) in arrivals.enumerated() where first + UInt64(k) > shm.load(PluginControlBlock.Offset.traceAfter) {
                    var record = BranchTransfer(from: arrival.from, to: arrival.to, brctr: first + UInt64(k))
                    try withUnsafePointer(to: &record) { try sink.receive(UnsafeBufferPointer(start: $0, count: 1)) }
                }
            }
            shm.setTracing(false, after: here.brctr)
            sink = nil
        }
    }

    public func setRawTracing(_ newSink: BranchSink?) throws -> UInt64 {
        let (_, shm) = try requireVM()
        try drainRing()
        shm.settle()
        let raw = shm.brctr
        if let newSink {
            sink = newSink
            shm.setTracing(true, after: raw)
        } else {
            shm.setTracing(false, after: raw)
            sink = nil
        }
        return raw
    }

    private func drainRing() throws {
        guard let shm else { return }
        if let sink {
            try shm.drain { try sink.receive($0) }
        } else {
            shm.drain { _ in }
        }
    }
}

