import CXen
#if canImport(Glibc)
import Glibc
#endif

/// Facts about the Xen C libraries this process has loaded, found at run time
/// (dladdr/dlsym), never from the headers we were built against alone.
enum XenLibraries {
    /// The file a loaded function comes from, symlinks resolved
    /// (e.g. /usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17.0).
    static func loadedFile(containing symbol: String) -> String? {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0) /* RTLD_DEFAULT */, symbol) else {
            return nil
        }
        var info = tt_dl_info()
        guard tt_dladdr(address, &info) != 0, let name = info.dli_fname else { return nil }
        let path = String(cString: name)
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The version in a shared object's file name: "libxenctrl.so.4.17.0" -> "4.17.0".
    static func version(fromLibraryFile path: String) -> String? {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        let marker = Array(".so.".utf8)
        let bytes = Array(file.utf8)
        guard bytes.count > marker.count else { return nil }
        for start in 0...(bytes.count - marker.count) where Array(bytes[start..<start + marker.count]) == marker {
            let version = bytes[(start + marker.count)...]
            return version.isEmpty ? nil : String(decoding: version, as: UTF8.self)
        }
        return nil
    }

    /// Whether the loaded library `file` exports `symbol`.
    static func library(_ file: String, exports symbol: String) -> Bool {
        function(symbol, inLibrary: file) != nil
    }

    /// The address of `symbol` in the loaded library `file`, for calling a function
    /// whose declaration no public header has (the time-travel extensions). Looked up
    /// in that library only (RTLD_NOLOAD: nothing new is loaded), so a same-named
    /// function elsewhere in the process cannot fake a time-travel hypervisor.
    static func function(_ symbol: String, inLibrary file: String) -> UnsafeMutableRawPointer? {
        guard let handle = dlopen(file, RTLD_LAZY | RTLD_NOLOAD) else { return nil }
        // The handle is left open on purpose: the returned address must stay valid,
        // and libxenctrl is linked into tt anyway (dlclose would only drop a reference).
        return dlsym(handle, symbol)
    }

    static var libxenctrlFile: String? { loadedFile(containing: "xc_interface_open") }
    static var libxlFile: String? { loadedFile(containing: "libxl_ctx_alloc") }
}

/// Why a Xen handle could not be opened: the errno plus the library's own message,
/// which tt's logger caught instead of letting it reach stderr.
struct XenOpenFailure: Error, Equatable {
    let call: String
    let errno: Int32
    let libraryMessage: String?
}

/// A libxenctrl handle opened with tt's logger (never NULL: the library would
/// print to stderr, and libxl crashes on a NULL logger).
final class XenControlInterface {
    let handle: OpaquePointer
    let log: XenLibraryLog

    init(log: XenLibraryLog) throws {
        self.log = log
        errno = 0
        guard let xch = xc_interface_open(log.logger, log.logger, 0) else {
            throw XenOpenFailure(call: "xc_interface_open", errno: errno,
                                 libraryMessage: log.lastError?.description)
        }
        handle = xch
    }

    deinit { xc_interface_close(handle) }

    /// The hypervisor's own version (xc_version: major.minor and the extra version, e.g.
    /// "4.17.7+13-g2445b30a4" — Xen keeps 15 characters of it), not libxenctrl's file
    /// version, which is 4.17.0 whatever the patch level.
    func hypervisorVersion() -> String? {
        let packed = xc_version(handle, XENVER_version, nil)
        guard packed >= 0 else { return nil }
        // xen_extraversion_t is char[16]; one spare byte keeps it terminated.
        var extra = [UInt8](repeating: 0, count: 17)
        let extraText: String
        if xc_version(handle, XENVER_extraversion, &extra) >= 0 {
            extraText = String(decoding: extra.prefix(while: { $0 != 0 }), as: UTF8.self)
        } else {
            extraText = ""
        }
        return "\(packed >> 16).\(packed & 0xffff)\(extraText)"
    }

    /// Whether the hypervisor was built with CONFIG_GDBSX, without which a PV guest's debug
    /// traps never pause it (domain_pause_for_debugger() is empty): asks the gdbsx
    /// domain-status domctl about dom0 (harmless: dom0 is never paused by a controller).
    /// ENOSYS means no GDBSX; nil when the answer says nothing either way.
    func hypervisorHasGDBSX() -> Bool? {
        switch gdbsxDomainStatus(0) {
        case .success: return true
        case .failure(let code): return code == ENOSYS ? false : nil
        }
    }

    enum DomctlResult { case success(xen_domctl), failure(Int32) }

    /// XEN_DOMCTL_gdbsx_domstatus of a domain: whether it is paused by a controller and,
    /// if a vCPU stopped on a debug event, which (the event is consumed by the call).
    func gdbsxDomainStatus(_ domid: UInt32) -> DomctlResult {
        var domctl = xen_domctl()
        domctl.cmd = UInt32(XEN_DOMCTL_gdbsx_domstatus)
        domctl.interface_version = UInt32(XEN_DOMCTL_INTERFACE_VERSION)
        domctl.domain = domid_t(domid)
        errno = 0
        guard xc_domctl(handle, &domctl) == 0 else { return .failure(errno) }
        return .success(domctl)
    }

    /// Whether the hypervisor offers vmtrace (Intel PT for guests): physinfo's capability bit.
    func hypervisorHasVmtrace() -> Bool? {
        var info = xc_physinfo_t()
        guard xc_physinfo(handle, &info) == 0 else { return nil }
        return info.capabilities & tt_physcap_vmtrace() != 0
    }
}
