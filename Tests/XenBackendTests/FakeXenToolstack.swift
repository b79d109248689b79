import Foundation
@testable import XenBackend
import XenTT

/// A FAKE of the Xen C boundary, for testing the backend's logic without a hypervisor.
/// It simulates a replay domain executing a fixed, recorded instruction sequence
/// (`program`): every replay domain runs exactly the same sequence, as a time-travel
/// replay would. It also enforces rules the real libraries impose, recording any breach
/// in `violations` (each test asserts there are none):
/// - Xen counts toolstack pauses: an unpause must match a pause;
/// - vCPU state and guest memory are only touched while the vCPU is stopped;
/// - HVM stops need the monitor open; PV debug traps need debugging on.
final class FakeXenToolstack: XenToolstack {
    struct Instruction {
        var ip: UInt64
        var cx: UInt64 = 0
        /// This instruction was reached by a taken control transfer.
        var arrivedByBranch: Bool
        /// The guest's own int3: with debugging on it pauses the domain for tt (debug
        /// event 3, ip after it); the guest must run it itself, or it crashes later.
        var guestInt3 = false
    }

    final class Domain {
        let id: XenDomainID
        let name: String
        let hvm: Bool
        var pauseCount = 1  // libxl creates domains paused
        var index = 0
        var shutdown: XenShutdownReason?
        var memory: [UInt64: UInt8] = [:]
        var debugRegisters = [UInt64](repeating: 0, count: 8)
        var flags: UInt64 = 0x202
        var debugging = false
        var monitorOpen = false
        var singleStep = false
        /// A request the vCPU waits on (delivered or not yet taken).
        var held: XenMonitorEvent?
        var heldTaken = false
        var probes: Set<UInt64> = []
        var branchTracing = false
        var debugEvent: UInt32?
        /// The guest's int3 swallowed by the debugger and never passed back.
        var swallowedInt3 = false
        init(id: XenDomainID, name: String, hvm: Bool) { self.id = id; self.name = name; self.hvm = hvm }
    }

    let program: [Instruction]
    var hasTimeTravel = true
    /// CONFIG_GDBSX: without it, PV debug traps never pause a domain.
    var pvDebuggingAvailable: Bool? = true
    var hypervisorVersion: String? = "4.17.7"
    /// PV without debugging: at most this many instructions between two looks (nil: a
    /// running guest reaches its next stop at once).
    var freeRunLimit: Int?
    /// How the recorded run ends.
    var endReason = XenShutdownReason.poweroff
    /// While set, a running guest makes no progress (a long run), for interrupt tests.
    var stalled = false
    /// Called whenever the backend polls a running domain.
    var onPoll: (() -> Void)?

    private(set) var domains: [UInt32: Domain] = [:]
    private(set) var destroyed: [XenDomainID] = []
    private(set) var createdConfigs: [String] = []
    private(set) var violations: [String] = []
    private var nextDomid: UInt32 = 1
    var libraryMessages: [XenLibraryMessage] = []

    init(program: [Instruction]) { self.program = program }

    /// The one domain alive, for assertions.
    var liveDomains: [Domain] { domains.values.sorted { $0.id.rawValue < $1.id.rawValue } }

    private func domain(_ id: XenDomainID, _ call: String) throws -> Domain {
        guard let d = domains[id.rawValue] else {
            violations.append("\(call) on missing \(id)")
            throw XenError.call(call, errno: ESRCH, message: nil)
        }
        return d
    }

    private func requireStopped(_ d: Domain, _ call: String) {
        if isRunning(d) {
            violations.append("\(call) while \(d.id) runs")
        }
    }

    func brctr(at index: Int) -> UInt64 {
        UInt64(program[0...index].dropFirst().filter(\.arrivedByBranch).count)
    }

    // MARK: Simulation

    private func isRunning(_ d: Domain) -> Bool { d.pauseCount == 0 && d.held == nil && d.shutdown == nil }

    private func hardwareBreakpointHit(_ d: Domain) -> Bool {
        let ip = program[d.index].ip
        return (0..<4).contains { slot in d.debugRegisters[7] & (1 << UInt64(slot * 2)) != 0 && d.debugRegisters[slot] == ip }
    }

