import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The one whole-file reader: the contents of a small file (a configuration file, a
/// state file, a sidecar index, a /proc or /sys file), read to its end however the reads
/// come back — /proc files report size 0, so the size is only a hint. nil when the file
/// does not exist. A file larger than `limit` bytes is an error rather than a silently
/// truncated read. Opened close-on-exec; `noFollow` refuses a symlink as the last
/// component (for files in directories tt owns, where a planted link would redirect it).
public func readSmallFile(_ path: FilePath, limit: Int, noFollow: Bool = false) throws -> [UInt8]? {
    let fd: FileDescriptor
    do {
        // O_NONBLOCK for the open only: a FIFO planted under a state file's name must not
        // block it; the type is checked on the descriptor (no race with a rename).
        var options: FileDescriptor.OpenOptions = [.closeOnExec, .nonBlocking]
        if noFollow { options.insert(.noFollow) }
        fd = try FileDescriptor.open(path, .readOnly, options: options)
    } catch Errno.noSuchFileOrDirectory {
        return nil
    } catch let e as Errno {
        throw SystemError(path: path, errno: e, doing: "open")
    }
    let st: Stat
    do { st = try fd.stat() } catch { try? fd.close(); throw SystemError(path: path, errno: error, doing: "stat") }
    guard st.type == .regular else {
        try? fd.close()
        throw SystemError(path: path, message: "open: \(SafeFiles.kind(st.mode.rawValue)), not a regular file", status: ExitStatus.noInput)
    }
    _ = fcntl(fd.rawValue, F_SETFL, fcntl(fd.rawValue, F_GETFL) & ~O_NONBLOCK)
    return try fd.closeAfter {
        let sizeHint = Optional(st.size).map { Int(clamping: $0) } ?? 0
        var out = [UInt8]()
        out.reserveCapacity(min(sizeHint, limit) + 1)
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try SystemError.naming(path, "read") { try chunk.withUnsafeMutableBytes { try fd.read(into: $0) } }
            if n == 0 { break }
            out += chunk[0..<n]
            if out.count > limit { throw SystemError(path: path, message: "larger than \(limit) bytes") }
        }
        return out
    }
}
