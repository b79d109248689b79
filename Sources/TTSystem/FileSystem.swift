import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The target of the symbolic link at `path` (readlink(2)), or nil when it is not one or
/// cannot be read. For /proc's links: a process's working directory, the running executable.
public func readSymbolicLink(_ path: FilePath) -> FilePath? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = path.withPlatformString { readlink($0, &buffer, buffer.count - 1) }
    guard n > 0 else { return nil }
    buffer[n] = 0
    return FilePath(String(cString: buffer))
}

