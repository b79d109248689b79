import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// Time for the backend's wait loops; tests substitute a fake that never sleeps.
public protocol XenClock: AnyObject {
    /// Seconds on a monotonic clock.
    func now() -> Double
    func sleep(seconds: Double)
}

public final class MonotonicClock: XenClock {
    public init() {}
    public func now() -> Double { monotonicSeconds() }
    public func sleep(seconds: Double) { usleep(UInt32(max(0, seconds) * 1e6)) }
}

/// The Xen implementation of `ReplayBackend`: a replay domain of the time-travel
/// hypervisor, driven through `XenToolstack` (libxl + libxenctrl), never through xl.
///
/// Stopped means "domain paused by tt". Stops come from:
/// - HVM guests: monitor (vm_event) software-breakpoint events (an int3 written over the
///   first byte of the address) and single-step (MTF) events on the event channel;
/// - PV guests: the debugger path — domain debugging on, execution breakpoints in
///   DR0–DR3/DR7 of the vCPU context (at most four), the trap flag to single-step;
///   a debug trap pauses the domain for tt.
/// With the time-travel extensions every breakpoint is also registered as a replay
/// probe (xc_ttd_vmi_add_probe), and the branch counter comes from the hypervisor.
/// One vCPU (vCPU 0), as the original tools had.
///
/// Live mode (`live: true`, a state directory `tt record --live` prepared): no recording
/// and no time-travel hypervisor. The domain is created paused from the template and run
/// for real: no going back, no branch counter (`.live`), stops only where the hypervisor
/// offers them (PV: CONFIG_GDBSX; HVM: the monitor with MTF, Intel only). Debugging is
/// switched on only while tt runs the guest to a stop, and a guest's own int3 met
/// meanwhile is passed back to it.
public final class XenReplayBackend: ReplayBackend {
    public let name = "xen"
    /// Going back is a restart of the replay from its beginning (branch count 0).
    /// HVM guests deliver branch records through vmtrace (Intel PT) decoding.
    /// Live: none of that.
    public var capabilities: BackendCapabilities {
        if live { return [.live] }
        return isHVM ? [.seeking, .branchTracing] : [.seeking]
    }
    /// A live session on a real (stock) hypervisor rather than a replay.
    public let live: Bool
    /// Why the domain can go no further, once it has shut down (crash, poweroff).
    public private(set) var endReason: String?

    let toolstack: XenToolstack
    let state: StateDirectory
    /// The replay domain's name (the recording's name, as the original used).
    let domainName: String
    /// libxl JSON of the replay domain (replay.json of the state directory).
    let configJSON: String
    let clock: XenClock
    /// How long creation, unpause and destruction may take before tt gives up.
    public var stateTimeout: Double = 30

    static let vcpu: UInt32 = 0
    static let int3: UInt8 = 0xCC
    static let trapFlag: UInt64 = 1 << 8

    public private(set) var domid: XenDomainID?
    private var isHVM = false
    private var armed = false
    /// HVM: address -> the original byte under the int3. PV: address -> DR slot.
    private var softwareBreakpoints: [UInt64: UInt8] = [:]
    private var hardwareBreakpoints: [UInt64: Int] = [:]
    private var hypervisorTracing = false
    private var tracer: XenVmtraceTracer?
    private var tracingSink: BranchSink?
    private var tracingStart: UInt64 = 0
    /// The cancellation of the run in progress; steps are not cancellable.
    private var cancellation: Cancellation?

    public init(toolstack: XenToolstack, state: StateDirectory, domainName: String, configJSON: String,
                clock: XenClock = MonotonicClock(), live: Bool = false) {
        self.live = live
        self.toolstack = toolstack
        self.state = state
        self.domainName = domainName
        self.configJSON = configJSON
        self.clock = clock
    }

    // MARK: Life cycle

    public var isLive: Bool {
        if let domid, (try? toolstack.domainInfo(domid)) != nil { return true }
        return (try? toolstack.findDomain(named: domainName)) != nil
    }

    public var vmDescription: String? {
        (domid ?? (try? toolstack.findDomain(named: domainName)) ?? nil).map { "Xen \($0)" }
    }

    /// A replay domain belongs to the hypervisor, not to a command: it outlives a dead one
    /// and is found again by name. Only a `domid` file naming a domain that is gone is stale.
    public func cleanUpAfterDeadOwners() {
        if (try? toolstack.findDomain(named: domainName)) == nil { state.remove(StateFile.domid) }
    }

