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

extension SystemError: ExitStatusProviding {
    /// A missing file is "no input"; another failed call is an I/O error; a file-level
    /// problem without errno (not a regular file, not ELF) is malformed input.
    public var exitStatus: Int32 {
        switch errno {
        case .noSuchFileOrDirectory?: return ExitStatus.noInput
        case .some: return ExitStatus.ioError
        case nil: return ExitStatus.dataError
        }
    }
}
