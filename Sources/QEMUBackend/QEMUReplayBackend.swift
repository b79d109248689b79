import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// `ReplayBackend` over QEMU's icount replay: the VM is controlled through QMP (run,
/// stop, seek, icount) and the gdbstub (breakpoints, steps, registers), and the branch
/// counter lives in tt's TCG plugin's shared control file. The replay VM outlives the
/// command that started it; its pid and sockets are in the state directory.
public final class QEMUReplayBackend: ReplayBackend {
    public let name = "qemu"
    public let capabilities: BackendCapabilities = [.seeking, .branchTracing]
    public let state: StateDirectory
    /// Print protocol steps on stderr.
    public var debug = false

    private var qmp: QMPClient?
    private var gdb: GDBRemoteClient?
    private var shm: PluginControlBlock?
    private var pid: Int32 = 0
    private var breakpoints: Set<UInt64> = []
    private var sink: BranchSink?
    private var interruptRequested = false
    private var ended = false

    public init(state: StateDirectory) {
        self.state = state
    }

    private typealias F = QEMUMachine.File

    public var isLive: Bool { vmPID != nil }

    /// The replay VM's pid, if one runs.
    public var vmPID: Int32? {
        guard let p = QEMURecorder.readPID(state, F.pid), QEMURecorder.isOurQEMU(p, state) else { return nil }
        return p
    }

    private func log(_ s: @autoclosure () -> String) {
        if debug { fputs("tt: qemu: \(s())\n", stderr) }
    }

    // MARK: lifecycle

    public func boot() throws {
        try state.requireRecording()
        if let p = vmPID { throw StateError.vmRunning(state.path, pid: p) }
        if let p = QEMURecorder.recordingPID(state) { throw StateError.vmRunning(state.path, pid: p) }
        for f in [F.qmp, F.gdb, F.pid, F.snapshotTable] { state.remove(f) }
        let record = try state.readLines(F.argv)
        let machine = try QEMUMachine(validatingRecorded: record, file: state.file(F.argv))
        let argv = try QEMUMachine.replayArguments(fromRecord: machine.recordArguments(plugin: try TTInstallation.plugin()))
        try copyFile(from: state.file(F.snapshot), to: state.file(F.replaySnapshot))
        shm = try PluginControlBlock.create(at: state.file(F.replayShm))
        try state.writeLines(F.replayArgv, argv)
        state.remove(F.replayLog)
        state.remove(F.replayConsole)
        log(argv.joined(separator: " "))
        let oldMask = umask(0o077) // QEMU's sockets: 0600 from the start
        defer { umask(oldMask) }
        pid = try ChildProcess.spawn(argv, directory: state.path, output: state.file(F.replayLog))
        do {
            try state.write(F.pid, "\(pid)\n")
            try connect(timeoutMS: 30_000)
            guard shm!.pluginAttached else { throw QEMUError("the QEMU plugin did not attach to \(F.replayShm)") }
        } catch {
            ChildProcess.terminate(pid)
            state.remove(F.pid)
            throw error
        }
        ended = false
    }

    /// Connect QMP and gdb, waiting for QEMU to create the sockets.
    private func connect(timeoutMS: Int) throws {
        cachedRegs = nil
        var waited = 0
        while qmp == nil || gdb == nil {
            if pid > 0, !ChildProcess.isAlive(pid) || ChildProcess.reap(pid) != nil {
                throw QEMUError("QEMU exited while starting the replay: \(lastLine(of: state.file(F.replayLog)) ?? "no message")")
            }
            if qmp == nil { qmp = try? QMPClient(path: state.file(F.qmp)) }
            if qmp != nil && gdb == nil { gdb = try? GDBRemoteClient(path: state.file(F.gdb)) }
            if qmp != nil && gdb != nil { break }
            guard waited < timeoutMS else { throw QEMUError("QEMU did not open its control sockets within \(timeoutMS / 1000) s") }
            usleep(20_000)
            waited += 20
        }
        for f in [F.qmp, F.gdb] { _ = chmod(state.file(f).string, 0o600) }
        // The stub stops the VM when gdb connects; make sure, then sync with a query.
        try stopIfRunning()
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
    }

