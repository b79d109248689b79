import ArgumentParser
import Foundation
import SystemPackage

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
        try reporting {
            let base = stateBase.map { FilePath($0) } ?? DoctorEnvironment.defaultStateBase()
            let env = DoctorEnvironment.current(stateBase: base)
            let report = DoctorReport.gather(env)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                for check in report.checks {
                    let verdict = check.ok ? "yes" : "no — \(check.detail)" + (check.advice.map { "; \($0)" } ?? "")
                    let detail = check.ok ? " (\(check.detail))" : ""
                    print("\(check.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(verdict)\(detail)")
                }
                print("backends: " + (report.backends.isEmpty ? "none can run a session" : report.backends.joined(separator: ", ")))
            }
            if report.backends.isEmpty { throw ExitCode(1) }
        }
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
    /// tt's default state base: TT_STATE_BASE, else /var/lib/tt for root, else ~/.local/state/tt.
    public static func defaultStateBase() -> FilePath {
        let environment = ProcessInfo.processInfo.environment
        if let base = environment["TT_STATE_BASE"], !base.isEmpty { return FilePath(base) }
        if geteuid() == 0 { return "/var/lib/tt" }
        return FilePath(environment["HOME"] ?? "/tmp").appending(".local/state/tt")
    }
}

extension DoctorProbes {
    public struct XenReport { public var checks: [DoctorCheck]; public var canRunSessions: Bool }

    /// Placeholder until the Xen backend's host probe lands: reports what the file system says.
    public static func xen(_ env: DoctorEnvironment) -> XenReport {
        let type = (try? String(contentsOfFile: env.resolve("/sys/hypervisor/type").string, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let privcmd = access(env.resolve("/dev/xen/privcmd").string, F_OK) == 0
        if type == "xen" && privcmd {
            return XenReport(checks: [DoctorCheck(name: "xen hypervisor", ok: true, detail: "privcmd present")], canRunSessions: false)
        }
        return XenReport(checks: [DoctorCheck(name: "xen hypervisor", ok: false,
            detail: "this machine is not running under Xen (/dev/xen/privcmd missing, /sys/hypervisor/type \(type ?? "absent"))",
            advice: "run tt as root in dom0 of a Xen host, or use --backend qemu")], canRunSessions: false)
    }
}