    private func requireTimeTravel() throws {
        guard live || toolstack.hasTimeTravel else {
            throw XenError.noTimeTravel(detail: "the hypervisor has no time travel (stock Xen: libxenctrl lacks \(XenTimeTravelExtensions.addProbe)), so it cannot replay")
        }
    }

    /// A Xen replay domain is the hypervisor's: it outlives any command whatever
    /// `outlivesCommand` says, and the command that booted it destroys it at its end.
    public func boot(outlivesCommand: Bool) throws {
        try requireTimeTravel()
        if let existing = try toolstack.findDomain(named: domainName) {
            throw XenError.domainExists(domainName, existing)
        }
        let id = try toolstack.createDomain(configJSON: configJSON)
        domid = id
        do {
            try state.write(StateFile.domid, "\(id.rawValue)\n")
            // libxl leaves a new domain paused; check it is there and has not crashed.
            let info = try waitForDomain(id, "to be created paused") { $0.isPaused }
            isHVM = info.isHVM
            if !live {
                try arm(id)
                try reinsertBreakpoints(id)
            }
        } catch {
            forget(destroying: id)
            throw error
        }
    }

    public func attach() throws {
        try requireTimeTravel()
        guard let id = try toolstack.findDomain(named: domainName) else {
            throw XenError.domainNotFound(domainName)
        }
        // Xen counts toolstack pauses: pause only a running domain (a shut-down one stays).
        guard let info = try toolstack.domainInfo(id) else { throw XenError.domainNotFound(domainName) }
        if !info.isPaused && info.shutdown == nil && !info.isDying { try toolstack.pauseDomain(id) }
        domid = id
        isHVM = info.isHVM
        if !live { try arm(id) }
    }

    public func detach() {
        guard let id = domid else { return }
        liftAllBreakpoints(id)
        disarm(id)
        domid = nil
    }

    public func kill() throws {
        let id = try domid ?? toolstack.findDomain(named: domainName)
        softwareBreakpoints.removeAll()
        hardwareBreakpoints.removeAll()
        hypervisorTracing = false
        tracer = nil  // unmaps the trace buffer before the domain goes
        tracingSink = nil
        guard let id else {
            state.remove(StateFile.domid)
            return
        }
        disarm(id)
        try toolstack.destroyDomain(id)
        let deadline = clock.now() + stateTimeout
        while try toolstack.domainInfo(id) != nil {
            guard clock.now() < deadline else { throw XenError.timedOut("waiting for \(id) to be destroyed") }
            clock.sleep(seconds: 0.05)
        }
        domid = nil
        state.remove(StateFile.domid)
    }

    /// On a failure half-way through boot: leave no domain behind.
    private func forget(destroying id: XenDomainID) {
        disarm(id)
        try? toolstack.destroyDomain(id)
        state.remove(StateFile.domid)
        domid = nil
    }

    /// Wait until `condition` holds, the domain shuts down (a crash is reported as one),
    /// vanishes, or the time limit passes.
    @discardableResult
    func waitForDomain(_ id: XenDomainID, _ what: String, _ condition: (XenDomainInfo) -> Bool) throws -> XenDomainInfo {
        let deadline = clock.now() + stateTimeout
        while true {
            guard let info = try toolstack.domainInfo(id) else { throw XenError.domainEnded(id, nil) }
            if let reason = info.shutdown { throw XenError.domainEnded(id, reason) }
            if info.isDying { throw XenError.domainEnded(id, nil) }
            if condition(info) { return info }
            guard clock.now() < deadline else {
                throw XenError.timedOut("after \(Int(stateTimeout)) s waiting for \(id) \(what)")
            }
            clock.sleep(seconds: 0.05)
        }
    }

    /// Switch on the stop mechanism for this guest type.
    private func arm(_ id: XenDomainID) throws {
        guard !armed else { return }
        guard let info = try toolstack.domainInfo(id) else { throw XenError.domainEnded(id, nil) }
        isHVM = info.isHVM
        if isHVM {
            try toolstack.monitorOpen(id)
        } else {
            if live && toolstack.pvDebuggingAvailable == false {
                throw XenError.unsupported("this hypervisor\(toolstack.hypervisorVersion.map { " (Xen \($0))" } ?? "") cannot stop a PV guest: it is built without CONFIG_GDBSX, so debug traps never pause \(id) (rebuild Xen with CONFIG_EXPERT=y CONFIG_GDBSX=y); the live session can only create, read and destroy it")
            }
            try toolstack.setDebugging(id, on: true)
        }
        armed = true
    }

