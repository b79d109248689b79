import CTTShims

/// Which CPU each replay VM runs on: one CPU of those this process may use (its affinity
/// mask, so `taskset` narrows the choice), with all of the VM's threads on it.
///
/// Why one CPU: a QEMU replay hands its replay lock back and forth between its vCPU thread
/// and its main loop, tens of thousands of times a second where a guest spins in a delay
/// loop (`rdtsc` and `pause`: the Linux boot's `timer_irq_works` and APIC calibration).
/// With the two threads on different CPUs, each hand-over is a cross-CPU wake-up, and
/// such a replay kept 1.5 CPUs busy; with both on one CPU it took 0.75× the time
/// (measured: 1.4 s instead of 1.9 s per index gap there), on one CPU only. So replays
/// traced at once (`--jobs`) each get a CPU of their own: replay k runs on the k-th CPU
/// after a base picked at random per process, as rr binds its tracees to a random CPU,
/// so that two tt commands at once do not start on the same one.
public enum CPUPlacement {
    /// The CPUs this process may run on, ascending (empty if they cannot be read).
    public static let allowed: [Int32] = {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = tt_allowed_cpus(&cpus, Int32(cpus.count))
        return n > 0 ? Array(cpus[0..<Int(n)]) : []
    }()

    private static let base = allowed.isEmpty ? 0 : Int.random(in: 0..<allowed.count)

    /// The CPU of replay `k` (0: a command's own replay, k: its k-th `--jobs` worker);
    /// nil when the allowed CPUs are unknown (the VM then runs unpinned).
    public static func cpu(forReplay k: Int) -> Int32? {
        guard !allowed.isEmpty else { return nil }
        return allowed[(base + k) % allowed.count]
    }

    /// The CPU of segment `k` of a plan (`--plan DIR --segment K`), a process of its own:
    /// the k-th allowed CPU, with no random base, so that segments started side by side on
    /// one machine (`xargs -P`) get different CPUs. A scheduler that gives each job CPUs
    /// of its own narrows the allowed set to them.
    public static func cpu(forSegment k: Int) -> Int32? {
        allowed.isEmpty ? nil : allowed[k % allowed.count]
    }
}
