import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A connected unix stream socket with a read buffer: the transport under the gdb-remote
/// client. Paths longer than sun_path allows are reached through the
/// directory's /proc/self/fd link, so deep state directories work.
public final class UnixSocket {
    public let fd: Int32
    public let path: FilePath
    private var buffer: [UInt8] = []
    private var start = 0
    /// How long a read waits for the peer before giving up (milliseconds; −1: forever).
    /// A peer that is stopped or hung (kill -STOP) then gives a clear error, not a hang.
    public var receiveTimeoutMS: Int32 = -1

    public init(connectingTo path: FilePath) throws {
        self.path = path
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "socket") }
        do {
            try Self.withAddress(path) { addr, len in
                guard connect(s, addr, len) == 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "connect") }
            }
        } catch {
            close(s)
            throw error
        }
        fd = s
    }

    /// A socket from `accept` on a listening one.
    public init(accepted fd: Int32, path: FilePath) {
        self.fd = fd
        self.path = path
    }

    /// A listening socket at `path`, non-blocking, mode 0600 from the start (made under umask
    /// 0177: a socket's mode is 0777 less the umask). bind never follows a link and fails on any file already there (EADDRINUSE), so
    /// nothing planted at `path` is used or replaced.
    public static func listen(at path: FilePath, backlog: Int32 = 4) throws -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "socket") }
        do {
            let oldMask = umask(0o177)
            defer { umask(oldMask) }
            try withAddress(path) { addr, len in
                guard bind(s, addr, len) == 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "bind") }
            }
            guard Glibc.listen(s, backlog) == 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "listen") }
        } catch {
            close(s)
            throw error
        }
        return s
    }

    /// `path` as a socket address for `body`. Paths longer than sun_path allows go through
    /// the directory's /proc/self/fd link.
    private static func withAddress(_ path: FilePath, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> Void) throws {
        var dirFD: Int32 = -1
        defer { if dirFD >= 0 { close(dirFD) } }
        var target = path.string
        if target.utf8.count >= 100, let name = path.lastComponent?.string {
            dirFD = open(path.removingLastComponent().string, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard dirFD >= 0 else { throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "open directory") }
            target = "/proc/self/fd/\(dirFD)/\(name)"
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(target.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemError(path: path, message: "socket path too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        try withUnsafePointer(to: &addr) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Receive area, reused for every read.
    private let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    deinit {
        close(fd)
        chunk.deallocate()
    }

    public func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { throw PeerClosed(path: path) }
                throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "send")
            }
            off += n
        }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Bytes buffered but not yet consumed.
    public var hasBufferedData: Bool { start < buffer.count }

    /// Wait up to `timeoutMS` (−1 forever) for data; false on timeout.
    /// Wait until data can be read, calling `tick` every `intervalMS` while none can (the
    /// caller keeps the peer able to answer there); gives up after `receiveTimeoutMS`, like a read.
    public func waitReadable(every intervalMS: Int32, calling tick: () throws -> Void) throws {
        let deadline = receiveTimeoutMS >= 0 ? monotonicMilliseconds() + Int(receiveTimeoutMS) : nil
        while try !waitReadable(timeoutMS: intervalMS) {
            try tick()
            if let deadline, monotonicMilliseconds() >= deadline {
                throw Timeout(path: path, milliseconds: receiveTimeoutMS)
            }
        }
    }

    public func waitReadable(timeoutMS: Int32) throws -> Bool {
        if hasBufferedData { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let rc = poll(&p, 1, timeoutMS)
            if rc < 0 {
                if errno == EINTR { continue }
                throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "poll")
            }
            return rc > 0
        }
    }

    /// Read more bytes into the buffer; throws when the peer closed.
    private func fill() throws {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        if receiveTimeoutMS >= 0, try !waitReadable(timeoutMS: receiveTimeoutMS) {
            throw Timeout(path: path, milliseconds: receiveTimeoutMS)
        }
        while true {
            let n = recv(fd, chunk.baseAddress!, chunk.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { throw PeerClosed(path: path) }
                throw SystemError(path: path, errno: Errno(rawValue: errno), doing: "recv")
            }
            if n == 0 { throw PeerClosed(path: path) }
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            return
        }
    }

    public func readByte() throws -> UInt8 {
        if start >= buffer.count { try fill() }
        let b = buffer[start]
        start += 1
        return b
    }

    /// One line without its terminating newline.
    public func readLine() throws -> [UInt8] {
        while true {
            if let nl = buffer[start...].firstIndex(of: 0x0a) {
                let line = Array(buffer[start..<nl])
                start = nl + 1
                return line
            }
            try fill()
        }
    }

    /// The peer sent nothing within `receiveTimeoutMS`.
    public struct Timeout: Error, CustomStringConvertible, ExitStatusProviding {
        public let path: FilePath
        public let milliseconds: Int32
        public var description: String {
            "\(path): no answer within \(milliseconds / 1000) s (is the process at the other end stopped or hung?)"
        }
        public var exitStatus: Int32 { ExitStatus.unavailable }
    }

    public struct PeerClosed: Error, CustomStringConvertible {
        public let path: FilePath
        public var description: String { "\(path): connection closed by the peer" }
    }
}
