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
        let box = ThreadBox { self.outcome = Result { try body() } }
        var thread = pthread_t()
        let unmanaged = Unmanaged.passRetained(box)
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadBox>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, unmanaged.toOpaque())
        if rc == 0 {
            self.thread = thread
        } else {
            unmanaged.release()
            box.body()
        }
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
        let unmanaged = Unmanaged.passRetained(ThreadBox(body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadBox>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, unmanaged.toOpaque())
        if rc == 0 {
            pthread_detach(thread)
        } else {
            unmanaged.takeRetainedValue().body()
        }
    }
}

struct ThreadFailure: Error, CustomStringConvertible {
    var description: String { "a worker thread gave no result" }
}