    /// Execute the instruction at `index`; false when the run ended.
    private func execute(_ d: Domain) -> Bool {
        if d.index + 1 >= program.count {
            d.shutdown = endReason
            return false
        }
        d.index += 1
        return true
    }

    /// Polls left before the fake declares the backend stuck (a test must fail, not hang).
    var pollBudget = 20_000

    /// Run a running domain to its next stop.
    private func settle(_ d: Domain) {
        onPoll?()
        pollBudget -= 1
        if pollBudget == 0 {
            violations.append("no progress after 20000 polls: the backend is stuck")
            d.shutdown = .crash
        }
        guard isRunning(d), !stalled else { return }
        let ip = { self.program[d.index].ip }
        if d.hvm {
            guard d.monitorOpen else {
                // No monitor: the guest runs on; an int3 of ours would hit the guest itself.
                if d.singleStep { violations.append("HVM single-step without the monitor open") }
                while true {
                    if d.memory[ip()] == 0xCC {
                        violations.append("the guest executed tt's int3 at \(ip()) with no monitor")
                        return
                    }
                    guard execute(d) else { return }
                }
            }
            let stepping = d.singleStep
            while true {
                if d.memory[ip()] == 0xCC {
                    d.held = XenMonitorEvent(kind: .softwareBreakpoint(instructionLength: 1), vcpu: 0, ip: ip(), cx: program[d.index].cx)
                    d.heldTaken = false
                    return
                }
                guard execute(d) else { return }
                if stepping {
                    d.held = XenMonitorEvent(kind: .singleStep, vcpu: 0, ip: ip(), cx: program[d.index].cx)
                    d.heldTaken = false
                    return
                }
            }
        } else {
            let stepping = d.flags & (1 << 8) != 0
            var budget = d.debugging ? nil : freeRunLimit
            while true {
                if let b = budget {
                    if b == 0 { return }  // a slow guest: the rest at the next look
                    budget = b - 1
                }
                if d.swallowedInt3 {
                    // The guest's handler never ran: it dies, as Linux does.
                    d.shutdown = .crash
                    return
                }
                if program[d.index].guestInt3 && d.debugging {
                    d.index += 1  // a trap: the ip is after the int3
                    d.debugEvent = 3
                    d.pauseCount += 1
                    return
                }
                if hardwareBreakpointHit(d) {
                    if !d.debugging { violations.append("debug trap in \(d.id) without debugging on") }
                    d.pauseCount += 1  // domain_pause_for_debugger
                    return
                }
                guard execute(d) else { return }
                if stepping {
                    d.pauseCount += 1
                    return
                }
            }
        }
    }

    // MARK: XenToolstack

    func createDomain(configJSON: String) throws -> XenDomainID {
        createdConfigs.append(configJSON)
        let object = try JSONSerialization.jsonObject(with: Data(configJSON.utf8)) as? [String: Any]
        let cInfo = object?["c_info"] as? [String: Any]
        guard let name = cInfo?["name"] as? String else { throw XenError.invalidConfig("no c_info.name") }
        if domains.values.contains(where: { $0.name == name }) {
            violations.append("second domain named \(name)")
        }
        let id = XenDomainID(nextDomid)
        nextDomid += 1
        domains[id.rawValue] = Domain(id: id, name: name, hvm: cInfo?["type"] as? String == "hvm")
        return id
    }

    func pauseDomain(_ id: XenDomainID) throws {
        let d = try domain(id, "pause")
        settle(d)  // whatever ran before the pause happened
        d.pauseCount += 1
    }

    func unpauseDomain(_ id: XenDomainID) throws {
        let d = try domain(id, "unpause")
        guard d.pauseCount > 0 else {
            violations.append("unpause of \(id), which is not paused")
            throw XenError.call("libxl_domain_unpause", errno: EINVAL, message: nil)
        }
        d.pauseCount -= 1
    }

    func destroyDomain(_ id: XenDomainID) throws {
        _ = try domain(id, "destroy")
        domains[id.rawValue] = nil
        destroyed.append(id)
    }

    func findDomain(named name: String) throws -> XenDomainID? {
        domains.values.first { $0.name == name }?.id
    }

