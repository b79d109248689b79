import SystemPackage

/// The whole contents of a small file (a configuration file, a sidecar index), read to
/// its end however the reads come back; nil when the file does not exist. A file larger
/// than `limit` bytes is an error rather than a silently truncated read.
public func readSmallFile(_ path: FilePath, limit: Int) throws -> [UInt8]? {
    let fd: FileDescriptor
    do {
        fd = try SafeFiles.openForReading(path).fd
    } catch let e as SystemError where e.errno == .noSuchFileOrDirectory {
        return nil
    }
    return try fd.closeAfter {
        var out = [UInt8]()
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