    public func detach() {
        detachBreakpoints()
        qmp = nil
        gdb = nil
    }

    public func kill() throws {
        detach()
        if let p = vmPID { ChildProcess.terminate(p) }
        removeReplayFiles()
        pid = 0
    }

    /// The files of a replay VM that is gone (the recording's files stay).
    private func removeReplayFiles() {
        for f in [F.pid, F.qmp, F.gdb, F.replaySnapshot, F.snapshotTable] { state.remove(f) }
    }

    private func requireVM() throws -> (QMPClient, GDBRemoteClient, PluginControlBlock) {
        guard !ended, let qmp, let gdb, let shm else {
            throw QEMUError(ended ? "the replay has ended (start it again with tt replay)" : "not connected to a replay VM")
        }
        return (qmp, gdb, shm)
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
        var realMode: Bool { cr0.map { $0 & 1 == 0 } ?? false }
    }

    /// Registers of the current stop (the vCPU has not moved since they were read).
    private var cachedRegs: Regs?

    private func readRegs() throws -> Regs {
        if let cachedRegs { return cachedRegs }
        let r = Regs(bytes: try requireVM().1.readRegisterBytes(limit: 196))
        cachedRegs = r
        return r
    }

    /// The linear address of the next instruction, as the plugin sees addresses
    /// (cs base + ip). Protected and long mode guests here use flat code segments; in
    /// real mode the base is not always cs * 16 (after reset it is 0xffff0000), so it is
    /// read from the monitor's register dump.
    private func linearIP(_ regs: Regs) throws -> UInt64 {
        guard regs.realMode else { return regs.rip }
        let dump = try requireVM().0.human("info registers")
        for line in dump.split(whereSeparator: \.isNewline) where line.hasPrefix("CS =") {
            let fields = line.dropFirst(4).split(separator: " ")
            if fields.count >= 2, let base = UInt64(fields[1], radix: 16) { return base &+ (regs.rip & 0xffff) }
        }
        return (regs.cs << 4) &+ (regs.rip & 0xffff)
    }

    public func position() throws -> Position {
        let here = try landmark()
        if ended, let shm { return Position(landmark: here, icount: shm.instructions) }
        return Position(landmark: here, icount: try requireVM().0.replayICount())
    }

    public func landmark() throws -> Landmark {
        if ended, let shm {
            // QEMU is gone; the control file still holds the last instruction it ran.
            return Landmark(ip: shm.last.pc, brctr: shm.brctr, cx: 0)
        }
        let (_, _, shm) = try requireVM()
        let regs = try readRegs()
        let ip = try linearIP(regs)
        try drainRing()
        // The arrival at ip is counted in the report only, never written back: if an
        // interrupt is pending at this stop, the free run goes from the last instruction
        // straight into the handler (one transfer), and the plugin must see it that way.
        let pending: UInt64 = shm.pendingArrival(at: ip) == nil ? 0 : 1
        return Landmark(ip: ip, brctr: shm.brctr + pending, cx: regs.rcx)
    }

    public func registers() throws -> [RegisterValue] {
        let r = Regs(bytes: try requireVM().1.readRegisterBytes())
        let names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"]
        var out = names.enumerated().map { RegisterValue(name: $1, value: r.u64($0 * 8)) }
        out.append(RegisterValue(name: "eflags", value: r.u32(136)))
        for (i, s) in ["cs", "ss", "ds", "es", "fs", "gs"].enumerated() { out.append(RegisterValue(name: s, value: r.u32(140 + 4 * i))) }
        return out
    }

    // MARK: running

    public func insertBreakpoint(at address: UInt64) throws {
        let (_, gdb, _) = try requireVM()
        guard !breakpoints.contains(address) else { return }
        try gdb.expectOK("Z0,\(String(address, radix: 16)),1")
        breakpoints.insert(address)
    }