    private func disarm(_ id: XenDomainID) {
        guard armed else { return }
        if isHVM {
            toolstack.monitorClose(id)
        } else {
            try? toolstack.setDebugging(id, on: false)
        }
        armed = false
    }

    private func requireDomain() throws -> XenDomainID {
        guard let domid else { throw XenError.unsupported("no replay domain is attached") }
        return domid
    }

    // MARK: Position

    public func position() throws -> Position {
        let id = try requireDomain()
        let vcpu = try toolstack.vcpuState(id, vcpu: Self.vcpu)
        // Live: no branch counter (`.live`); brctr 0 means nothing.
        let brctr = live ? 0 : try toolstack.timeTravelBranchCounter(id, vcpu: Self.vcpu)
        return Position(landmark: Landmark(ip: vcpu.ip, brctr: brctr, cx: vcpu.cx), icount: nil)
    }

    public func registers() throws -> [RegisterValue] {
        try toolstack.vcpuState(try requireDomain(), vcpu: Self.vcpu).registers
    }

    public func readMemory(at address: UInt64, count: Int) throws -> [UInt8] {
        try toolstack.readGuest(try requireDomain(), vcpu: Self.vcpu, virtualAddress: address, count: count)
    }

    // MARK: Breakpoints

    public var breakpointAddresses: Set<UInt64> { Set(softwareBreakpoints.keys).union(hardwareBreakpoints.keys) }

    public func insertBreakpoint(at address: UInt64) throws {
        let id = try requireDomain()
        guard !breakpointAddresses.contains(address) else { return }
        // A shut-down domain runs no more: the run that follows reports `.ended`.
        if try ended(id) != nil { return }
        try arm(id)  // live: debugging on only now that tt needs stops
        try place(id, address)
        if toolstack.hasTimeTravel {
            do {
                try toolstack.timeTravelAddProbe(id, address: address)
            } catch {
                try? lift(id, address)
                throw error
            }
        }
    }

    public func removeBreakpoint(at address: UInt64) throws {
        let id = try requireDomain()
        guard breakpointAddresses.contains(address) else { return }
        try lift(id, address)
        if toolstack.hasTimeTravel { try toolstack.timeTravelRemoveProbe(id, address: address) }
    }

    private func place(_ id: XenDomainID, _ address: UInt64) throws {
        if isHVM {
            let original = try toolstack.readGuest(id, vcpu: Self.vcpu, virtualAddress: address, count: 1)[0]
            try toolstack.writeGuest(id, vcpu: Self.vcpu, virtualAddress: address, bytes: [Self.int3])
            softwareBreakpoints[address] = original
        } else {
            let used = Set(hardwareBreakpoints.values)
            guard let slot = (0..<4).first(where: { !used.contains($0) }) else {
                throw XenError.unsupported("a PV guest has four hardware breakpoints (DR0-DR3) and all are in use")
            }
            hardwareBreakpoints[address] = slot
            do {
                try writeDebugRegisters(id)
            } catch {
                hardwareBreakpoints[address] = nil
                throw error
            }
        }
    }

    private func lift(_ id: XenDomainID, _ address: UInt64) throws {
        if let original = softwareBreakpoints[address] {
            try toolstack.writeGuest(id, vcpu: Self.vcpu, virtualAddress: address, bytes: [original])
            softwareBreakpoints[address] = nil
        } else if hardwareBreakpoints[address] != nil {
            hardwareBreakpoints[address] = nil
            try writeDebugRegisters(id)
        }
    }

    /// DR0–DR3 hold the addresses; DR7 enables each used slot locally (L0..L3) as an
    /// instruction breakpoint (R/W = 00, LEN = 00).
    private func writeDebugRegisters(_ id: XenDomainID, suppressing suppressed: UInt64? = nil) throws {
        var dr = [UInt64](repeating: 0, count: 8)
        for (address, slot) in hardwareBreakpoints where address != suppressed {
            dr[slot] = address
            dr[7] |= 1 << UInt64(slot * 2)
        }
        try toolstack.updateVCPU(id, vcpu: Self.vcpu, flags: nil, debugRegisters: dr)
    }

