import TTSystem
import XenTT

// The C boundary of the Xen backend: one method per libxl / libxenctrl /
// xenforeignmemory / xenevtchn operation tt needs. `LibXenToolstack` is the real
// one; the tests drive the backend's logic through a fake. No C type appears here.

/// A Xen domain id.
public struct XenDomainID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ value: UInt32) { rawValue = value }
    public var description: String { "domain \(rawValue)" }
}

/// Why a domain shut down (SHUTDOWN_* of xen/sched.h).
public enum XenShutdownReason: Equatable, Sendable, CustomStringConvertible {
    case poweroff, reboot, suspend, crash, watchdog, softReset
    case other(UInt32)

    public init(code: UInt32) {
        switch code {
        case 0: self = .poweroff
        case 1: self = .reboot
        case 2: self = .suspend
        case 3: self = .crash
        case 4: self = .watchdog
        case 5: self = .softReset
        default: self = .other(code)
        }
    }

    public var description: String {
        switch self {
        case .poweroff: return "poweroff"
        case .reboot: return "reboot"
        case .suspend: return "suspend"
        case .crash: return "crash"
        case .watchdog: return "watchdog"
        case .softReset: return "soft reset"
        case .other(let code): return "shutdown code \(code)"
        }
    }
}

/// A domain's state as the hypervisor reports it (xc_domain_getinfolist flags).
public struct XenDomainInfo: Equatable, Sendable {
    public var domid: XenDomainID
    public var isHVM: Bool
    public var isPaused: Bool
    public var isRunning: Bool
    public var isBlocked: Bool
    public var isDying: Bool
    public var isDebugged: Bool
    /// Set when the domain has shut down (a crash is `.crash`).
    public var shutdown: XenShutdownReason?
    public var onlineVCPUs: UInt32

    public init(domid: XenDomainID, isHVM: Bool = false, isPaused: Bool = false, isRunning: Bool = false,
                isBlocked: Bool = false, isDying: Bool = false, isDebugged: Bool = false,
                shutdown: XenShutdownReason? = nil, onlineVCPUs: UInt32 = 1) {
        self.domid = domid; self.isHVM = isHVM; self.isPaused = isPaused; self.isRunning = isRunning
        self.isBlocked = isBlocked; self.isDying = isDying; self.isDebugged = isDebugged
        self.shutdown = shutdown; self.onlineVCPUs = onlineVCPUs
    }

    /// Alive and not paused: running or blocked (waiting for an event) both count.
    public var isActive: Bool { !isPaused && shutdown == nil && !isDying }
}

/// The registers tt reads from a vCPU context, widened to 64 bits.
public struct XenVCPUState: Equatable, Sendable {
    public var ip: UInt64
    public var cx: UInt64
    public var flags: UInt64
    /// DR0–DR7 (DR4/DR5 unused).
    public var debugRegisters: [UInt64]
    /// Guest word size in bytes: 4 or 8.
    public var width: Int
    /// All general-purpose registers by their width's names (eax.. or rax..).
    public var registers: [RegisterValue]

    public init(ip: UInt64, cx: UInt64, flags: UInt64 = 0x2, debugRegisters: [UInt64] = Array(repeating: 0, count: 8),
                width: Int = 8, registers: [RegisterValue] = []) {
        self.ip = ip; self.cx = cx; self.flags = flags; self.debugRegisters = debugRegisters
        self.width = width; self.registers = registers
    }
}

/// A monitor (vm_event) request from an HVM guest's vCPU, which is paused until answered.
public struct XenMonitorEvent: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// The vCPU hit an int3; `instructionLength` is the int3's length (for reinjection).
        case softwareBreakpoint(instructionLength: UInt32)
        case singleStep
        case debugException
        case other(reason: UInt32)
    }
    public var kind: Kind
    public var vcpu: UInt32
    public var ip: UInt64
    public var cx: UInt64

    public init(kind: Kind, vcpu: UInt32, ip: UInt64, cx: UInt64) {
        self.kind = kind; self.vcpu = vcpu; self.ip = ip; self.cx = cx
    }
}

/// A vmtrace (Intel PT) output buffer mapped into tt; valid until released.
public protocol XenTraceBuffer: AnyObject {
    var bytes: UnsafeRawBufferPointer { get }
}

/// Every C operation of the Xen backend. Calls are made from one thread.
public protocol XenToolstack: AnyObject {
    /// What the libraries logged through tt's logger (never printed by them).
    var libraryMessages: [XenLibraryMessage] { get }

    // Domain lifecycle (libxl).
    /// Create a domain from libxl's JSON domain configuration; it is left paused.
    func createDomain(configJSON: String) throws -> XenDomainID
    func pauseDomain(_ domid: XenDomainID) throws
    func unpauseDomain(_ domid: XenDomainID) throws
    /// Destroy the domain and its devices and device models.
    func destroyDomain(_ domid: XenDomainID) throws
    func findDomain(named name: String) throws -> XenDomainID?
    /// nil when the domain no longer exists.
    func domainInfo(_ domid: XenDomainID) throws -> XenDomainInfo?

