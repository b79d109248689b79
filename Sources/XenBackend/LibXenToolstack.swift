import CXen
import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// The real C boundary: libxl for domain lifecycle, libxenctrl for vCPUs, monitor and
/// vmtrace, xenforeignmemory for guest memory and trace buffers, xenevtchn for the
/// monitor ring's event channel. Every handle is opened with tt's logger.
public final class LibXenToolstack: XenToolstack {
    private let log: XenLibraryLog
    private let xc: XenControlInterface
    private let libxl: OpaquePointer
    private let foreignMemory: OpaquePointer
    private let eventChannels: OpaquePointer
    private let timeTravel: XenTimeTravelCalls?
    private var monitors: [XenDomainID: MonitorRing] = [:]

    /// Open every handle. On a machine that cannot run Xen sessions this throws
    /// `XenError.unavailable` with the reason (from errno and the files under /sys and
    /// /proc), and the libraries print nothing.
    public init() throws {
        let log = XenLibraryLog()
        self.log = log
        do {
            xc = try XenControlInterface(log: log)
        } catch let failure as XenOpenFailure {
            throw LibXenToolstack.unavailable(failure)
        }
        var ctx: OpaquePointer?
        // libxl crashes on a NULL logger: ours is always passed.
        let rc = libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, log.logger)
        guard rc == 0, let ctx else {
            throw XenError.call("libxl_ctx_alloc", errno: errno, message: log.lastError?.description)
        }
        libxl = ctx
        guard let fmem = xenforeignmemory_open(log.logger, 0) else {
            let e = errno
            libxl_ctx_free(ctx)
            throw XenError.call("xenforeignmemory_open", errno: e, message: log.lastError?.description)
        }
        foreignMemory = fmem
        guard let xce = xenevtchn_open(log.logger, 0) else {
            let e = errno
            xenforeignmemory_close(fmem)
            libxl_ctx_free(ctx)
            throw XenError.call("xenevtchn_open", errno: e, message: log.lastError?.description)
        }
        eventChannels = xce
        timeTravel = XenLibraries.libxenctrlFile.flatMap(XenTimeTravelCalls.init(libraryFile:))
    }

    deinit {
        for domid in Array(monitors.keys) { monitorClose(domid) }
        xenevtchn_close(eventChannels)
        xenforeignmemory_close(foreignMemory)
        libxl_ctx_free(libxl)
    }

    /// The one-line "cannot run here" error, from errno plus /sys/hypervisor/type and
    /// /proc/xen/capabilities.
    static func unavailable(_ failure: XenOpenFailure) -> XenError {
        let files = ProbeFiles(root: "/")
        let type = files.read("sys/hypervisor/type")?.trimmingWhitespace
        let privcmd = files.exists("dev/xen/privcmd") || files.exists("proc/xen/privcmd")
        let (why, advice) = XenHostProbe.explain(failure, privcmdPresent: privcmd, typeText: type)
        var detail = why
        if type == "xen", let caps = files.read("proc/xen/capabilities"), !caps.contains("control_d") {
            detail += "; this is a Xen guest (domU), not dom0"
        }
        return .unavailable(reason: detail, advice: advice + "; use --backend qemu")
    }

    public var libraryMessages: [XenLibraryMessage] { log.messages }

    private func fail(_ call: String, _ code: Int32 = errno) -> XenError {
        .call(call, errno: code, message: log.lastError?.description)
    }

    // MARK: Domain lifecycle

    public func createDomain(configJSON: String) throws -> XenDomainID {
        var config = libxl_domain_config()
        libxl_domain_config_init(&config)
        defer { libxl_domain_config_dispose(&config) }
        guard libxl_domain_config_from_json(libxl, &config, configJSON) == 0 else {
            throw XenError.invalidConfig("libxl rejected the JSON configuration\(log.lastError.map { ": \($0)" } ?? "")")
        }
        var domid: UInt32 = 0
        // Synchronous (NULL ao_how); libxl leaves the new domain paused.
        guard libxl_domain_create_new(libxl, &config, &domid, nil, nil) == 0 else {
            throw fail("libxl_domain_create_new")
        }
        return XenDomainID(domid)
    }

    public func pauseDomain(_ domid: XenDomainID) throws {
        guard libxl_domain_pause(libxl, domid.rawValue, nil) == 0 else { throw fail("libxl_domain_pause") }
    }

    public func unpauseDomain(_ domid: XenDomainID) throws {
        guard libxl_domain_unpause(libxl, domid.rawValue, nil) == 0 else { throw fail("libxl_domain_unpause") }
    }

    public func destroyDomain(_ domid: XenDomainID) throws {
        monitorClose(domid)
        guard libxl_domain_destroy(libxl, domid.rawValue, nil) == 0 else { throw fail("libxl_domain_destroy") }
    }

    public func findDomain(named name: String) throws -> XenDomainID? {
        var domid: UInt32 = 0
        // libxl_name_to_domid returns ERROR_INVAL when no domain has the name.
        guard libxl_name_to_domid(libxl, name, &domid) == 0 else { return nil }
        return XenDomainID(domid)
    }

    public func domainInfo(_ domid: XenDomainID) throws -> XenDomainInfo? {
        var info = xc_domaininfo_t()
        let n = xc_domain_getinfolist(xc.handle, domid.rawValue, 1, &info)
        guard n >= 0 else { throw fail("xc_domain_getinfolist") }
        // getinfolist returns the first domain at or after domid: check it is ours.
        guard n == 1, UInt32(info.domain) == domid.rawValue else { return nil }
        let flags = info.flags
        func has(_ bit: Int32) -> Bool { flags & (UInt32(1) << UInt32(bit)) != 0 }
        let isShutdown = has(_XEN_DOMINF_shutdown)
        return XenDomainInfo(
            domid: domid, isHVM: has(_XEN_DOMINF_hvm_guest), isPaused: has(_XEN_DOMINF_paused),
            isRunning: has(_XEN_DOMINF_running), isBlocked: has(_XEN_DOMINF_blocked),
            isDying: has(_XEN_DOMINF_dying), isDebugged: has(_XEN_DOMINF_debugged),
            shutdown: isShutdown ? XenShutdownReason(code: (flags >> UInt32(XEN_DOMINF_shutdownshift)) & UInt32(XEN_DOMINF_shutdownmask)) : nil,
            onlineVCPUs: info.nr_online_vcpus)
    }

    // MARK: vCPU state

    public func guestWidth(_ domid: XenDomainID) throws -> Int {
        var width: UInt32 = 0
        guard xc_domain_get_guest_width(xc.handle, domid.rawValue, &width) == 0 else {
            throw fail("xc_domain_get_guest_width")
        }
        return Int(width)
    }

    /// The vCPU's context and which layout xc_vcpu_getcontext filled it in: the 32-bit one
    /// only for 32-bit PV guests (HVM contexts are always in the 64-bit layout, whatever
    /// the guest's mode).
    private func vcpuContext(_ domid: XenDomainID, vcpu: UInt32) throws -> (is32: Bool, ctx: vcpu_guest_context_any_t) {
        guard let info = try domainInfo(domid) else { throw XenError.domainNotFound("\(domid)") }
        let is32 = try !info.isHVM && guestWidth(domid) == 4
        var ctx = vcpu_guest_context_any_t()
        guard xc_vcpu_getcontext(xc.handle, domid.rawValue, vcpu, &ctx) == 0 else { throw fail("xc_vcpu_getcontext") }
        return (is32, ctx)
    }

    public func vcpuState(_ domid: XenDomainID, vcpu: UInt32) throws -> XenVCPUState {
        let (is32, ctx) = try vcpuContext(domid, vcpu: vcpu)
        if is32 {
            let r = ctx.x32.user_regs
            let dr = withUnsafeBytes(of: ctx.x32.debugreg) { Array($0.bindMemory(to: UInt32.self)).map(UInt64.init) }
            let named: [(String, UInt32)] = [("eax", r.eax), ("ebx", r.ebx), ("ecx", r.ecx), ("edx", r.edx),
                                             ("esi", r.esi), ("edi", r.edi), ("ebp", r.ebp), ("esp", r.esp),
                                             ("eip", r.eip), ("eflags", r.eflags)]
            return XenVCPUState(ip: UInt64(r.eip), cx: UInt64(r.ecx), flags: UInt64(r.eflags), debugRegisters: dr,
                                width: 4, registers: named.map { RegisterValue(name: $0.0, value: UInt64($0.1)) })
        }
        let r = ctx.x64.user_regs
        let dr = withUnsafeBytes(of: ctx.x64.debugreg) { Array($0.bindMemory(to: UInt64.self)) }
        // HVM: the ip tt uses (for memory, breakpoints, positions) is the linear address:
        // outside 64-bit code it includes the CS base (real mode: CS << 4).
        var ip = r.rip
        var segment: [(String, UInt64)] = []
        if try domainInfo(domid)?.isHVM == true {
            var cpu = hvm_hw_cpu()
            guard xc_domain_hvm_getcontext_partial(xc.handle, domid.rawValue, 2 /* HVM_SAVE_CODE(CPU) */, UInt16(vcpu),
                                                   &cpu, UInt32(MemoryLayout<hvm_hw_cpu>.size)) == 0 else {
                throw fail("xc_domain_hvm_getcontext_partial")
            }
            ip = XenAddressing.linearIP(rip: r.rip, csBase: cpu.cs_base, csAttributes: cpu.cs_arbytes, efer: cpu.msr_efer)
            segment = [("cs", UInt64(cpu.cs_sel)), ("cs_base", cpu.cs_base), ("cr0", cpu.cr0)]
        }
        let named: [(String, UInt64)] = segment + [("rax", r.rax), ("rbx", r.rbx), ("rcx", r.rcx), ("rdx", r.rdx),
                                         ("rsi", r.rsi), ("rdi", r.rdi), ("rbp", r.rbp), ("rsp", r.rsp),
                                         ("r8", r.r8), ("r9", r.r9), ("r10", r.r10), ("r11", r.r11),
                                         ("r12", r.r12), ("r13", r.r13), ("r14", r.r14), ("r15", r.r15),
                                         ("rip", r.rip), ("rflags", r.rflags)]
        return XenVCPUState(ip: ip, cx: r.rcx, flags: r.rflags, debugRegisters: dr, width: 8,
                            registers: named.map { RegisterValue(name: $0.0, value: $0.1) })
    }

    public func updateVCPU(_ domid: XenDomainID, vcpu: UInt32, flags: UInt64?, debugRegisters: [UInt64]?) throws {
        let (is32, current) = try vcpuContext(domid, vcpu: vcpu)
        var ctx = current
        if is32 {
            if let flags { ctx.x32.user_regs.eflags = UInt32(truncatingIfNeeded: flags) }
            if let debugRegisters {
                withUnsafeMutableBytes(of: &ctx.x32.debugreg) { raw in
                    for (i, v) in debugRegisters.prefix(8).enumerated() {
                        raw.storeBytes(of: UInt32(truncatingIfNeeded: v), toByteOffset: i * 4, as: UInt32.self)
                    }
                }
            }
        } else {
            if let flags { ctx.x64.user_regs.rflags = flags }
            if let debugRegisters {
                withUnsafeMutableBytes(of: &ctx.x64.debugreg) { raw in
                    for (i, v) in debugRegisters.prefix(8).enumerated() {
                        raw.storeBytes(of: v, toByteOffset: i * 8, as: UInt64.self)
                    }
                }
            }
        }
        guard xc_vcpu_setcontext(xc.handle, domid.rawValue, vcpu, &ctx) == 0 else { throw fail("xc_vcpu_setcontext") }
    }

    // MARK: Guest memory

    /// Map the guest pages under `count` bytes from `address` one at a time; `body` gets
    /// each page's part of the range and how many bytes of the range came before it.
    private func withGuestPages(_ domid: XenDomainID, vcpu: UInt32, address start: UInt64, count: Int, writable: Bool,
                                _ body: (_ chunk: UnsafeMutableRawBufferPointer, _ done: Int) -> Void) throws {
        var done = 0
        var address = start
        while done < count {
            let offset = Int(address & 0xfff)
            let n = min(count - done, 4096 - offset)
            let frame = xc_translate_foreign_address(xc.handle, domid.rawValue, Int32(vcpu), address)
            guard frame != 0 else {
                throw XenError.call("xc_translate_foreign_address(0x\(String(address, radix: 16)))", errno: errno,
                                    message: log.lastError?.description)
            }
            var pfn = xen_pfn_t(frame)
            var err: Int32 = 0
            let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
            guard let page = xenforeignmemory_map(foreignMemory, domid.rawValue, prot, 1, &pfn, &err), err == 0 else {
                throw fail("xenforeignmemory_map", err != 0 ? -err : errno)
            }
            body(UnsafeMutableRawBufferPointer(start: page + offset, count: n), done)
            xenforeignmemory_unmap(foreignMemory, page, 1)
            done += n
            address &+= UInt64(n)
        }
    }

    public func readGuest(_ domid: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        try withGuestPages(domid, vcpu: vcpu, address: virtualAddress, count: count, writable: false) { chunk, _ in
            out.append(contentsOf: chunk)
        }
        return out
    }

    public func writeGuest(_ domid: XenDomainID, vcpu: UInt32, virtualAddress: UInt64, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { source in
            try withGuestPages(domid, vcpu: vcpu, address: virtualAddress, count: bytes.count, writable: true) { chunk, done in
                chunk.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[done..<done + chunk.count]))
            }
        }
    }

    // MARK: Monitor (HVM)

    private final class MonitorRing {
        let page: UnsafeMutableRawPointer
        let ring: UnsafeMutablePointer<tt_vm_event_back_ring_t>
        let localPort: UInt32
        init(page: UnsafeMutableRawPointer, localPort: UInt32) {
            self.page = page
            self.localPort = localPort
            ring = .allocate(capacity: 1)
            tt_vm_event_back_ring_init(ring, page, 4096)
        }
        deinit { ring.deallocate() }
    }

    public func monitorOpen(_ domid: XenDomainID) throws {
        guard monitors[domid] == nil else { return }
        // Requests and responses are laid out by the interface version: a hypervisor
        // speaking another one would misread every answer.
        let version = xc_vm_event_get_version(xc.handle)
        guard version == Int32(VM_EVENT_INTERFACE_VERSION) else {
            throw XenError.unsupported("the hypervisor's vm_event interface is version \(version), tt speaks \(VM_EVENT_INTERFACE_VERSION)")
        }
        var capabilities: UInt32 = 0
        guard xc_monitor_get_capabilities(xc.handle, domid.rawValue, &capabilities) == 0 else {
            throw fail("xc_monitor_get_capabilities")
        }
        guard capabilities & (1 << UInt32(VM_EVENT_REASON_SOFTWARE_BREAKPOINT)) != 0 else {
            throw XenError.unsupported("\(domid) offers no software-breakpoint monitor events (HVM guests only)")
        }
        guard capabilities & (1 << UInt32(VM_EVENT_REASON_SINGLESTEP)) != 0 else {
            throw XenError.unsupported("\(domid) offers no single-step monitor events (they need Intel VMX with MTF)")
        }
        var remotePort: UInt32 = 0
        guard let page = xc_monitor_enable(xc.handle, domid.rawValue, &remotePort) else {
            throw fail("xc_monitor_enable")
        }
        let local = xenevtchn_bind_interdomain(eventChannels, domid.rawValue, remotePort)
        guard local >= 0 else {
            let e = errno
            xc_monitor_disable(xc.handle, domid.rawValue)
            munmap(page, 4096)
            throw fail("xenevtchn_bind_interdomain", e)
        }
        monitors[domid] = MonitorRing(page: page, localPort: UInt32(local))
        guard xc_monitor_software_breakpoint(xc.handle, domid.rawValue, true) == 0 else {
            let e = errno
            monitorClose(domid)
            throw fail("xc_monitor_software_breakpoint", e)
        }
        guard xc_monitor_singlestep(xc.handle, domid.rawValue, true) == 0 else {
            let e = errno
            monitorClose(domid)
            throw fail("xc_monitor_singlestep", e)
        }
    }

    public func monitorNextEvent(_ domid: XenDomainID, timeoutMilliseconds: Int32) throws -> XenMonitorEvent? {
        guard let m = monitors[domid] else { throw XenError.unsupported("monitor not open on \(domid)") }
        if let event = takeRequest(m) { return event }
        var pfd = pollfd(fd: xenevtchn_fd(eventChannels), events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, timeoutMilliseconds)
        if ready < 0 {
            if errno == EINTR { return nil }
            throw fail("poll(event channel)")
        }
        if ready > 0 {
            let port = xenevtchn_pending(eventChannels)
            if port >= 0 { xenevtchn_unmask(eventChannels, UInt32(port)) }
        }
        return takeRequest(m)
    }

    private func takeRequest(_ m: MonitorRing) -> XenMonitorEvent? {
        guard tt_vm_event_unconsumed_requests(m.ring) != 0 else { return nil }
        var request = vm_event_request_t()
        tt_vm_event_get_request(m.ring, &request)
        if request.version != UInt32(VM_EVENT_INTERFACE_VERSION) {
            return XenMonitorEvent(kind: .other(reason: request.reason), vcpu: request.vcpu_id, ip: 0, cx: 0)
        }
        let regs = request.data.regs.x86
        let kind: XenMonitorEvent.Kind
        switch request.reason {
        case UInt32(VM_EVENT_REASON_SOFTWARE_BREAKPOINT):
            kind = .softwareBreakpoint(instructionLength: request.u.software_breakpoint.insn_length)
        case UInt32(VM_EVENT_REASON_SINGLESTEP): kind = .singleStep
        case UInt32(VM_EVENT_REASON_DEBUG_EXCEPTION): kind = .debugException
        default: kind = .other(reason: request.reason)
        }
        return XenMonitorEvent(kind: kind, vcpu: request.vcpu_id, ip: regs.rip, cx: regs.rcx)
    }

    public func monitorResume(_ domid: XenDomainID, event: XenMonitorEvent, toggleSingleStep: Bool) throws {
        guard let m = monitors[domid] else { throw XenError.unsupported("monitor not open on \(domid)") }
        var response = vm_event_response_t()
        response.version = UInt32(VM_EVENT_INTERFACE_VERSION)
        response.vcpu_id = event.vcpu
        // VCPU_PAUSED in the response is what lets Xen unpause the vCPU.
        response.flags = UInt32(VM_EVENT_FLAG_VCPU_PAUSED) | (toggleSingleStep ? UInt32(VM_EVENT_FLAG_TOGGLE_SINGLESTEP) : 0)
        switch event.kind {
        case .softwareBreakpoint: response.reason = UInt32(VM_EVENT_REASON_SOFTWARE_BREAKPOINT)
        case .singleStep: response.reason = UInt32(VM_EVENT_REASON_SINGLESTEP)
        case .debugException: response.reason = UInt32(VM_EVENT_REASON_DEBUG_EXCEPTION)
        case .other(let reason): response.reason = reason
        }
        tt_vm_event_put_response(m.ring, &response)
        guard xenevtchn_notify(eventChannels, m.localPort) == 0 else { throw fail("xenevtchn_notify") }
    }

    public func monitorClose(_ domid: XenDomainID) {
        guard let m = monitors.removeValue(forKey: domid) else { return }
        _ = xc_monitor_software_breakpoint(xc.handle, domid.rawValue, false)
        _ = xc_monitor_singlestep(xc.handle, domid.rawValue, false)
        _ = xc_monitor_disable(xc.handle, domid.rawValue)
        _ = xenevtchn_unbind(eventChannels, m.localPort)
        munmap(m.page, 4096)
    }

    public func setSingleStep(_ domid: XenDomainID, vcpu: UInt32, on: Bool) throws {
        let op = on ? UInt32(XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON) : UInt32(XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF)
        guard xc_domain_debug_control(xc.handle, domid.rawValue, op, vcpu) == 0 else {
            throw fail("xc_domain_debug_control")
        }
    }

    // MARK: PV debugger path

    public private(set) lazy var pvDebuggingAvailable: Bool? = xc.hypervisorHasGDBSX()
    public private(set) lazy var hypervisorVersion: String? = xc.hypervisorVersion()

    public func takeDebugEvent(_ domid: XenDomainID) throws -> UInt32? {
        switch xc.gdbsxDomainStatus(domid.rawValue) {
        case .failure(let code):
            throw fail("XEN_DOMCTL_gdbsx_domstatus", code)
        case .success(let domctl):
            let status = domctl.u.gdbsx_domstatus
            return status.vcpu_id == UInt32.max ? nil : status.vcpu_ev
        }
    }

    public func setInstructionPointer(_ domid: XenDomainID, vcpu: UInt32, ip: UInt64) throws {
        let (is32, current) = try vcpuContext(domid, vcpu: vcpu)
        var ctx = current
        if is32 { ctx.x32.user_regs.eip = UInt32(truncatingIfNeeded: ip) } else { ctx.x64.user_regs.rip = ip }
        guard xc_vcpu_setcontext(xc.handle, domid.rawValue, vcpu, &ctx) == 0 else { throw fail("xc_vcpu_setcontext") }
    }

    public func setDebugging(_ domid: XenDomainID, on: Bool) throws {
        guard xc_domain_setdebugging(xc.handle, domid.rawValue, on ? 1 : 0) == 0 else {
            throw fail("xc_domain_setdebugging")
        }
    }

    // MARK: Time travel

    public var hasTimeTravel: Bool { timeTravel != nil }

    private func ttd() throws -> XenTimeTravelCalls {
        guard let timeTravel else {
            throw XenError.noTimeTravel(detail: "the hypervisor has no time travel (libxenctrl lacks \(XenTimeTravelExtensions.addProbe))")
        }
        return timeTravel
    }

    public func timeTravelAddProbe(_ domid: XenDomainID, address: UInt64) throws {
        guard try ttd().addProbe(xc.handle, Int32(domid.rawValue), UInt(address)) == 0 else {
            throw fail(XenTimeTravelExtensions.addProbe)
        }
    }

    public func timeTravelRemoveProbe(_ domid: XenDomainID, address: UInt64) throws {
        guard try ttd().removeProbe(xc.handle, Int32(domid.rawValue), UInt(address)) == 0 else {
            throw fail(XenTimeTravelExtensions.removeProbe)
        }
    }

    public func timeTravelSetBranchTracing(_ domid: XenDomainID, on: Bool) throws {
        let calls = try ttd()
        guard let call = on ? calls.btsOn : calls.btsOff else {
            throw XenError.unsupported("this time-travel libxenctrl has no \(on ? XenTimeTravelExtensions.btsOn : XenTimeTravelExtensions.btsOff)")
        }
        guard call(xc.handle, Int32(domid.rawValue)) == 0 else {
            throw fail(on ? XenTimeTravelExtensions.btsOn : XenTimeTravelExtensions.btsOff)
        }
    }

    public func timeTravelBranchCounter(_ domid: XenDomainID, vcpu: UInt32) throws -> UInt64 {
        guard let call = try ttd().branchCounter else {
            throw XenError.unsupported("this time-travel libxenctrl has no \(XenTimeTravelExtensions.branchCounter)")
        }
        var value: UInt64 = 0
        guard call(xc.handle, Int32(domid.rawValue), Int32(vcpu), &value) == 0 else {
            throw fail(XenTimeTravelExtensions.branchCounter)
        }
        return value
    }

    // MARK: vmtrace

    public func vmtraceEnable(_ domid: XenDomainID, vcpu: UInt32, on: Bool) throws {
        let rc = on ? xc_vmtrace_enable(xc.handle, domid.rawValue, vcpu) : xc_vmtrace_disable(xc.handle, domid.rawValue, vcpu)
        guard rc == 0 else { throw fail(on ? "xc_vmtrace_enable" : "xc_vmtrace_disable") }
    }

    public func vmtraceSetOption(_ domid: XenDomainID, vcpu: UInt32, key: UInt64, value: UInt64) throws {
        guard xc_vmtrace_set_option(xc.handle, domid.rawValue, vcpu, key, value) == 0 else {
            throw fail("xc_vmtrace_set_option")
        }
    }

    public func vmtraceOutputPosition(_ domid: XenDomainID, vcpu: UInt32) throws -> UInt64 {
        var position: UInt64 = 0
        guard xc_vmtrace_output_position(xc.handle, domid.rawValue, vcpu, &position) == 0 else {
            throw fail("xc_vmtrace_output_position")
        }
        return position
    }

    private final class MappedTraceBuffer: XenTraceBuffer {
        let fmem: OpaquePointer
        let resource: OpaquePointer
        let bytes: UnsafeRawBufferPointer
        init(fmem: OpaquePointer, resource: OpaquePointer, bytes: UnsafeRawBufferPointer) {
            self.fmem = fmem; self.resource = resource; self.bytes = bytes
        }
        deinit { xenforeignmemory_unmap_resource(fmem, resource) }
    }

    public func vmtraceMapBuffer(_ domid: XenDomainID, vcpu: UInt32) throws -> XenTraceBuffer {
        var size = 0
        guard xenforeignmemory_resource_size(foreignMemory, domid_t(domid.rawValue), UInt32(XENMEM_resource_vmtrace_buf),
                                             vcpu, &size) == 0 else {
            throw fail("xenforeignmemory_resource_size")
        }
        var address: UnsafeMutableRawPointer?
        guard let resource = xenforeignmemory_map_resource(foreignMemory, domid_t(domid.rawValue),
                                                           UInt32(XENMEM_resource_vmtrace_buf), vcpu, 0,
                                                           UInt(size >> 12), &address, PROT_READ, 0),
              let address else {
            throw fail("xenforeignmemory_map_resource")
        }
        return MappedTraceBuffer(fmem: foreignMemory, resource: resource,
                                 bytes: UnsafeRawBufferPointer(start: address, count: size))
    }
}