    func domainInfo(_ id: XenDomainID) throws -> XenDomainInfo? {
        guard let d = domains[id.rawValue] else { return nil }
        settle(d)
        return XenDomainInfo(domid: id, isHVM: d.hvm, isPaused: d.pauseCount > 0, isRunning: isRunning(d),
                             isDebugged: d.debugging, shutdown: d.shutdown)
    }

    func guestWidth(_ id: XenDomainID) throws -> Int { 8 }

    func vcpuState(_ id: XenDomainID, vcpu: UInt32) throws -> XenVCPUState {
        let d = try domain(id, "vcpuState")
        requireStopped(d, "xc_vcpu_getcontext")
        let i = program[d.index]
        return XenVCPUState(ip: i.ip, cx: i.cx, flags: d.flags, debugRegisters: d.debugRegisters, width: 8,
                            registers: [RegisterValue(name: "rip", value: i.ip), RegisterValue(name: "rcx", value: i.cx)])
    }

    func updateVCPU(_ id: XenDomainID, vcpu: UInt32, flags: UInt64?, debugRegisters: [UInt64]?) throws {
        let d = try domain(id, "updateVCPU")
        requireStopped(d, "xc_vcpu_setcontext")
        if let flags { d.flags = flags }
        if let debugRegisters { d.debugRegisters = debugRegisters }
    }

    func readGuest(_ id: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, count: Int) throws -> [UInt8] {
        let d = try domain(id, "readGuest")
        requireStopped(d, "read guest memory")
        let int3s = Set(program.filter(\.guestInt3).map(\.ip))
        return (0..<UInt64(count)).map { d.memory[virtualAddress + $0] ?? (int3s.contains(virtualAddress + $0) ? 0xCC : 0x90) }
    }

    func writeGuest(_ id: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, bytes: [UInt8]) throws {
        let d = try domain(id, "writeGuest")
        requireStopped(d, "write guest memory")
        for (i, b) in bytes.enumerated() { d.memory[virtualAddress + UInt64(i)] = b }
    }

    func monitorOpen(_ id: XenDomainID) throws {
        let d = try domain(id, "monitorOpen")
        guard d.hvm else { throw XenError.call("xc_monitor_enable", errno: EOPNOTSUPP, message: nil) }
        d.monitorOpen = true
    }

    func monitorNextEvent(_ id: XenDomainID, timeoutMilliseconds: Int32) throws -> XenMonitorEvent? {
        let d = try domain(id, "monitorNextEvent")
        guard d.monitorOpen else { violations.append("monitorNextEvent with the monitor closed"); return nil }
        settle(d)
        guard let held = d.held, !d.heldTaken else { return nil }
        d.heldTaken = true
        return held
    }

    func monitorResume(_ id: XenDomainID, event: XenMonitorEvent, toggleSingleStep: Bool) throws {
        let d = try domain(id, "monitorResume")
        guard d.held == event, d.heldTaken else {
            violations.append("response to a request not taken")
            return
        }
        d.held = nil
        if toggleSingleStep { d.singleStep.toggle() }
    }

    func monitorClose(_ id: XenDomainID) {
        guard let d = domains[id.rawValue] else { return }
        if d.held != nil { violations.append("monitor closed while a vCPU waits on a request") }
        d.monitorOpen = false
    }

    func setSingleStep(_ id: XenDomainID, vcpu: UInt32, on: Bool) throws {
        let d = try domain(id, "setSingleStep")
        guard d.hvm else { throw XenError.call("xc_domain_debug_control", errno: EINVAL, message: nil) }
        d.singleStep = on
    }

    func setDebugging(_ id: XenDomainID, on: Bool) throws {
        try domain(id, "setDebugging").debugging = on
    }

    func takeDebugEvent(_ id: XenDomainID) throws -> UInt32? {
        let d = try domain(id, "gdbsx_domstatus")
        defer { d.debugEvent = nil }
        if d.debugEvent == 3 { d.swallowedInt3 = true }  // until the ip goes back on it
        return d.debugEvent
    }

    func setInstructionPointer(_ id: XenDomainID, vcpu: UInt32, ip: UInt64) throws {
        let d = try domain(id, "setInstructionPointer")
        requireStopped(d, "xc_vcpu_setcontext")
        guard let index = program.indices.last(where: { $0 <= d.index && program[$0].ip == ip }) else {
            violations.append("ip set to 0x\(String(ip, radix: 16)), not on the guest's path")
            return
        }
        if program[index].guestInt3 { d.swallowedInt3 = false }
        d.index = index
    }