    public func removeBreakpoint(at address: UInt64) throws {
        let (_, gdb, _) = try requireVM()
        guard breakpoints.contains(address) else { return }
        try gdb.expectOK("z0,\(String(address, radix: 16)),1")
        breakpoints.remove(address)
    }

    private func markEnded() {
        ended = true
        breakpoints = []
        qmp = nil
        gdb = nil
        if pid > 0 { _ = ChildProcess.waitGone(pid, timeoutMS: 2000) }
        removeReplayFiles()
    }

    public func step() throws -> StopReason {
        let (_, gdb, _) = try requireVM()
        cachedRegs = nil
        do {
            let reply = try gdb.step()
            try drainRing()
            if reply.hasPrefix("W") || reply.hasPrefix("X") { markEnded(); return .ended }
            return .stepped
        } catch is UnixSocket.PeerClosed {
            try? drainRing()
            markEnded()
            return .ended
        }
    }

    public func interrupt() { interruptRequested = true }

    public func continueUntilStop(hintBrctr: UInt64?, progress: ((UInt64) -> Void)?) throws -> StopReason {
        do {
            interruptRequested = false
            // QEMU's stub re-hits a breakpoint at once when continued on it: step off first.
            // A step that lands on a breakpoint address is not taken as a hit: a step can
            // stop where the free run never is (an interrupt pending before that
            // instruction, see docs/qemu-plugin-shm.md); continuing from there re-hits the
            // breakpoint at once, or delivers the interrupt first, as the free run does.
            if try step() == .ended { return .ended }
            if let hintBrctr, let reason = try fastForward(toward: hintBrctr, progress: progress) { return reason }
            switch try runUntilStop(progress: progress) {
            case .exited: return .ended
            case .interrupted: return .interrupted
            // A stop at no breakpoint that nobody asked for: the replay ran out.
            case .stopped(let ip): return breakpoints.contains(ip) ? .breakpoint : .ended
            }
        } catch is UnixSocket.PeerClosed {
            // QEMU closed its sockets: the guest ended (isa-debug-exit) or the replay did.
            try? drainRing()
            markEnded()
            return .ended
        }
    }

