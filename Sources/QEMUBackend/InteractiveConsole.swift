import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// The escape sequences of `tt record -c`, as QEMU's own console has them: Ctrl-A x ends
/// the recording, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A h (or ?) prints the help; Ctrl-A
/// followed by any other key is dropped, both bytes. Everything else goes to the guest.
/// The state (an escape pending) carries over from one read to the next.
public struct ConsoleEscape: Sendable {
    public static let escapeByte: UInt8 = 0x01

    public enum Action: Equatable, Sendable {
        /// Bytes for the guest's serial port.
        case send([UInt8])
        /// End the recording (Ctrl-A x).
        case stop
        /// Print the help (Ctrl-A h).
        case help
        /// Leave the recording running without this console (Ctrl-A d, `tt console` only).
        case detach
    }

    public static let help = """
        tt record -c: the guest's serial console. Keys go to the guest; Ctrl-A then:
          x         end the recording (QEMU is stopped as tt record -S does; it stays replayable)
          Ctrl-A    send Ctrl-A to the guest
          h or ?    this help
        """

    public static let attachedHelp = """
        tt console: the recording's serial console. Keys go to the guest; Ctrl-A then:
          d         detach: the recording goes on (tt console NAME attaches again)
          x         end the recording (QEMU is stopped as tt record -S does; it stays replayable)
          Ctrl-A    send Ctrl-A to the guest
          h or ?    this help
        """

    /// A Ctrl-A was the last byte seen.
    public private(set) var pendingEscape = false
    /// Ctrl-A d detaches (`tt console`); in `tt record -c` there is nothing to detach from.
    public let detaches: Bool

    public init(detaches: Bool = false) {
        self.detaches = detaches
    }

    /// The actions for the next bytes read, in order (consecutive guest bytes merged).
    public mutating func feed<S: Sequence>(_ bytes: S) -> [Action] where S.Element == UInt8 {
        var actions: [Action] = []
        var plain: [UInt8] = []
        func flush() {
            if !plain.isEmpty { actions.append(.send(plain)); plain = [] }
        }
        for b in bytes {
            if pendingEscape {
                pendingEscape = false
                switch b {
                case Self.escapeByte: plain.append(b)
                case UInt8(ascii: "x"): flush(); actions.append(.stop)
                case UInt8(ascii: "h"), UInt8(ascii: "?"): flush(); actions.append(.help)
                case UInt8(ascii: "d") where detaches: flush(); actions.append(.detach)
                default: break
                }
            } else if b == Self.escapeByte {
                pendingEscape = true
            } else {
                plain.append(b)
            }
        }
        flush()
        return actions
    }
}

/// The controlling terminal in raw mode while `tt record -c` runs: keys (Ctrl-C too) go to
/// the guest, unechoed and unbuffered; output processing stays on, so the guest's "\n"
/// still starts a new line. `restore()` (also on deinit) puts back exactly what was there.
final class RawTerminal {
    private let fd: Int32
    private var saved: termios
    private var restored = false

    /// nil when `fd` is not a terminal (nothing is changed then).
    init?(fd: Int32) {
        guard isatty(fd) == 1 else { return nil }
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else { return nil }
        self.fd = fd
        saved = t
        var raw = t
        raw.c_iflag &= ~tcflag_t(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON)
        raw.c_lflag &= ~tcflag_t(ECHO | ECHONL | ICANON | ISIG | IEXTEN)
        raw.c_cflag &= ~tcflag_t(CSIZE | PARENB)
        raw.c_cflag |= tcflag_t(CS8)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        _ = tcsetattr(fd, TCSAFLUSH, &raw)
    }

    func restore() {
        guard !restored else { return }
        restored = true
        _ = tcsetattr(fd, TCSAFLUSH, &saved)
    }

    deinit { restore() }
}

