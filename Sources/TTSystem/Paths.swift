import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `path` made absolute against the current directory (lexically normalized), so that a
/// path stored for later commands means the same from any directory. Nil when the current
/// directory cannot be found.
public func absolutePath(_ path: FilePath) -> FilePath? {
    if path.isAbsolute { return path.lexicallyNormalized() }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buf, buf.count) != nil else { return nil }
    return FilePath(String(cString: buf)).pushing(path).lexicallyNormalized()
}