    private func liftAllBreakpoints(_ id: XenDomainID) {
        for address in breakpointAddresses { try? removeBreakpoint(at: address) }
    }

    /// After a restart the new domain has none of the old breakpoints.
    private func reinsertBreakpoints(_ id: XenDomainID) throws {
        let addresses = breakpointAddresses
        softwareBreakpoints.removeAll()
        hardwareBreakpoints.removeAll()
        for address in addresses.sorted() { try insertBreakpoint(at: address) }
    }

    // MARK: Running

    /// A domain that has shut down (crashed, powered off) cannot run again: every call that
    /// would run it says so, instead of an unpause failing with EINVAL.
    private func ended(_ id: XenDomainID) throws -> StopReason? {
        guard let info = try toolstack.domainInfo(id) else {
            endReason = "\(id) is gone"
            return .exited
        }
        if let reason = info.shutdown {
            endReason = reason == .crash ? "\(id) crashed" : "\(id) shut down (\(reason))"
            return .ended
        }
        if info.isDying {
            endReason = "\(id) is dying"
            return .ended
        }
        return nil
    }

    public func step() throws -> StopReason {
        let id = try requireDomain()
        if let end = try ended(id) { return end }
        try arm(id)
        let ip = try toolstack.vcpuState(id, vcpu: Self.vcpu).ip
        // A breakpoint on the instruction to step would stop it before it runs: lift it
        // for the one step (the guest never sees the int3 execute).
        let liftedOriginal = softwareBreakpoints[ip]
        if let liftedOriginal {
            try toolstack.writeGuest(id, vcpu: Self.vcpu, virtualAddress: ip, bytes: [liftedOriginal])
        }
        let suppressHardware = hardwareBreakpoints[ip] != nil
        if suppressHardware { try writeDebugRegisters(id, suppressing: ip) }
        defer {
            if liftedOriginal != nil, isLive {
                try? toolstack.writeGuest(id, vcpu: Self.vcpu, virtualAddress: ip, bytes: [Self.int3])
            }
            if suppressHardware, isLive { try? writeDebugRegisters(id) }
        }
        return try singleStep(id)
    }

    private func singleStep(_ id: XenDomainID) throws -> StopReason {
        if isHVM {
            try toolstack.setSingleStep(id, vcpu: Self.vcpu, on: true)
            try toolstack.unpauseDomain(id)
            let outcome = try waitForStop(id, progress: nil)
            if case .ended = outcome { return .ended }
            if case .interrupted = outcome { throw XenError.interrupted("during a single step of \(id)") }
            try toolstack.setSingleStep(id, vcpu: Self.vcpu, on: false)
            if case .event(let event) = outcome, event.kind != .singleStep {
                throw XenError.unsupported("single-step of \(id) stopped on \(event.kind) at 0x\(String(event.ip, radix: 16)) instead")
            }
            return .stepped
        }
        let flags = try toolstack.vcpuState(id, vcpu: Self.vcpu).flags
        try toolstack.updateVCPU(id, vcpu: Self.vcpu, flags: flags | Self.trapFlag, debugRegisters: nil)
        try toolstack.unpauseDomain(id)
        let outcome = try waitForStop(id, progress: nil)
        if case .ended = outcome { return .ended }
        if case .interrupted = outcome { throw XenError.interrupted("during a single step of \(id)") }
        let after = try toolstack.vcpuState(id, vcpu: Self.vcpu).flags
        try toolstack.updateVCPU(id, vcpu: Self.vcpu, flags: after & ~Self.trapFlag, debugRegisters: nil)
        return .stepped
    }

    public func continueUntilStop(hintBrctr: UInt64?, cancellation: Cancellation,
                                  progress: ((UInt64) -> Void)?) throws -> StopReason {
        let id = try requireDomain()
        if let end = try ended(id) { return end }
        try arm(id)
        self.cancellation = cancellation
        defer { self.cancellation = nil }
        // At least one instruction: step off a breakpoint we are sitting on.
        let ip = try toolstack.vcpuState(id, vcpu: Self.vcpu).ip
        if breakpointAddresses.contains(ip) {
            let reason = try step()
            if reason == .ended { return .ended }
            let now = try toolstack.vcpuState(id, vcpu: Self.vcpu).ip
            if breakpointAddresses.contains(now) { return .breakpoint }
        }
        try toolstack.unpauseDomain(id)
        switch try waitForStop(id, progress: progress) {
        case .ended:
            return .ended
        case .interrupted:
            return .interrupted
        case .event(let event):
            switch event.kind {
            case .softwareBreakpoint where softwareBreakpoints[event.ip] != nil:
                return .breakpoint
            case .softwareBreakpoint:
                throw XenError.unsupported("the guest executed its own int3 at 0x\(String(event.ip, radix: 16)); tt does not reinject it")
            default:
                return .interrupted
            }
        case .paused:
            let here = try toolstack.vcpuState(id, vcpu: Self.vcpu).ip
            return hardwareBreakpoints[here] != nil ? .breakpoint : .interrupted
        }
    }