/// The interactive console of a recording: the guest's serial port on a unix socket, connected
/// to tt's standard input and output (a foreground recording), or to whoever is attached
/// through `ConsoleKeeper` (a detached one). Everything the guest writes is also appended to
/// `console.record`, as the output-only console does.
final class InteractiveConsole {
    let socket: UnixSocket
    private let record: FileDescriptor
    private var escape = ConsoleEscape()
    /// Bytes for the guest not sent yet (the socket is never written blocking: a guest that
    /// does not read its serial port must not stop tt from reading the guest's output).
    private var pending: [UInt8] = []
    static let pendingLimit = 1 << 20
    private(set) var inputOpen = true
    private(set) var outputOpen = true
    /// Where the guest's output goes besides console.record: standard output by default.
    var show: (ArraySlice<UInt8>) -> Void = InteractiveConsole.writeAllToStdout

    /// Connect to QEMU's console socket, waiting for QEMU to listen (it waits for this
    /// connection before the guest starts). nil when QEMU died first or `cancellation` came.
    static func connect(_ state: StateDirectory, qemu pid: Int32, cancellation: Cancellation) throws -> InteractiveConsole? {
        let path = state.file(StateFile.consoleSocket)
        let deadline = monotonicMilliseconds() + Int(QEMUMachine.answerTimeoutMS)
        while true {
            // Only the socket QEMU made: never through a link, never someone else's.
            var st = stat()
            if lstat(path.string, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK, st.st_uid == geteuid() else {
                    throw QEMUError("\(path): not a socket of this user; refusing to connect the console to it")
                }
                if let socket = try? UnixSocket(connectingTo: path) {
                    return InteractiveConsole(socket: socket, record: try SafeFiles.createTemporary(state.file(StateFile.recordConsole)))
                }
            }
            guard RunningProcess(pid: pid).isAlive, !cancellation.isCancelled else { return nil }
            guard monotonicMilliseconds() < deadline else {
                throw QEMUError("\(path): QEMU did not open the console socket within \(QEMUMachine.answerTimeoutMS / 1000) s")
            }
            var p = pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 20)
        }
    }

    private init(socket: UnixSocket, record: FileDescriptor) {
        self.socket = socket
        self.record = record
        _ = fcntl(socket.fd, F_SETFL, fcntl(socket.fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { try? record.close() }

    /// What to poll: the socket (output, and writable while input is pending) and, when
    /// `stdin`, standard input.
    func pollDescriptors(stdin: Bool = true) -> [pollfd] {
        var fds: [pollfd] = []
        if outputOpen {
            fds.append(pollfd(fd: socket.fd, events: Int16(POLLIN) | (pending.isEmpty ? 0 : Int16(POLLOUT)), revents: 0))
        }
        if inputOpen && stdin { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
        return fds
    }

    /// Copy what the guest wrote to stdout and console.record; false once QEMU closed it.
    @discardableResult
    func pumpOutput() -> Bool {
        guard outputOpen else { return false }
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                _ = try? record.writeAll(buf[0..<n])
                show(buf[0..<n])
                continue
            }
            if n < 0 && errno == EINTR { continue }
            // EOF, or a reset (QEMU exited with typed bytes unread): the console is closed.
            if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { outputOpen = false; pending = [] }
            return outputOpen
        }
    }

    /// Read the keys typed; returns the escape actions other than bytes for the guest,
    /// which are queued and sent as the socket takes them.
    func pumpInput() -> [ConsoleEscape.Action] {
        guard inputOpen else { return [] }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return [] }
        if n <= 0 { inputOpen = false; return [] } // EOF: the guest keeps running
        var commands: [ConsoleEscape.Action] = []
        for action in escape.feed(buf[0..<n]) {
            if case .send(let bytes) = action {
                queue(bytes)
            } else {
                commands.append(action)
            }
        }
        flushInput()
        return commands
    }

    /// Bytes for the guest, sent as the socket takes them (beyond `pendingLimit`, dropped).
    func queue<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if outputOpen { pending += bytes.prefix(max(0, Self.pendingLimit - pending.count)) }
    }

    /// Send as much pending input as the socket takes now.
    func flushInput() {
        while !pending.isEmpty && outputOpen {
            let n = pending.withUnsafeBytes { send(socket.fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n > 0 { pending.removeFirst(n); continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
            pending = []
        }
    }

    static func writeAllToStdout(_ bytes: ArraySlice<UInt8>) {
        var off = bytes.startIndex
        while off < bytes.endIndex {
            let n = bytes[off...].withUnsafeBytes { write(1, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }
}
