#if canImport(Glibc)
import Glibc
#endif

/// A request to stop a long operation, handed to the calls that wait (replays, recordings,
/// console followers) instead of a global they would each read their own way.
///
/// It is pollable: `descriptor` becomes readable once it is cancelled, so a wait loop polls
/// it next to its sockets and child-exit descriptors and never sleeps through a request.
/// `Cancellation.onSignals()` turns SIGINT, SIGTERM and SIGHUP into a cancellation, so a
/// command winds down (no orphan VM, partial output kept) instead of dying mid-way.
public final class Cancellation: @unchecked Sendable {
    /// The reading and writing ends of a non-blocking, close-on-exec pipe: a byte is written
    /// on cancellation (async-signal-safe) and stays there, so the read end stays readable.
    private let pipeFDs: (read: Int32, write: Int32)
    /// The signal that cancelled it (0: none, or cancelled by `cancel()`); written before the byte.
    private var signalNumber: Int32 = 0
    private var cancelled: Bool = false
    /// Cancelled with this one (see `init(linkedTo:)`).
    private let parent: Cancellation?

    /// A cancellation of its own, also cancelled when `parent` is: for a part of a command
    /// that can be given up alone (a `--jobs` worker) but must stop on the command's
    /// signals too. Its descriptor becomes readable on its own cancellation only; a wait
    /// loop sees the parent's through `isCancelled`, which it checks after each poll.
    public convenience init(linkedTo parent: Cancellation) {
        self.init(parent: parent)
    }

    public convenience init() {
        self.init(parent: nil)
    }

    private init(parent: Cancellation?) {
        self.parent = parent
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, O_NONBLOCK)
            }
        } else {
            fds = [-1, -1]
        }
        pipeFDs = (fds[0], fds[1])
    }

    deinit {
        // The signal-bound instance lives as long as the process: its handler writes here.
        if Self.signalBound !== self {
            if pipeFDs.read >= 0 { close(pipeFDs.read) }
            if pipeFDs.write >= 0 { close(pipeFDs.write) }
        }
    }

    /// Readable once cancelled; poll it with POLLIN. -1 if no pipe could be made.
    public var descriptor: Int32 { pipeFDs.read }

    public var isCancelled: Bool { cancelled || parent?.isCancelled == true }

    /// The signal that cancelled it (or its parent); 0 when none did.
    public var signal: Int32 { cancelled || parent == nil ? signalNumber : parent!.signal }

    /// Request cancellation; safe from any thread and from a signal handler.
    public func cancel() { note(signal: 0) }

    private func note(signal: Int32) {
        if !cancelled { signalNumber = signal }
        cancelled = true
        var b: UInt8 = 1
        _ = write(pipeFDs.write, &b, 1)
    }

    /// Throws `Cancelled` once cancelled: for the points between steps of a long operation.
    public func check() throws {
        if isCancelled { throw Cancelled(signal: signal) }
    }

    /// The status a command ends with when cancelled: 128 + the signal (130 for SIGINT,
    /// 143 for SIGTERM), 130 when cancelled without one.
    public var exitStatus: Int32 { Cancelled(signal: signal).exitStatus }

    // MARK: signals

    nonisolated(unsafe) private static var signalBound: Cancellation?

    /// The process's cancellation by SIGINT, SIGTERM and SIGHUP (installed once; later
    /// calls return the same object).
    public static func onSignals() -> Cancellation {
        if let bound = signalBound { return bound }
        let c = Cancellation()
        signalBound = c
        for s in [SIGINT, SIGTERM, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signo in
                Cancellation.signalBound?.note(signal: signo)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(s, &action, nil)
        }
        return c
    }
}

/// What a cancelled operation throws.
public struct Cancelled: Error, CustomStringConvertible, ExitStatusProviding {
    public let signal: Int32
    public init(signal: Int32) { self.signal = signal }
    public var description: String { signal == 0 ? "cancelled" : "interrupted by signal \(signal)" }
    public var exitStatus: Int32 { 128 + (signal == 0 ? SIGINT : signal) }
}
