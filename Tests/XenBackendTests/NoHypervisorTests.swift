import XCTest
import Foundation
import TestProcesses
import SystemPackage
@testable import XenBackend
import XenTT
import CXen

/// On a machine without Xen (this one): every Xen-backed path fails with the one-line
/// "no hypervisor" error and status 69, and the Xen libraries print nothing.
final class NoHypervisorTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(access("/dev/xen/privcmd", F_OK) == 0 || access("/proc/xen/privcmd", F_OK) == 0,
                      "this machine runs Xen")
    }

    func testOpeningTheToolstackFailsCleanlyAndSilently() {
        let (result, stderrText) = capturingStderr { Result { try LibXenToolstack() } }
        XCTAssertEqual(stderrText, "", "a Xen library wrote to stderr")
        guard case .failure(let error) = result else { return XCTFail("opened Xen handles on a machine without Xen") }
        let xenError = error as? XenError
        XCTAssertEqual(xenError?.exitStatus, 69)
        let text = "\(error)"
        XCTAssertFalse(text.contains("\n"))
        XCTAssertTrue(text.contains("this machine is not running under Xen"), text)
        XCTAssertTrue(text.contains("must run as root in dom0 with privcmd loaded"), text)
        XCTAssertTrue(text.hasSuffix("use --backend qemu"), text)
    }

    func testReplayBackendFactoryRefuses() throws {
        let root = try FakeRoot()
        let state = try StateDirectory(name: "r1", explicit: root.path.string, base: "/unused")
        let (result, stderrText) = capturingStderr { Result { try XenSessions.replayBackend(state: state) } }
        XCTAssertEqual(stderrText, "")
        guard case .failure(let error) = result else { return XCTFail("got a Xen backend without Xen") }
        XCTAssertEqual((error as? XenError)?.exitStatus, 69)
        XCTAssertFalse(XenSessions.autoSelectsXen(), "auto must choose QEMU here")
    }

    /// The built `tt` binary, run as users run it.
    func ttBinary() throws -> URL {
        let tt = URL(fileURLWithPath: TestProcesses.tt)
        guard FileManager.default.isExecutableFile(atPath: tt.path) else {
            throw XCTSkip("the tt executable is not built next to the tests (\(tt.path))")
        }
        return tt
    }

    func run(_ tt: URL, _ arguments: [String], stateBase: String) throws -> (Int32, String, String) {
        var environment = ProcessInfo.processInfo.environment
        environment["TT_STATE_BASE"] = stateBase
        let r = try TestProcesses.run([tt.path] + arguments, environment: environment)
        return (r.status, r.out, r.err)
    }

    func testTTRecordAndReplayWithTheXenBackendExit69WithOneLine() throws {
        let tt = try ttBinary()
        let base = try FakeRoot()
        for arguments in [["record", "--backend", "xen", "g1"],
                          ["record", "--backend", "xen", "--kernel", "/boot/vmlinuz", "-M", "128", "g1"],
                          ["record", "--backend", "xen", "-D", "g1"],
                          ["replay", "--backend", "xen", "g1"],
                          ["replay", "--backend", "xen", "-p", "g1"]] {
            let (status, out, err) = try run(tt, arguments, stateBase: base.path.string)
            XCTAssertEqual(status, 69, "\(arguments): \(err)")
            XCTAssertEqual(out, "", "\(arguments)")
            let lines = err.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(arguments): expected one line, got:\n\(err)")
            XCTAssertTrue(err.hasPrefix("tt: Xen backend unavailable: "), err)
            XCTAssertTrue(err.contains("not running under Xen"), err)
            XCTAssertTrue(err.contains("root in dom0 with privcmd loaded"), err)
            XCTAssertTrue(err.contains("--backend qemu"), err)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: base.path.string), [],
                           "\(arguments) created state although Xen is unavailable")
        }
    }
}

/// `tt record --backend xen`'s logic against the FAKE toolstack.
final class XenRecordTests: XCTestCase {
    func testRecordRunsTheRecordDomainToItsEndAndDestroysIt() throws {
        let root = try FakeRoot()
        let state = try StateDirectory(name: "rec1", explicit: root.path.string, base: "/unused")
        var p = XenDomainParameters(name: "rec1")
        p.kernel = "/boot/guest"
        let template = try XenDomainTemplate.load(from: XenDomainConfigTests.repository.appending("etc/xentt/\(XenDomainTemplate.fileName)"))
        let configs = try XenSessions.writeConfigurations(p, template: template, into: state)
        for file in ["record.cfg", "record.json", "replay.cfg", "replay.json", "backend"] {
            XCTAssertTrue(state.fileExists(file), file)
        }
        XCTAssertTrue(try state.read("replay.cfg").contains("tt_dir=\(root.path.string),tt_replay_flag=1\""))
        XCTAssertFalse(try state.read("record.cfg").contains("tt_replay_flag=1"))

        let fake = FakeXenToolstack(program: XenReplayBackendTests.program())
        let summary = try XenSessions.record(state: state, config: configs.record, toolstack: fake, clock: FakeClock())
        XCTAssertEqual(summary.ending, .poweroff)
        XCTAssertEqual(summary.signal, 0)
        XCTAssertEqual(fake.createdConfigs, [configs.record.json])
        XCTAssertEqual(fake.liveDomains.count, 0)
        XCTAssertFalse(state.fileExists("domid"))
        XCTAssertEqual(fake.violations, [])

        fake.endReason = .crash
        XCTAssertThrowsError(try XenSessions.record(state: state, config: configs.record, toolstack: fake, clock: FakeClock())) { error in
            XCTAssertEqual("\(error)", "domain 2 crashed")
        }
        XCTAssertEqual(fake.liveDomains.count, 0)
    }
}

/// tt's logger with each Xen library directly: no crash (libxl dereferences its logger),
/// no stderr, the libraries' messages caught.
final class XenLoggerTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(access("/dev/xen/privcmd", F_OK) == 0, "this machine runs Xen")
    }

    func testLibxlContextAllocationLogsThroughTT() {
        let log = XenLibraryLog()
        var ctx: OpaquePointer?
        let (rc, stderrText) = capturingStderr { libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, log.logger) }
        XCTAssertNotEqual(rc, 0)
        XCTAssertNil(ctx)
        XCTAssertEqual(stderrText, "")
        XCTAssertTrue(log.messages.contains { $0.text.contains("cannot open libxc handle") }, "\(log.messages)")
    }

    func testForeignMemoryAndEventChannelOpenSilently() {
        let log = XenLibraryLog()
        let (handles, stderrText) = capturingStderr { () -> (OpaquePointer?, OpaquePointer?) in
            (xenforeignmemory_open(log.logger, 0), xenevtchn_open(log.logger, 0))
        }
        XCTAssertNil(handles.0)
        XCTAssertNil(handles.1)
        XCTAssertEqual(stderrText, "")
        XCTAssertTrue(log.messages.contains { $0.context == "xenforeignmemory" }, "\(log.messages)")
    }

    func testMessagesKeepTheirLevelAndErrno() {
        let log = XenLibraryLog()
        _ = capturingStderr { xc_interface_open(log.logger, log.logger, 0) }
        let message = try? XCTUnwrap(log.lastError)
        XCTAssertEqual(message?.level, .error)
        XCTAssertEqual(message?.context, "xencall")
        XCTAssertTrue(message?.text.hasSuffix(": No such file or directory") ?? false, "\(String(describing: message))")
    }
}
