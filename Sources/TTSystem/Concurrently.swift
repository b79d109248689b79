#if canImport(Glibc)
import Glibc
#endif

/// A body to run on a thread of its own and, once joined, its result.
private final class ThreadBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// A body started on a thread of its own at once; `result()` waits for it (the replay
/// backends are driven synchronously, one object per thread). When no thread can be made
/// the body runs inline, in `init`.
public final class BackgroundThread<T> {
    private var thread: pthread_t?
    /// Written by the thread before it ends, read after the join.
    private var outcome: Result<T, Error>?

    public init(_ body: @escaping () throws -> T) {
        // The thread holds this object until its body is done: it is never freed under it.
        thread = Self.start(ThreadBox { self.outcome = Result { try body() } })
    }

    /// `box`'s body on a new thread (which holds the box until the body is done), or, when
    /// no thread can be made, inline now (nil).
    private static func start(_ box: ThreadBox) -> pthread_t? {
        var thread = pthread_t()
        let unmanaged = Unmanaged.passRetained(box)
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadBox>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, unmanaged.toOpaque())
        guard rc == 0 else {
            unmanaged.release()
            box.body()
            return nil
        }
        return thread
    }

    /// Wait for the body (once; later calls return the same result).
    public func result() -> Result<T, Error> {
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
        return outcome ?? .failure(ThreadFailure())
    }

    deinit {
        // Its thread has ended (it held this object): reclaim it.
        if let t = thread { pthread_join(t, nil) }
    }

    /// Run `body` on a thread nobody waits for (the process's exit waits only for a system
    /// call the thread is in). When no thread can be made it runs inline, now.
    public static func detached(_ body: @escaping () -> Void) {
        if let thread = start(ThreadBox(body)) { pthread_detach(thread) }
    }
}

struct ThreadFailure: Error, CustomStringConvertible {
    var description: String { "a worker thread gave no result" }
}
