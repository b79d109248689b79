#if canImport(Glibc)
import Glibc
#endif

/// SIGINT, SIGTERM and SIGHUP turned into bytes on a pipe, so wait loops can poll for
/// them next to sockets and child exits and clean up (never leaving an orphan QEMU)
/// instead of dying mid-way.
public enum SignalWatcher {
    nonisolated(unsafe) private static var pipeFDs: (read: Int32, write: Int32) = (-1, -1)
    nonisolated(unsafe) private static var received: Int32 = 0

    /// Install the handlers (idempotent). Returns the descriptor to poll.
    @discardableResult
    public static func install() -> Int32 {
        if pipeFDs.read >= 0 { return pipeFDs.read }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return -1 }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        pipeFDs = (fds[0], fds[1])
        for s in [SIGINT, SIGTERM, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signo in
                SignalWatcher.noteSignal(signo)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(s, &action, nil)
        }
        return pipeFDs.read
    }

    private static func noteSignal(_ signo: Int32) {
        received = signo
        var b = UInt8(truncatingIfNeeded: signo)
        _ = write(pipeFDs.write, &b, 1)
    }

    /// The descriptor to poll, or -1 when not installed.
    public static var descriptor: Int32 { pipeFDs.read }

    /// The last signal received (0: none), consuming pending bytes.
    public static func take() -> Int32 {
        var b: UInt8 = 0
        while pipeFDs.read >= 0 && read(pipeFDs.read, &b, 1) == 1 {}
        return received
    }

    public static var pending: Int32 { received }

    /// Exit status for "killed by signal": 128 + signo.
    public static func exitStatus(_ signo: Int32) -> Int32 { 128 + signo }
}