    func timeTravelAddProbe(_ id: XenDomainID, address: UInt64) throws {
        guard hasTimeTravel else { violations.append("xc_ttd call on stock Xen"); throw XenError.noTimeTravel(detail: "") }
        try domain(id, "add probe").probes.insert(address)
    }

    func timeTravelRemoveProbe(_ id: XenDomainID, address: UInt64) throws {
        guard hasTimeTravel else { violations.append("xc_ttd call on stock Xen"); throw XenError.noTimeTravel(detail: "") }
        try domain(id, "remove probe").probes.remove(address)
    }

    func timeTravelSetBranchTracing(_ id: XenDomainID, on: Bool) throws {
        guard hasTimeTravel else { violations.append("xc_ttd call on stock Xen"); throw XenError.noTimeTravel(detail: "") }
        try domain(id, "bts").branchTracing = on
    }

    func timeTravelBranchCounter(_ id: XenDomainID, vcpu: UInt32) throws -> UInt64 {
        guard hasTimeTravel else { violations.append("xc_ttd call on stock Xen"); throw XenError.noTimeTravel(detail: "") }
        let d = try domain(id, "brctr")
        return brctr(at: d.index)
    }

    /// vmtrace: the bytes the "CPU" writes into the trace buffer once the guest has run
    /// with tracing on (nil: no vmtrace on this fake host).
    var vmtraceStream: [UInt8]?
    private var vmtraceEnabledAt: Int?
    private(set) var vmtraceControl: UInt64?
    private var traceBuffer: FakeTraceBuffer?

    func vmtraceEnable(_ id: XenDomainID, vcpu: UInt32, on: Bool) throws {
        guard vmtraceStream != nil else { throw XenError.call("xc_vmtrace_enable", errno: EOPNOTSUPP, message: nil) }
        let d = try domain(id, "vmtraceEnable")
        requireStopped(d, "xc_vmtrace_enable")
        vmtraceEnabledAt = on ? d.index : nil
    }

    func vmtraceSetOption(_ id: XenDomainID, vcpu: UInt32, key: UInt64, value: UInt64) throws {
        guard key == 0x570, value & 1 == 0 else {
            violations.append("vmtrace option \(key)=\(value) Xen would refuse")
            throw XenError.call("xc_vmtrace_set_option", errno: EINVAL, message: nil)
        }
        vmtraceControl = value
    }

    /// When set, successive output positions are taken from here (ring-buffer tests).
    var scriptedVmtracePositions: [UInt64] = []
    var vmtraceBufferSize = 65536

    func vmtraceOutputPosition(_ id: XenDomainID, vcpu: UInt32) throws -> UInt64 {
        let d = try domain(id, "vmtraceOutputPosition")
        if !scriptedVmtracePositions.isEmpty { return scriptedVmtracePositions.removeFirst() }
        guard let stream = vmtraceStream, let start = vmtraceEnabledAt else { return 0 }
        return d.index > start ? UInt64(stream.count) : 0
    }

    func vmtraceMapBuffer(_ id: XenDomainID, vcpu: UInt32) throws -> XenTraceBuffer {
        guard let stream = vmtraceStream else { throw XenError.call("xenforeignmemory_map_resource", errno: EOPNOTSUPP, message: nil) }
        let buffer = FakeTraceBuffer(size: vmtraceBufferSize, content: stream)
        traceBuffer = buffer
        return buffer
    }
}

final class FakeTraceBuffer: XenTraceBuffer {
    let storage: UnsafeMutableRawBufferPointer
    init(size: Int, content: [UInt8]) {
        storage = .allocate(byteCount: size, alignment: 4096)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        content.withUnsafeBytes { storage.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: content.count) }
    }
    deinit { storage.deallocate() }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(storage) }
}

/// A clock that never sleeps: time moves only when the backend waits.
final class FakeClock: XenClock {
    private(set) var time = 0.0
    func now() -> Double { time }
    func sleep(seconds: Double) { time += max(seconds, 0.001) }
}
