import Foundation
import SystemPackage
import TestProcesses
import XCTest
@testable import TTCommands

/// `tt doctor`'s probes against fake file-system roots and fake programs built here with gcc.
final class DoctorTests: XCTestCase {
    var root: FilePath!

    override func setUpWithError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-doctor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        root = FilePath(dir.path)
        try FileManager.default.createDirectory(atPath: root.appending("usr/bin").string, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root.string)
    }

    /// Compiles a program at `path` that prints `version` for --version; `exportPluginAPI`
    /// makes it export the symbols a plugin-enabled QEMU exports (QEMU 10's, plugin API v4,
    /// or with `pluginAPIv4: false` only those Debian 12's QEMU 7.2 has).
    private func makeProgram(at path: FilePath, version: String, exportPluginAPI: Bool, pluginAPIv4: Bool = true) throws {
        let source = root.appending("prog.c")
        var c = "#include <stdio.h>\nint main(void){ puts(\"\(version)\"); return 0; }\n"
        if exportPluginAPI { c += "void qemu_plugin_register_vcpu_tb_trans_cb(void) {}\nvoid qemu_plugin_outs(void) {}\n" }
        if exportPluginAPI && pluginAPIv4 {
            c += "void qemu_plugin_read_register(void) {}\nvoid qemu_plugin_read_memory_vaddr(void) {}\n"
        }
        try c.write(toFile: source.string, atomically: true, encoding: .utf8)
        let gcc = try TestProcesses.run(["/usr/bin/gcc", "-rdynamic", "-o", path.string, source.string])
        XCTAssertEqual(gcc.status, 0, "gcc failed")
    }

    private func env(pluginDirs: [FilePath] = [], stateBase: FilePath = "/var/lib/tt") -> DoctorEnvironment {
        DoctorEnvironment(root: root, searchPath: ["/usr/bin"], pluginDirectories: pluginDirs,
                          stateBase: stateBase, effectiveUserID: 0)
    }

    func testNoQEMUMeansNoBackend() {
        let report = DoctorReport.gather(env())
        XCTAssertEqual(report.backends, [])
        let qemu = report.checks.first { $0.name == "qemu" }
        XCTAssertEqual(qemu?.ok, false)
        XCTAssertNotNil(qemu?.advice)
        XCTAssertFalse(report.checks.filter { $0.name.lowercased().contains("xen") }.isEmpty)
        XCTAssertFalse(DoctorProbes.xen(env()).canRunSessions)
    }

    func testPluginEnabledQEMUWithPluginLibraryIsABackend() throws {
        try makeProgram(at: root.appending("usr/bin/qemu-system-x86_64"), version: "QEMU emulator version 9.9.9", exportPluginAPI: true)
        try makeProgram(at: root.appending("usr/bin/qemu-img"), version: "qemu-img version 9.9.9", exportPluginAPI: false)
        try FileManager.default.createDirectory(atPath: root.appending("opt/tt").string, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: root.appending("opt/tt/libttplugin.so").string, contents: Data())

        let report = DoctorReport.gather(env(pluginDirs: ["/opt/tt"]))
        XCTAssertEqual(report.backends, ["qemu"])
        let qemu = try XCTUnwrap(report.checks.first { $0.name == "qemu" })
        XCTAssertTrue(qemu.detail.contains("QEMU emulator version 9.9.9"), qemu.detail)
        XCTAssertEqual(report.checks.first { $0.name == "qemu plugin API" }?.ok, true)
        XCTAssertEqual(report.checks.first { $0.name == "tt plugin" }?.detail, root.appending("opt/tt/libttplugin.so").string)
    }

    /// Debian 12's own QEMU 7.2 has plugins but not the v4 API tt's plugin calls: said, with
    /// where QEMU 10 comes from.
    func testQEMUWithAnOlderPluginAPIIsNotABackend() throws {
        try makeProgram(at: root.appending("usr/bin/qemu-system-x86_64"), version: "QEMU emulator version 7.2.22",
                        exportPluginAPI: true, pluginAPIv4: false)
        let report = DoctorReport.gather(env())
        XCTAssertEqual(report.backends, [])
        let api = try XCTUnwrap(report.checks.first { $0.name == "qemu plugin API" })
        XCTAssertFalse(api.ok)
        XCTAssertTrue(api.detail.contains("lacks qemu_plugin_read_register, qemu_plugin_read_memory_vaddr"), api.detail)
        XCTAssertTrue(api.advice?.contains("bookworm-backports") == true, api.advice ?? "")
    }

    func testQEMUWithoutPluginAPIIsNotABackend() throws {
        try makeProgram(at: root.appending("usr/bin/qemu-system-x86_64"), version: "QEMU emulator version 1.0", exportPluginAPI: false)
        try makeProgram(at: root.appending("usr/bin/qemu-img"), version: "qemu-img version 1.0", exportPluginAPI: false)
        let report = DoctorReport.gather(env())
        XCTAssertEqual(report.backends, [])
        let api = try XCTUnwrap(report.checks.first { $0.name == "qemu plugin API" })
        XCTAssertFalse(api.ok)
        XCTAssertTrue(api.detail.contains("exports no qemu_plugin_"), api.detail)
        XCTAssertEqual(report.checks.first { $0.name == "tt plugin" }?.ok, false)
    }

    func testStateBaseCreatableUnderExistingParent() {
        let check = DoctorProbes.stateDirectory(env(stateBase: "/usr/bin/not/yet"))
        XCTAssertTrue(check.ok)
        XCTAssertTrue(check.detail.contains("can be created under"), check.detail)
    }

    func testFakeXenHostWithoutPrivcmdIsReportedAsNotUnderXen() throws {
        try FileManager.default.createDirectory(atPath: root.appending("sys/hypervisor").string, withIntermediateDirectories: true)
        try "xen\n".write(toFile: root.appending("sys/hypervisor/type").string, atomically: true, encoding: .utf8)
        let xen = DoctorProbes.xen(env())
        XCTAssertFalse(xen.canRunSessions)
    }
}
