import SystemPackage

/// A failed system call or file-level problem, naming the file it concerns.
public struct SystemError: Error, CustomStringConvertible {
    public let path: FilePath?
    public let errno: Errno?
    public let message: String

    public init(path: FilePath?, errno: Errno, doing: String) {
        self.path = path
        self.errno = errno
        self.message = "\(doing): \(errno.description)"
    }

    public init(path: FilePath?, message: String) {
        self.path = path
        self.errno = nil
        self.message = message
    }

    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }
}