    enum Outcome {
        case event(XenMonitorEvent)
        case paused
        case ended
        case interrupted
    }

    /// Wait for the running domain to stop. On return the domain is paused by tt (an
    /// answered vm_event no longer holds the vCPU), or it has ended.
    private func waitForStop(_ id: XenDomainID, progress: ((UInt64) -> Void)?) throws -> Outcome {
        let outcome = try waitForStopUntraced(id, progress: progress)
        if case .ended = outcome { _ = try? ended(id) }  // why: for the session's message
        // The vmtrace buffer is a ring: copy what this run wrote before the next one.
        if let tracer {
            if case .ended = outcome { try? tracer.collect() } else { try tracer.collect() }
        }
        return outcome
    }

    private func waitForStopUntraced(_ id: XenDomainID, progress: ((UInt64) -> Void)?) throws -> Outcome {
        var lastProgress = clock.now()
        while true {
            if cancellation?.isCancelled == true {
                try toolstack.pauseDomain(id)
                // An event that raced with the pause is answered, its stop reported.
                if isHVM, let event = try toolstack.monitorNextEvent(id, timeoutMilliseconds: 0) {
                    try toolstack.monitorResume(id, event: event, toggleSingleStep: false)
                    return .event(event)
                }
                return .interrupted
            }
            if isHVM {
                if let event = try toolstack.monitorNextEvent(id, timeoutMilliseconds: 50) {
                    if case .other = event.kind {
                        // Not a stop tt asked for: let the vCPU go on.
                        try toolstack.monitorResume(id, event: event, toggleSingleStep: false)
                        continue
                    }
                    try toolstack.pauseDomain(id)
                    try toolstack.monitorResume(id, event: event, toggleSingleStep: false)
                    return .event(event)
                }
            }
            guard let info = try toolstack.domainInfo(id) else { return .ended }
            if info.shutdown != nil || info.isDying { return .ended }
            if !isHVM {
                if info.isPaused {
                    if try passBackGuestInt3(id) { continue }
                    return .paused
                }
                clock.sleep(seconds: 0.001)
            }
            if let progress, clock.now() - lastProgress >= 0.5 {
                lastProgress = clock.now()
                if let brctr = try? toolstack.timeTravelBranchCounter(id, vcpu: Self.vcpu) { progress(brctr) }
            }
        }
    }

    /// PV with debugging on: the guest's own int3 (e.g. Linux's boot self-test, text_poke)
    /// paused the domain for tt, and the guest never saw it. Pass it back: with debugging
    /// and tt's debug registers off, put the ip back on the int3 and let the guest run it
    /// (its own handler takes it), then stop again and switch debugging back on. A hit of
    /// tt's breakpoints within that window (tens of ms) is missed. Returns false when the
    /// stop was no guest int3 (tt's breakpoints and steps are #DBs, never reported here).
    private func passBackGuestInt3(_ id: XenDomainID) throws -> Bool {
        guard toolstack.pvDebuggingAvailable != false, try toolstack.takeDebugEvent(id) == 3 else { return false }
        let state = try toolstack.vcpuState(id, vcpu: Self.vcpu)
        let before = try toolstack.readGuest(id, vcpu: Self.vcpu, virtualAddress: state.ip &- 2, count: 2)
        let length: UInt64
        if before[1] == Self.int3 { length = 1 } else if before == [0xCD, 0x03] { length = 2 } else {
            throw XenError.unsupported("\(id) stopped on a debug event at 0x\(String(state.ip, radix: 16)) that is no int3 tt can pass back")
        }
        let int3At = state.ip &- length
        var window = 0.02
        for _ in 0..<8 {
            try toolstack.setDebugging(id, on: false)
            try toolstack.updateVCPU(id, vcpu: Self.vcpu, flags: nil, debugRegisters: [UInt64](repeating: 0, count: 8))
            try toolstack.setInstructionPointer(id, vcpu: Self.vcpu, ip: int3At)
            try toolstack.unpauseDomain(id)
            clock.sleep(seconds: window)
            try toolstack.pauseDomain(id)
            if try ended(id) != nil { return false }
            try toolstack.setDebugging(id, on: true)
            try writeDebugRegisters(id)
            if try toolstack.vcpuState(id, vcpu: Self.vcpu).ip != int3At {
                try toolstack.unpauseDomain(id)
                return true
            }
            window *= 2
        }
        throw XenError.timedOut("passing \(id)'s own int3 at 0x\(String(int3At, radix: 16)) back to it")
    }

