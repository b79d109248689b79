import ArgumentParser
import SystemPackage
import XenBackend
import XenTT

/// `--backend xen|qemu|auto` of tt record and tt replay.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case xen, qemu, auto

    /// auto: Xen when a hypervisor with time travel is reachable, QEMU otherwise.
    var usesXen: Bool { self == .xen || (self == .auto && XenSessions.autoSelectsXen()) }

    static let help = ArgumentHelp(
        "Hypervisor: xen, qemu, or auto (Xen when a Xen hypervisor with time travel is reachable, else QEMU).",
        valueName: "xen|qemu|auto")
}

extension Record {
    /// `tt record --backend xen`: the record domain from etc/xentt's template, through libxl.
    func recordWithXen() throws {
        // First, before any state is touched: can Xen sessions run here at all?
        let toolstack = try XenSessions.openToolstack()
        let dir = try state.resolve()
        if stop || destroy {
            guard dir.exists, StateOwnership.isRecording(dir) else { throw StateError.missing(dir.path) }
            let lock = try dir.lock()
            let domid = try toolstack.findDomain(named: dir.name)
            if let domid { try toolstack.destroyDomain(domid) }
            dir.remove("domid")
            withExtendedLifetime(lock) {}
            if destroy {
                try SessionBackends.removeRecording(dir)
                printLine("tt: removed \(dir.path)")
            } else {
                printLine(domid != nil ? "tt: recording \(dir.name) stopped; state kept in \(dir.path)" : "tt: no recording of \(dir.name) in progress")
            }
            return
        }
        guard let kernel else {
            throw ValidationError("--backend xen needs --kernel (a PV or PVH guest kernel; the bundled guest boots under QEMU only)")
        }
        guard !detach else { throw ValidationError("--detach is not available with --backend xen") }
        try StateOwnership.check(dir.path)
        if dir.exists && StateOwnership.isRecording(dir) {
            guard force else { throw StateError.exists(dir.path) }
            try SessionBackends.removeRecording(dir, replacing: true)
        }
        try dir.create()
        let lock = try dir.lock()
        defer { withExtendedLifetime(lock) {} }
        var parameters = XenDomainParameters(name: dir.name)
        parameters.kernel = FilePath(kernel)
        parameters.ramdisk = initrd.map { FilePath($0) }
        parameters.commandLine = append
        parameters.memoryMB = memory
        parameters.stateDirectory = dir.path
        let template = try XenDomainTemplate.load(from: XenSessions.templatePath())
        let configs = try XenSessions.writeConfigurations(parameters, template: template, into: dir)
        try dir.write("symfile", (symbols ?? kernel) + "\n")
        SignalWatcher.install()
        let summary = try XenSessions.record(state: dir, config: configs.record, toolstack: toolstack)
        if summary.signal != 0 {
            printLine("tt: recording \(dir.name) interrupted by signal \(summary.signal); domain destroyed, state kept in \(dir.path)")
            throw ExitCode(SignalWatcher.exitStatus(summary.signal))
        }
        printLine("tt: recorded \(dir.name) in Xen \(summary.domid) (\(summary.ending.map { "\($0)" } ?? "destroyed")); state in \(dir.path)")
    }
}