    // vCPU state (libxenctrl).
    /// Guest word size in bytes: 4 or 8 (xc_domain_get_guest_width).
    func guestWidth(_ domid: XenDomainID) throws -> Int
    func vcpuState(_ domid: XenDomainID, vcpu: UInt32) throws -> XenVCPUState
    /// Write back flags (e.g. the trap flag) and debug registers; nil leaves a field as it is.
    func updateVCPU(_ domid: XenDomainID, vcpu: UInt32, flags: UInt64?, debugRegisters: [UInt64]?) throws

    // Guest memory (xc_translate_foreign_address + xenforeignmemory_map).
    func readGuest(_ domid: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, count: Int) throws -> [UInt8]
    func writeGuest(_ domid: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, bytes: [UInt8]) throws

    // HVM: monitor (vm_event) over an event channel.
    /// Enable the monitor ring and its event channel, software-breakpoint and single-step events.
    func monitorOpen(_ domid: XenDomainID) throws
    /// The next request, or nil after `timeoutMilliseconds` without one.
    func monitorNextEvent(_ domid: XenDomainID, timeoutMilliseconds: Int32) throws -> XenMonitorEvent?
    /// Answer a request, letting its vCPU go; optionally toggling single-step for it.
    func monitorResume(_ domid: XenDomainID, event: XenMonitorEvent, toggleSingleStep: Bool) throws
    func monitorClose(_ domid: XenDomainID)
    /// MTF single-step of one vCPU on or off (HVM, Intel only).
    func setSingleStep(_ domid: XenDomainID, vcpu: UInt32, on: Bool) throws

    // PV: the debugger path. With debugging on, #DB/#BP pause the domain for tt.
    func setDebugging(_ domid: XenDomainID, on: Bool) throws

    // The time-travel hypervisor's calls (`XenTimeTravelCalls`); absent on stock Xen.
    var hasTimeTravel: Bool { get }
    func timeTravelAddProbe(_ domid: XenDomainID, address: UInt64) throws
    func timeTravelRemoveProbe(_ domid: XenDomainID, address: UInt64) throws
    func timeTravelSetBranchTracing(_ domid: XenDomainID, on: Bool) throws
    func timeTravelBranchCounter(_ domid: XenDomainID, vcpu: UInt32) throws -> UInt64

    // vmtrace (Intel PT), HVM with vmtrace_buf_kb set at creation.
    func vmtraceEnable(_ domid: XenDomainID, vcpu: UInt32, on: Bool) throws
    func vmtraceSetOption(_ domid: XenDomainID, vcpu: UInt32, key: UInt64, value: UInt64) throws
    func vmtraceOutputPosition(_ domid: XenDomainID, vcpu: UInt32) throws -> UInt64
    func vmtraceMapBuffer(_ domid: XenDomainID, vcpu: UInt32) throws -> XenTraceBuffer
}

/// Errors of the Xen backend; each knows its exit status.
public enum XenError: Error, ExitStatusProviding, CustomStringConvertible, Equatable {
    /// No hypervisor (or not dom0, not root): Xen sessions cannot run on this machine.
    case unavailable(reason: String, advice: String)
    /// Stock Xen: no record/replay.
    case noTimeTravel(detail: String)
    /// A library call failed.
    case call(String, errno: Int32, message: String?)
    case domainNotFound(String)
    case domainExists(String, XenDomainID)
    case domainEnded(XenDomainID, XenShutdownReason?)
    case timedOut(String)
    case unsupported(String)
    case invalidConfig(String)
    /// A signal or `interrupt()` arrived while tt waited for a step.
    case interrupted(String)

    public var exitStatus: Int32 {
        switch self {
        case .unavailable, .noTimeTravel, .unsupported: return ExitStatus.unavailable
        case .invalidConfig: return ExitStatus.dataError
        case .domainNotFound: return ExitStatus.noInput
        // The signal that interrupted (143 for SIGTERM), not always SIGINT's 130.
        case .interrupted: return SignalWatcher.exitStatus(SignalWatcher.pending != 0 ? SignalWatcher.pending : SIGINT)
        default: return ExitStatus.failure
        }
    }

    public var description: String {
        switch self {
        case .unavailable(let reason, let advice):
            return "Xen backend unavailable: \(reason); \(advice)"
        case .noTimeTravel(let detail):
            return "Xen backend unavailable: \(detail); use --backend qemu"
        case .call(let name, let errno, let message):
            let text = errno > 0 ? String(cString: strerrorText(errno)) : "failed"
            return "\(name): \(text)\(message.map { " (\($0))" } ?? "")"
        case .domainNotFound(let name): return "no Xen domain named '\(name)'"
        case .domainExists(let name, let domid): return "a Xen domain named '\(name)' is already running (\(domid))"
        case .domainEnded(let domid, let reason):
            if reason == .crash { return "\(domid) crashed" }
            return "\(domid) ended\(reason.map { " (\($0))" } ?? "")"
        case .timedOut(let what): return "timed out \(what)"
        case .unsupported(let what): return what
        case .invalidConfig(let what): return "domain configuration: \(what)"
        case .interrupted(let what): return "interrupted \(what)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
private func strerrorText(_ code: Int32) -> UnsafeMutablePointer<CChar> { strerror(code) }
