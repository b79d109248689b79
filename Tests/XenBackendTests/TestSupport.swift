import XCTest
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Run `body` with file descriptor 2 redirected into a pipe; return what was written there.
/// This is how the tests prove the Xen libraries print nothing on their own.
func capturingStderr<T>(_ body: () throws -> T) rethrows -> (T, String) {
    var fds: [Int32] = [0, 0]
    precondition(pipe(&fds) == 0)
    fflush(stderr)
    let saved = dup(2)
    dup2(fds[1], 2)
    close(fds[1])
    let result: T
    do {
        result = try body()
    } catch {
        fflush(stderr); dup2(saved, 2); close(saved); close(fds[0])
        throw error
    }
    fflush(stderr)
    dup2(saved, 2)
    close(saved)
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    // The write end is closed now (ours and the saved copy restored), so read sees EOF.
    while true {
        let n = read(fds[0], &chunk, chunk.count)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    close(fds[0])
    return (result, String(decoding: bytes, as: UTF8.self))
}

/// A scratch directory tree that disappears after the test.
final class FakeRoot {
    let path: FilePath

    init() throws {
        var template = Array("/tmp/tt-xen-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Errno(rawValue: errno) }
        path = FilePath(String(cString: made))
    }

    deinit {
        _ = try? FileManager.default.removeItem(atPath: path.string)
    }

    func write(_ relative: String, _ text: String) throws {
        let file = path.pushing(FilePath(relative))
        try FileManager.default.createDirectory(atPath: file.removingLastComponent().string,
                                                withIntermediateDirectories: true)
        try text.write(toFile: file.string, atomically: false, encoding: .utf8)
    }
}