/// The time-travel hypervisor's libxenctrl calls, looked up with dlsym. No header
/// declares them; these signatures are ASSUMPTIONS:
///   int xc_ttd_vmi_add_probe(xc_interface *, int domid, unsigned long address);     (as stackdb called it)
///   int xc_ttd_vmi_remove_probe(xc_interface *, int domid, unsigned long address);  (as stackdb called it)
///   int xc_ttd_set_bts_on(xc_interface *, int domid);                               (assumed)
///   int xc_ttd_set_bts_off(xc_interface *, int domid);                              (assumed)
///   int xc_ttd_get_brctr(xc_interface *, int domid, int vcpu, uint64_t *brctr);     (assumed; the original
///       carried brctr in a patched vCPU context instead)
/// Each returns 0 on success, as libxenctrl calls do.
struct XenTimeTravelCalls {
    typealias Probe = @convention(c) (OpaquePointer?, Int32, UInt) -> Int32
    typealias Switch = @convention(c) (OpaquePointer?, Int32) -> Int32
    typealias Counter = @convention(c) (OpaquePointer?, Int32, Int32, UnsafeMutablePointer<UInt64>?) -> Int32

    let addProbe: Probe
    let removeProbe: Probe
    let btsOn: Switch?
    let btsOff: Switch?
    let branchCounter: Counter?

    /// nil unless the library has at least the probe calls.
    init?(libraryFile: String) {
        func find(_ name: String) -> UnsafeMutableRawPointer? { XenLibraries.function(name, inLibrary: libraryFile) }
        guard let add = find(XenTimeTravelExtensions.addProbe),
              let remove = find(XenTimeTravelExtensions.removeProbe) else { return nil }
        addProbe = unsafeBitCast(add, to: Probe.self)
        removeProbe = unsafeBitCast(remove, to: Probe.self)
        btsOn = find(XenTimeTravelExtensions.btsOn).map { unsafeBitCast($0, to: Switch.self) }
        btsOff = find(XenTimeTravelExtensions.btsOff).map { unsafeBitCast($0, to: Switch.self) }
        branchCounter = find(XenTimeTravelExtensions.branchCounter).map { unsafeBitCast($0, to: Counter.self) }
    }
}