    public func resumeDetached() throws {
        let id = try requireDomain()
        // No controller will answer events or debug traps: take every stop away first.
        liftAllBreakpoints(id)
        disarm(id)
        try toolstack.unpauseDomain(id)
        do {
            try waitForDomain(id, "to run") { $0.isActive }
        } catch XenError.domainEnded(let ended, let reason) where reason != .crash && reason != nil {
            // A short replay may be over before we look: that is not a failure; a crash is.
            _ = ended
        }
    }

    public func pause() throws {
        let id = try requireDomain()
        // Xen counts toolstack pauses: pausing a paused domain would need two unpauses.
        if try toolstack.domainInfo(id)?.isPaused == false { try toolstack.pauseDomain(id) }
        try waitForDomain(id, "to pause") { $0.isPaused }
        if !live { try arm(id) }
    }

    /// The domain's console belongs to xenconsoled: `xl console` shows it.
    public func followConsole(until cancellation: Cancellation) throws {
        throw XenError.unsupported("tt replay -c: the Xen replay's console is xenconsoled's (use xl console \(domainName))")
    }

    /// Nothing of a Xen replay can be kept and returned to but its beginning.
    public func saveCheckpoint(at position: Position) throws -> Checkpoint? { nil }

    /// Back to the beginning: the replay is restarted (branch count 0), breakpoints kept.
    public func restore(_ checkpoint: Checkpoint) throws -> Position {
        guard !live else { throw XenError.unsupported("a live Xen session cannot go back") }
        guard checkpoint.icount == 0 else {
            throw XenError.unsupported("a Xen replay can go back to its beginning only")
        }
        guard tracer == nil && !hypervisorTracing else {
            throw XenError.unsupported("cannot go back while branch tracing is on (the restart would lose the trace)")
        }
        let keep = breakpointAddresses
        try kill()
        try boot(outlivesCommand: true)
        for address in keep.sorted() { try insertBreakpoint(at: address) }
        return try position()
    }

    /// HVM: vmtrace (Intel PT) from here on; switching off decodes the trace and delivers
    /// every transfer to the sink, numbered from the branch count at the start, and
    /// checked against the branch counter's advance.
    /// PV: the time-travel hypervisor's BTS, whose records go into the hypervisor's own
    /// replay log in the state directory (as in the original), not to `sink`; hence no
    /// `.branchTracing` capability for PV.
    public func setTracing(_ sink: BranchSink?) throws {
        let id = try requireDomain()
        guard !live else { throw XenError.unsupported("a live Xen session has no branch tracing (it needs the time-travel hypervisor, or vmtrace on Intel PT hardware)") }
        if let sink {
            guard tracer == nil && !hypervisorTracing else { return }
            if isHVM {
                tracingStart = try position().landmark.brctr
                tracer = try XenVmtraceTracer(toolstack: toolstack, domid: id, vcpu: Self.vcpu)
                tracingSink = sink
            } else {
                try toolstack.timeTravelSetBranchTracing(id, on: true)
                hypervisorTracing = true
            }
            return
        }
        if let tracer, let tracingSink {
            self.tracer = nil
            self.tracingSink = nil
            let end = try position().landmark.brctr
            let originals = softwareBreakpoints
            try tracer.finish(into: tracingSink, startBrctr: tracingStart, expectedCount: end - tracingStart,
                              originalByte: { originals[$0] })
        }
        if hypervisorTracing {
            try toolstack.timeTravelSetBranchTracing(id, on: false)
            hypervisorTracing = false
        }
    }
}