    /// Breakpoint hits far before the wanted branch count cost a stop each (a hot
    /// function is hit thousands of times). Instead, with the breakpoints lifted, stop
    /// with `replay-break` after as many instructions as there are branches to go, less
    /// one: each instruction adds at most one transfer, so the count stays below the
    /// wanted one and nothing wanted is skipped. Repeat until close; then the
    /// breakpoints go back. Returns a reason only when the replay ended or was interrupted.
    private func fastForward(toward target: UInt64, progress: ((UInt64) -> Void)?) throws -> StopReason? {
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
                let (_, gdb, _) = try requireVM()
                for b in breakpoints { try gdb.expectOK("z0,\(String(b, radix: 16)),1") }
                lifted = true
            }
            let (qmp, _, _) = try requireVM()
            let budget = target - here.landmark.brctr - 1
            log("fast-forward: brctr \(here.landmark.brctr) → at most \(target - 1), replay-break at icount \(icount + budget)")
            try qmp.execute("replay-break", ["icount": icount + budget])
            let outcome = try runUntilStop(progress: progress)
            if case .exited = outcome { return .ended }
            _ = try? qmp.execute("replay-delete-break")
            if case .interrupted = outcome { return .interrupted }
            let now = try qmp.replayICount()
            // Not where the break was set (and no breakpoint is armed): the replay ran out.
            if now != icount + budget { return .ended }
        }
    }

    /// Continue with the gdb stub's `c` (about 1.3 ms per breakpoint hit, against 8.7 ms
    /// when resuming through QMP and waiting for its STOP event), then wait for its stop
    /// reply while draining the ring, reporting progress, and watching for QEMU's exit and
    /// for signals (an interrupt is the protocol's 0x03 byte: the only byte ever sent
    /// to the stub while the vCPU runs).
    private enum Outcome { case stopped(UInt64), exited, interrupted }

    private func runUntilStop(progress: ((UInt64) -> Void)?) throws -> Outcome {
        let (qmp, gdb, shm) = try requireVM()
        qmp.discardEvents()
        cachedRegs = nil
        try gdb.sendPacket("c")
        let exitFD = ChildProcess.exitDescriptor(pid) ?? -1
        defer { if exitFD >= 0 { close(exitFD) } }
        let signalFD = SignalWatcher.descriptor
        var interruptSent = false
        var lastProgress = monotonicMS()
        var reply = ""
        while true {
            if try gdb.socketReadable(timeoutMS: 0) {
                reply = try gdb.receivePacket()
                break
            }
            var fds = [pollfd(fd: gdb.fileDescriptor, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 3, sink == nil ? 100 : 5)
            try drainRing()
            if fds[1].revents != 0 && fds[0].revents == 0 { try drainRing(); markEnded(); return .exited }
            if fds[2].revents != 0 { _ = SignalWatcher.take(); interruptRequested = true }
            if interruptRequested && !interruptSent {
                interruptSent = true
                try gdb.sendInterrupt()
            }
            if let progress, monotonicMS() - lastProgress >= 200 {
                lastProgress = monotonicMS()
                progress(shm.brctr)
            }
        }
        if reply.hasPrefix("W") || reply.hasPrefix("X") { try drainRing(); markEnded(); return .exited }
        try drainRing()
        if interruptRequested { return .interrupted }
        return .stopped(try linearIP(try readRegs()))
    }

    private func stopIfRunning() throws {
        cachedRegs = nil
        let (qmp, gdb, _) = (qmp!, gdb!, shm)
        if try qmp.isRunning() {
            try qmp.execute("stop")
            _ = try qmp.takeEvent(["STOP"], timeoutMS: 5000)
            _ = try? gdb.receivePacketIfAny(timeoutMS: 1000)
        }
        try gdb.drainUnsolicited()
        qmp.discardEvents()
    }

    public func resumeDetached() throws {
        let (qmp, _, _) = try requireVM()
        detachBreakpoints()
        cachedRegs = nil
        try qmp.execute("cont")
    }

    /// Lift every breakpoint (best effort) and forget them.
    private func detachBreakpoints() {
        if let gdb {
            for b in breakpoints { _ = try? gdb.request("z0,\(String(b, radix: 16)),1") }
        }
        breakpoints = []
    }

    public func pause() throws {
        _ = try requireVM()
        try stopIfRunning()
    }

    /// A snapshot of this replay VM with the plugin's state at that moment (plugin state
    /// is not part of QEMU snapshots). Kept in `replay.snapshots`, one per line.
    struct Snapshot {
        var icount: UInt64, landmarkBrctr: UInt64
        var brctr: UInt64, insns: UInt64, lastPC: UInt64, lastSize: UInt64, lastFlags: UInt64
        var line: String { "\(icount) \(landmarkBrctr) \(brctr) \(insns) \(lastPC) \(lastSize) \(lastFlags)" }
        init(icount: UInt64, landmarkBrctr: UInt64, brctr: UInt64, insns: UInt64, lastPC: UInt64, lastSize: UInt64, lastFlags: UInt64) {
            (self.icount, self.landmarkBrctr, self.brctr, self.insns, self.lastPC, self.lastSize, self.lastFlags) =
                (icount, landmarkBrctr, brctr, insns, lastPC, lastSize, lastFlags)
        }
        init?(line: Substring) {
            let f = line.split(separator: " ").compactMap { UInt64($0) }
            guard f.count == 7 else { return nil }
            self.init(icount: f[0], landmarkBrctr: f[1], brctr: f[2], insns: f[3], lastPC: f[4], lastSize: f[5], lastFlags: f[6])
        }
    }

    /// The recording's initial snapshot: nothing executed.
    static let initial = Snapshot(icount: 0, landmarkBrctr: 0, brctr: 0, insns: 0, lastPC: 0, lastSize: 0, lastFlags: 0)
    /// Landings closer than this many instructions to an earlier snapshot get none.
    static let snapshotSpacing: UInt64 = 500_000

    private func snapshots() -> [Snapshot] {
        let text = state.readIfPresent(F.snapshotTable) ?? ""
        return [Self.initial] + text.split(separator: "\n").compactMap(Snapshot.init(line:))
    }

    /// Keep a snapshot at a landing (savevm, ~0.08 s) unless one is near before it.
    public func landed(at position: Position) {
        guard !ended, let qmp, let shm, let icount = position.icount else { return }
        let table = snapshots()
        if table.contains(where: { $0.icount <= icount && icount - $0.icount < Self.snapshotSpacing }) { return }
        let snap = Snapshot(icount: icount, landmarkBrctr: position.landmark.brctr, brctr: shm.brctr, insns: shm.instructions,
                            lastPC: shm.load(PluginControlBlock.Offset.lastPC), lastSize: shm.load(PluginControlBlock.Offset.lastSize),
                            lastFlags: shm.load(PluginControlBlock.Offset.lastFlags))
        do {
            let out = try qmp.human("savevm tt-\(icount)")
            guard out.trimmingWhitespace.isEmpty else { log("savevm: \(out)"); return }
            try state.write(F.snapshotTable, table.dropFirst().map { $0.line + "\n" }.joined() + snap.line + "\n")
            log("snapshot tt-\(icount) at brctr \(position.landmark.brctr)")
        } catch {
            log("savevm failed: \(error)")
        }
    }

    /// Back to the latest snapshot strictly before branch count `brctr` (the initial one
    /// for 0): `replay-seek` to its exact icount loads it without running forward, then
    /// the plugin's counters are put back to what they were when it was taken.
    public func seek(toAtMost brctr: UInt64) throws -> Position {
        let (qmp, gdb, shm) = try requireVM()
        let snap = snapshots().filter { $0.icount == 0 || $0.landmarkBrctr < brctr }.max { $0.icount < $1.icount } ?? Self.initial
        log("replay-seek to icount \(snap.icount) (snapshot at brctr \(snap.landmarkBrctr))")
        cachedRegs = nil
        qmp.discardEvents()
        try qmp.execute("replay-seek", ["icount": snap.icount])
        _ = try qmp.takeEvent(["STOP"], timeoutMS: 10_000)
        _ = try? gdb.receivePacketIfAny(timeoutMS: 200)
        try gdb.drainUnsolicited()
        guard try qmp.replayICount() == snap.icount else {
            throw QEMUError("replay-seek to icount \(snap.icount) landed elsewhere")
        }
        shm.restore(brctr: snap.brctr, instructions: snap.insns, lastPC: snap.lastPC, lastSize: snap.lastSize, lastFlags: snap.lastFlags)
        return try position()
    }

    // MARK: tracing

    public func setTracing(_ newSink: BranchSink?) throws {
        let (_, _, shm) = try requireVM()
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
            if let sink, let arrival = shm.pendingArrival(at: here.ip),
               here.brctr > shm.load(PluginControlBlock.Offset.traceAfter) {
                var record = BranchTransfer(from: arrival.from, to: arrival.to, brctr: here.brctr)
                try withUnsafePointer(to: &record) { try sink.receive(UnsafeBufferPointer(start: $0, count: 1)) }
            }
            shm.setTracing(false, after: here.brctr)
            sink = nil
        }
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

func monotonicMS() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

extension GDBRemoteClient {
    /// One packet if it arrives within the timeout.
    func receivePacketIfAny(timeoutMS: Int32) throws -> String? {
        guard try socketReadable(timeoutMS: timeoutMS) else { return nil }
        return try receivePacket()
    }
}
