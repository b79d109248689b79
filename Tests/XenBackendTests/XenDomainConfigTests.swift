import XCTest
import Foundation
import SystemPackage
import CXen
@testable import XenBackend

final class XenDomainConfigTests: XCTestCase {
    static let repository = FilePath(#filePath).removingLastComponent().removingLastComponent().removingLastComponent()

    func shippedTemplate() throws -> XenDomainTemplate {
        try XenDomainTemplate.load(from: Self.repository.appending("etc/xentt/\(XenDomainTemplate.fileName)"))
    }

    func golden(_ name: String) throws -> String {
        let url = try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Golden"))
        return try String(contentsOf: url, encoding: .utf8)
    }

    /// JSON compared as data (key order and spacing are not part of the contract).
    func assertSameJSON(_ actual: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let a = try JSONSerialization.jsonObject(with: Data(actual.utf8)) as? NSDictionary
        let e = try JSONSerialization.jsonObject(with: Data(expected.utf8)) as? NSDictionary
        XCTAssertNotNil(a, "not a JSON object:\n\(actual)", file: file, line: line)
        XCTAssertEqual(a, e, "\nactual:\n\(actual)", file: file, line: line)
    }

    func plainParameters() -> XenDomainParameters {
        var p = XenDomainParameters(name: "guest1")
        p.kernel = "/boot/vmlinuz"
        p.ramdisk = "/boot/initrd.img"
        p.memoryMB = 64
        p.bridge = "xenbr0"
        p.stateDirectory = "/var/lib/xentt/guest1"
        return p
    }

    func escapingParameters() -> XenDomainParameters {
        var p = XenDomainParameters(name: #"we"ird\name"#)
        p.kernel = #"/srv/k,ernels/vm"linuz"#
        p.commandLine = #"console=hvc0 init="/bin/sh" root=\dev"#
        p.memoryMB = 128
        p.disk = "/srv/img,1.raw"
        p.bridge = "xenbr0"
        p.mac = "00:16:3e:00:00:01"
        p.stateDirectory = #"/var/lib/xentt/we"ird"#
        return p
    }

    func testRecordConfigMatchesGolden() throws {
        let config = try shippedTemplate().render(plainParameters(), role: .record)
        XCTAssertEqual(config.xlText, try golden("record-plain.cfg"))
        try assertSameJSON(config.json, try golden("record-plain.json"))
    }

    func testReplayConfigWithEscapingMatchesGolden() throws {
        let config = try shippedTemplate().render(escapingParameters(), role: .replay)
        XCTAssertEqual(config.xlText, try golden("replay-escaping.cfg"))
        try assertSameJSON(config.json, try golden("replay-escaping.json"))
    }

    func testRecordAndReplayDifferOnlyInTheReplayFlag() throws {
        let t = try shippedTemplate()
        let record = try t.render(plainParameters(), role: .record).xlText
        let replay = try t.render(plainParameters(), role: .replay).xlText
        XCTAssertEqual(replay, record.replacingOccurrences(of: "tt_dir=/var/lib/xentt/guest1\"",
                                                           with: "tt_dir=/var/lib/xentt/guest1,tt_replay_flag=1\""))
        XCTAssertNotEqual(record, replay)
    }

    func testNewlinesAndControlCharactersAreRefused() throws {
        var p = plainParameters()
        p.commandLine = "console=hvc0\nroot=/dev/xvda"
        XCTAssertThrowsError(try shippedTemplate().render(p, role: .record)) { error in
            XCTAssertEqual("\(error)", #"cmdline contains a newline: 'console=hvc0\nroot=/dev/xvda'"#)
        }
        p = plainParameters()
        p.kernel = "/boot/vm\u{1b}linuz"
        XCTAssertThrowsError(try shippedTemplate().render(p, role: .record)) { error in
            XCTAssertTrue("\(error)".hasPrefix("kernel contains control character 0x1b"), "\(error)")
        }
    }

    func testCommasThatWouldSplitAnOptionListAreRefused() throws {
        var p = plainParameters()
        p.stateDirectory = "/var/lib/xentt/a,b"
        XCTAssertThrowsError(try shippedTemplate().render(p, role: .record)) { error in
            XCTAssertEqual("\(error)", "state directory (tt_dir) '/var/lib/xentt/a,b' contains a comma, which would split its xl option list")
        }
        p = plainParameters()
        p.bridge = "br0,script=/tmp/evil"
        XCTAssertThrowsError(try shippedTemplate().render(p, role: .record))
    }

    func testBadNamesAndValues() throws {
        for name in ["", "a/b", "..", "."] {
            var p = plainParameters()
            p.name = name
            XCTAssertThrowsError(try shippedTemplate().render(p, role: .record), "name '\(name)'")
        }
        var p = plainParameters()
        p.vmtraceBufferKB = 3000
        XCTAssertThrowsError(try shippedTemplate().render(p, role: .record))
        p.vmtraceBufferKB = 4096
        p.type = .hvm
        let config = try shippedTemplate().render(p, role: .record)
        XCTAssertTrue(config.xlText.contains("\nvmtrace_buf_kb = 4096\n"))
        XCTAssertTrue(config.xlText.contains("\ntype = \"hvm\"\n"))
    }

    func testTemplateErrorsNameTheLine() throws {
        let unknownKey = XenDomainTemplate(text: "name = \"@NAME@\"\nmemory = @MEMORY@\nkernel = \"/k\"\nbogus = 1\n", origin: "t.cfg")
        XCTAssertThrowsError(try unknownKey.render(plainParameters(), role: .record)) { error in
            XCTAssertEqual("\(error)", "t.cfg (record):4: 'bogus' is not a key tt can turn into a libxl configuration")
        }
        let unquoted = XenDomainTemplate(text: "name = @NAME@\n", origin: "t.cfg")
        XCTAssertThrowsError(try unquoted.render(plainParameters(), role: .record)) { error in
            XCTAssertEqual("\(error)", "t.cfg:1: placeholder @NAME@ must be inside double quotes")
        }
        let unknownPlaceholder = XenDomainTemplate(text: "name = \"@NAMES@\"\n", origin: "t.cfg")
        XCTAssertThrowsError(try unknownPlaceholder.render(plainParameters(), role: .record)) { error in
            XCTAssertEqual("\(error)", "t.cfg:1: unknown placeholder @NAMES@")
        }
    }

    /// The independent oracle: libxl's own JSON parser (libxl_domain_config_from_json)
    /// reads our JSON back into a libxl_domain_config, and its fields hold the original,
    /// unescaped values. libxl needs a ctx there only for logging and allocation, so a
    /// zeroed stand-in whose first field (lg) is tt's logger serves, without a hypervisor.
    func testLibxlParsesOurJSONToTheOriginalValues() throws {
        let p = escapingParameters()
        let config = try shippedTemplate().render(p, role: .replay)
        let log = XenLibraryLog()
        let fake = try XCTUnwrap(calloc(1, 1 << 16))
        defer { free(fake) }
        fake.storeBytes(of: UnsafeMutableRawPointer(log.logger), as: UnsafeMutableRawPointer.self)
        var c = libxl_domain_config()
        libxl_domain_config_init(&c)
        defer { libxl_domain_config_dispose(&c) }
        let (rc, stderrText) = capturingStderr { libxl_domain_config_from_json(OpaquePointer(fake), &c, config.json) }
        XCTAssertEqual(rc, 0, "\(log.messages)")
        XCTAssertEqual(stderrText, "")
        XCTAssertEqual(String(cString: c.c_info.name), p.name)
        XCTAssertEqual(c.c_info.type, LIBXL_DOMAIN_TYPE_PV)
        XCTAssertEqual(String(cString: c.b_info.kernel), p.kernel?.string)
        XCTAssertEqual(String(cString: c.b_info.cmdline), p.commandLine)
        XCTAssertNil(c.b_info.ramdisk)
        XCTAssertEqual(c.b_info.target_memkb, 128 * 1024)
        XCTAssertEqual(c.b_info.max_memkb, 128 * 1024)
        XCTAssertEqual(c.b_info.max_vcpus, 1)
        XCTAssertEqual(c.num_disks, 1)
        XCTAssertEqual(String(cString: c.disks[0].pdev_path), "/srv/img,1.raw")
        XCTAssertEqual(String(cString: c.disks[0].vdev), "xvda")
        XCTAssertEqual(c.disks[0].format, LIBXL_DISK_FORMAT_RAW)
        XCTAssertEqual(c.disks[0].readwrite, 1)
        XCTAssertEqual(c.num_nics, 1)
        XCTAssertEqual(String(cString: c.nics[0].bridge), "xenbr0")
        XCTAssertEqual([c.nics[0].mac.0, c.nics[0].mac.5], [0x00, 0x01])
        XCTAssertEqual(c.on_crash, LIBXL_ACTION_ON_SHUTDOWN_PRESERVE)
        XCTAssertEqual(c.on_reboot, LIBXL_ACTION_ON_SHUTDOWN_DESTROY)

        // And it refuses broken JSON through the logger, not stderr.
        var broken = libxl_domain_config()
        libxl_domain_config_init(&broken)
        defer { libxl_domain_config_dispose(&broken) }
        let (rc2, stderr2) = capturingStderr { libxl_domain_config_from_json(OpaquePointer(fake), &broken, "{\"c_info\": ") }
        XCTAssertNotEqual(rc2, 0)
        XCTAssertEqual(stderr2, "")
        XCTAssertFalse(log.messages.isEmpty)
    }
}
