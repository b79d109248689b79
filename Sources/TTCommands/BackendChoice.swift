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
