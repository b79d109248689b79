import SystemPackage

/// The one whole-file reader: the contents of a small file (a configuration file, a
/// state file, a sidecar index, a /proc or /sys file), read to its end however the reads
/// come back — /proc files report size 0, so the size is only a hint. nil when the file
/// does not exist. A file larger than `limit` bytes is an error rather than a silently
/// truncated read. Opened close-on-exec; `noFollow` refuses a symlink as the last
/// component (for files in directories tt owns, where a planted link would redirect it).
public func readSmallFile(_ path: FilePath, limit: Int, noFollow: Bool = false) throws -> [UInt8]? {
    let opened: (fd: FileDescriptor, size: Int)
    do {
        opened = try SafeFiles.openForReading(path, pseudoFiles: true, noFollow: noFollow)
    } catch let e as SystemError where e.errno == .noSuchFileOrDirectory {
        return nil
    }
    let fd = opened.fd
    return try fd.closeAfter {
        var out = [UInt8]()
        out.reserveCapacity(min(opened.size, limit) + 1)
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
