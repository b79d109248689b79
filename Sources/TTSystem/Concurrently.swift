#if canImport(Glibc)
import Glibc
#endif

/// A body to run on a thread of its own and, once joined, its result.
private final class ThreadBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Run each body on a thread of its own and wait for all: their results, in order.
/// (The replay backends are driven synchronously, one object per thread.)
public func runConcurrently<T>(_ bodies: [() throws -> T]) -> [Result<T, Error>] {
    var results = [Result<T, Error>?](repeating: nil, count: bodies.count)
    var threads: [pthread_t] = []
    results.withUnsafeMutableBufferPointer { out in
        let slots = out
        for (i, body) in bodies.enumerated() {
            let box = ThreadBox { slots[i] = Result { try body() } }
            var thread = pthread_t()
            let unmanaged = Unmanaged.passRetained(box)
            let rc = pthread_create(&thread, nil, { raw in
                Unmanaged<ThreadBox>.fromOpaque(raw!).takeRetainedValue().body()
                return nil
            }, unmanaged.toOpaque())
            if rc == 0 {
                threads.append(thread)
            } else {
                unmanaged.release()
                box.body()
            }
        }
        for t in threads { pthread_join(t, nil) }
    }
    return results.map { $0 ?? .failure(ThreadFailure()) }
}

struct ThreadFailure: Error, CustomStringConvertible {
    var description: String { "a worker thread gave no result" }
}
