import ArgumentParser
import Foundation
import SystemPackage
import XenBackend
import XenTT

/// `tt doctor`: one line per capability, "yes" or "no — why and what to do".
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report which capabilities this machine has for replay sessions.",
        discussion: "Exits 0 when at least one backend (QEMU or Xen) can run a session, 1 otherwise.")

    @Flag(help: "One JSON object with every check, for scripts.")
    var json = false

    @Option(name: .customShort("s"), help: "The state base directory to check (default: tt's configured base).")
    var stateBase: String?

    func run() throws {
        let base = stateBase.map { FilePath($0) } ?? DoctorEnvironment.defaultStateBase()
        let env = DoctorEnvironment.current(stateBase: base)
        let report = DoctorReport.gather(env)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            let width = report.checks.map(\.name.count).max() ?? 0
            for check in report.checks {
                let verdict = check.ok ? "yes" : "no — \(check.detail)" + (check.advice.map { "; \($0)" } ?? "")
                let detail = check.ok ? " (\(check.detail))" : ""
                print("\(check.name.padding(toLength: width, withPad: " ", startingAt: 0)) \(verdict)\(detail)")
            }
            print("backends: " + (report.backends.isEmpty ? "none can run a session" : report.backends.joined(separator: ", ")))
        }
        if report.backends.isEmpty { throw ExitCode(1) }
    }
}

/// Everything `tt doctor` found.
public struct DoctorReport: Codable {
    public var checks: [DoctorCheck]
    /// The backends that can run a replay session here.
    public var backends: [String]

    public static func gather(_ env: DoctorEnvironment) -> DoctorReport {
        var checks: [DoctorCheck] = []
        var backends: [String] = []
        let xen = DoctorProbes.xen(env)
        checks += xen.checks
        if xen.canRunSessions { backends.append("xen") }
        let qemu = DoctorProbes.qemu(env)
        checks += qemu.checks
        if qemu.canRunSessions { backends.append("qemu") }
        checks.append(DoctorProbes.libdw())
        checks.append(DoctorProbes.stateDirectory(env))
        return DoctorReport(checks: checks, backends: backends)
    }
}

extension DoctorEnvironment {
    /// The state base every session command uses (tt.conf, TT_STATE_BASE).
    public static func defaultStateBase() -> FilePath { FilePath(TTConfiguration.stateBase()) }
}

extension DoctorProbes {
    public struct XenReport { public var checks: [DoctorCheck]; public var canRunSessions: Bool }

    /// The Xen backend's host probe: privcmd, hypervisor type, dom0, root, library versions,
    /// time-travel extensions, Intel PT and vmtrace. Library messages are caught by tt's logger.
    public static func xen(_ env: DoctorEnvironment) -> XenReport {
        let report = XenHostProbe.probe(root: env.root)
        let checks = report.capabilities.map {
            DoctorCheck(name: $0.name, ok: $0.available, detail: $0.detail, advice: $0.advice)
        }
        return XenReport(checks: checks, canRunSessions: report.canRunSessions)
    }
}
