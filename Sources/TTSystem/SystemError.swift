import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call or file-level problem, naming the file it concerns.
public struct SystemError: Error, CustomStringConvertible {
    public let path: FilePath?
    public let errno: Errno?
    public let message: String
    /// The exit status when it is not the one `errno` implies (e.g. 73 for a failed create).
    public let status: Int32?

    public init(path: FilePath?, errno: Errno, doing: String, status: Int32? = nil) {
        self.path = path
        self.errno = errno
        self.message = "\(doing): \(errno.description)"
        self.status = status
    }

    public init(path: FilePath?, message: String, status: Int32? = nil) {
        self.path = path
        self.errno = nil
        self.message = message
        self.status = status
    }

    /// The current `errno` after a failed call on `path`.
    public static func last(_ path: FilePath?, doing: String, status: Int32? = nil) -> SystemError {
        SystemError(path: path, errno: Errno(rawValue: Glibc.errno), doing: doing, status: status)
    }

    /// Run `body`, giving a bare `Errno` it throws (from swift-system calls), or a failed
    /// call's error that names no file (`OutputBuffer`'s writes), the path and the
    /// operation, so that no error line is a lone "No space left on device".
    public static func naming<T>(_ path: FilePath, _ doing: String, status: Int32? = nil, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as Errno {
            throw SystemError(path: path, errno: e, doing: doing, status: status)
        } catch let e as SystemError where e.path == nil && e.errno != nil {
            throw SystemError(path: path, errno: e.errno!, doing: doing, status: status)
        }
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
        if let status { return status }
        switch errno {
        case .noSuchFileOrDirectory?: return ExitStatus.noInput
        case .some: return ExitStatus.ioError
        case nil: return ExitStatus.dataError
        }
    }
}
