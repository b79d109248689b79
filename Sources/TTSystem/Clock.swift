#if canImport(Glibc)
import Glibc
#endif

/// The monotonic clock (immune to wall-clock changes): for deadlines, rates and progress.
private func monotonicNow() -> timespec {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    let ts = monotonicNow()
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Milliseconds on the monotonic clock.
public func monotonicMilliseconds() -> Int {
    let ts = monotonicNow()
    return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}
