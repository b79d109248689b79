import XCTest
import SystemPackage
@testable import XenBackend

final class XenHostProbeTests: XCTestCase {
    /// A system where every library call is answered by the test.
    func fakeSystem(euid: UInt32 = 0, ttd: Set<String> = [],
                    contact: XenProbeSystem.Contact = .reached(version: "4.17.2", vmtrace: false, gdbsx: false)) -> XenProbeSystem {
        XenProbeSystem(
            effectiveUserID: { euid },
            libxenctrlFile: { "/usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17.0" },
            libxlFile: { "/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0" },
            exports: { _, symbol in ttd.contains(symbol) },
            contactHypervisor: { _, _ in contact })
    }

    func dom0Tree() throws -> FakeRoot {
        let root = try FakeRoot()
        try root.write("dev/xen/privcmd", "")
        try root.write("sys/hypervisor/type", "xen\n")
        try root.write("proc/xen/capabilities", "control_d\n")
        try root.write("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse intel_pt xsave\n\n")
        return root
    }

    func testNotUnderXen() throws {
        let root = try FakeRoot()
        try root.write("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse2\n")
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem())
        XCTAssertFalse(report.canRunSessions)
        XCTAssertFalse(report.privcmd.available)
        XCTAssertFalse(report.hypervisorType.available)
        XCTAssertFalse(report.controlDomain.available)
        XCTAssertFalse(report.intelPT.available)
        XCTAssertEqual(report.reason?.hasPrefix("this machine is not running under Xen"), true, report.reason ?? "")
        XCTAssertEqual(report.advice?.contains("root in dom0 with privcmd"), true)
        XCTAssertEqual(report.advice?.contains("--backend qemu"), true)
        // The live system never opens real handles for a fake root.
        let live = XenHostProbe.probe(root: root.path)
        XCTAssertFalse(live.hypervisorReachable.available)
        XCTAssertTrue(live.hypervisorReachable.detail.contains("not checked"), live.hypervisorReachable.detail)
        XCTAssertEqual(live.reason, report.reason)
    }

    func testDomUIsNotEnough() throws {
        let root = try FakeRoot()
        try root.write("sys/hypervisor/type", "xen\n")
        try root.write("proc/xen/capabilities", "")
        try root.write("dev/xen/privcmd", "")
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem())
        XCTAssertTrue(report.hypervisorType.available)
        XCTAssertFalse(report.controlDomain.available)
        XCTAssertEqual(report.reason, "this is a Xen guest (domU), not dom0")
    }

    func testOtherHypervisorType() throws {
        let root = try FakeRoot()
        try root.write("sys/hypervisor/type", "kvm\n")
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem())
        XCTAssertEqual(report.hypervisorTypeText, "kvm")
        XCTAssertTrue(report.reason?.contains("/sys/hypervisor/type is 'kvm'") ?? false, report.reason ?? "")
    }

    func testOldKernelPrivcmdUnderProc() throws {
        let root = try FakeRoot()
        try root.write("proc/xen/privcmd", "")
        try root.write("sys/hypervisor/type", "xen")
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem())
        XCTAssertEqual(report.privcmdPath, "/proc/xen/privcmd")
        XCTAssertTrue(report.privcmd.available)
    }

    func testNotRoot() throws {
        let root = try dom0Tree()
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem(euid: 1000))
        XCTAssertTrue(report.controlDomain.available)
        XCTAssertTrue(report.intelPT.available)
        XCTAssertFalse(report.root.available)
        XCTAssertEqual(report.reason, "effective user id is 1000, not 0")
        XCTAssertFalse(report.canRunSessions)
    }

    func testStockXenDom0HasNoTimeTravel() throws {
        let root = try dom0Tree()
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem(contact: .reached(version: "4.17.2", vmtrace: true, gdbsx: true)))
        XCTAssertTrue(report.hypervisorReachable.available)
        XCTAssertTrue(report.vmtrace.available)
        XCTAssertEqual(report.hypervisorVersion, "4.17.2")
        XCTAssertEqual(report.libxenctrlVersion, "4.17.0")
        XCTAssertEqual(report.libxlVersion, "4.17.0")
        XCTAssertFalse(report.timeTravel.available)
        XCTAssertFalse(report.canRunSessions)
        // The hypervisor's own version, not libxenctrl's file version (4.17.0).
        XCTAssertEqual(report.reason?.hasPrefix("the hypervisor (Xen 4.17.2) has no time travel"), true, report.reason ?? "")
        XCTAssertTrue(report.pvDebugging.available)
        XCTAssertTrue(report.timeTravel.detail.contains("xc_ttd_vmi_add_probe"))
        XCTAssertEqual(report.advice?.contains("--backend qemu"), true)
    }

    func testTimeTravelDom0CanRunSessions() throws {
        let root = try dom0Tree()
        let ttd = Set(XenTimeTravelExtensions.functionNames)
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem(ttd: ttd))
        XCTAssertTrue(report.timeTravel.available)
        XCTAssertEqual(report.timeTravelFunctions, XenTimeTravelExtensions.functionNames)
        XCTAssertFalse(report.vmtrace.available, "hypervisor said no vmtrace")
        XCTAssertTrue(report.canRunSessions, report.reason ?? "")
        XCTAssertNil(report.reason)
        XCTAssertEqual(report.capabilities.count, 10)
        // Default fake contact: a stock Debian build, no CONFIG_GDBSX.
        XCTAssertFalse(report.pvDebugging.available)
        XCTAssertTrue(report.pvDebugging.detail.contains("CONFIG_GDBSX"))
    }

    func testOpenFailureIsExplained() throws {
        let root = try dom0Tree()
        let failure = XenOpenFailure(call: "xc_interface_open", errno: EACCES, libraryMessage: nil)
        let report = XenHostProbe.probe(root: root.path, system: fakeSystem(contact: .failed(failure)))
        XCTAssertFalse(report.canRunSessions)
        XCTAssertEqual(report.reason, "xc_interface_open failed: permission denied")
        XCTAssertFalse(report.vmtrace.available)
    }

    func testOpenFailureExplanations() {
        let enoent = XenHostProbe.explain(XenOpenFailure(call: "xc_interface_open", errno: ENOENT, libraryMessage: nil),
                                          privcmdPresent: false, typeText: nil)
        XCTAssertTrue(enoent.0.contains("not running under Xen"))
        XCTAssertTrue(enoent.1.contains("root in dom0 with privcmd loaded"))
        let underXen = XenHostProbe.explain(XenOpenFailure(call: "xc_interface_open", errno: ENOENT, libraryMessage: nil),
                                            privcmdPresent: false, typeText: "xen")
        XCTAssertTrue(underXen.1.contains("xen-privcmd"))
        let eacces = XenHostProbe.explain(XenOpenFailure(call: "xc_interface_open", errno: EACCES, libraryMessage: "xencall: error: x"),
                                          privcmdPresent: true, typeText: "xen")
        XCTAssertEqual(eacces.0, "xc_interface_open failed: permission denied (xencall: error: x)")
        XCTAssertEqual(eacces.1, "run tt as root in dom0")
    }

    func testCpuinfoFlagMustBeAWholeWord() {
        XCTAssertFalse(XenHostProbe.cpuinfoHasIntelPT("flags\t: fpu intel_ptx\n"))
        XCTAssertFalse(XenHostProbe.cpuinfoHasIntelPT("model name\t: intel_pt\n"))
        XCTAssertTrue(XenHostProbe.cpuinfoHasIntelPT("flags\t: a\nflags\t: fpu intel_pt\n"))
    }

    func testLibraryVersionFromFileName() {
        XCTAssertEqual(XenLibraries.version(fromLibraryFile: "/usr/lib/libxenctrl.so.4.17.0"), "4.17.0")
        XCTAssertNil(XenLibraries.version(fromLibraryFile: "/usr/lib/libxenctrl.so"))
    }

    /// The real probe on this machine (no Xen): a clear "no", and not one byte on stderr
    /// from libxenctrl (which prints "xencall: error: ..." when given no logger).
    func testRealProbeOnThisMachineIsSilent() throws {
        try XCTSkipIf(access("/dev/xen/privcmd", F_OK) == 0, "this machine runs Xen")
        let (report, stderrText) = capturingStderr { XenHostProbe.probe() }
        XCTAssertEqual(stderrText, "")
        XCTAssertFalse(report.canRunSessions)
        XCTAssertFalse(report.hypervisorReachable.available)
        XCTAssertTrue(report.hypervisorReachable.detail.contains("not running under Xen"), report.hypervisorReachable.detail)
        // The library's message was caught by tt's logger instead.
        XCTAssertTrue(report.libraryMessages.contains { $0.contains("privileged command interface") }, "\(report.libraryMessages)")
        XCTAssertTrue(report.libraries.available, report.libraries.detail)
        XCTAssertEqual(report.libxenctrlVersion?.hasPrefix("4.17"), true)
        XCTAssertEqual(report.timeTravelFunctions, [])
    }
}
