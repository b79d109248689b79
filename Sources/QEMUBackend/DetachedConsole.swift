import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// The console of a detached interactive recording (`tt record --detach -c`), kept by a
/// process of tt's own (`tt console --keep`, started by tt record in its own session) for the
/// whole recording. QEMU's side is exactly the foreground one (the same socket chardev, so the
/// same qemu.argv and replay): QEMU waits for the keeper before the guest starts, and the
/// keeper reads every byte the guest writes whether anyone is attached or not — a socket
/// chardev with no client fails the UART's writes, and a replay then writes nothing where the
/// recording lost them, so QEMU's own `logfile=` would not give a replay byte-identical to the
/// recording. The keeper appends the output to console.record and listens on `attach.sock`
/// (0600) for one `tt console` at a time: a new one first gets console.record so far, then the
/// output as it comes; its keys go to the guest, which QEMU's record/replay logs as input.
public enum ConsoleKeeper {
    /// Keep the console of the recording QEMU `pid` until QEMU closes it (the guest's end,
    /// tt record -S, Ctrl-A x in tt console) or `cancellation`. `ready` is called once the
    /// attach socket is there.
    public static func keep(_ state: StateDirectory, qemu pid: Int32, cancellation: Cancellation, ready: () -> Void) throws {
        guard let link = try InteractiveConsole.connect(state, qemu: pid, cancellation: cancellation) else { return }
        state.remove(StateFile.consoleAttach)
        let listener = try UnixSocket.listen(at: state.file(StateFile.consoleAttach))
        defer {
            close(listener)
            state.remove(StateFile.consoleAttach)
        }
        ready()
        var client: Int32 = -1
        var toClient: [UInt8] = []
        func drop() {
            if client >= 0 { close(client) }
            client = -1
            toClient = []
        }
        defer { drop() }
        link.show = { bytes in
            guard client >= 0 else { return }
            toClient += bytes
            // A client that stopped reading loses its place, not the guest's output (which is
            // in console.record): it can attach again.
            if toClient.count > Self.clientLimit { drop() }
        }
        while link.outputOpen && !cancellation.isCancelled {
            var fds = link.pollDescriptors(stdin: false)
                + [pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)]
            if client >= 0 { fds.append(pollfd(fd: client, events: Int16(POLLIN) | (toClient.isEmpty ? 0 : Int16(POLLOUT)), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), 1000)
            link.pumpOutput()
            link.flushInput()
            let newcomer = accept(listener, nil, nil)
            if newcomer >= 0 {
                _ = fcntl(newcomer, F_SETFD, FD_CLOEXEC)
                _ = fcntl(newcomer, F_SETFL, fcntl(newcomer, F_GETFL) | O_NONBLOCK)
                if client >= 0 || !isOwnUser(newcomer) {
                    _ = Array("tt: this console is attached elsewhere (or you are not its owner)\r\n".utf8).withUnsafeBytes {
                        send(newcomer, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                    }
                    close(newcomer)
                } else {
                    client = newcomer
                    // What the guest wrote so far: console.record holds exactly the bytes shown
                    // before this point (the keeper is their only writer, in this thread).
                    toClient = Self.history(state)
                }
            }
            guard client >= 0 else { continue }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = buf.withUnsafeMutableBytes { recv(client, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                link.queue(buf[0..<n])
                link.flushInput()
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                drop()
                continue
            }
            while !toClient.isEmpty {
                let sent = toClient.withUnsafeBytes { send(client, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if sent > 0 { toClient.removeFirst(sent); continue }
                if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { break }
                drop()
                break
            }
        }
    }

    /// Output queued for a client that is not reading, at most (then it is let go).
    static let clientLimit = 16 << 20

    /// console.record so far for a new attachment: its last `clientLimit / 2` bytes at most
    /// (a guest that wrote more is shown from there; the file keeps it all).
    static func history(_ state: StateDirectory) -> [UInt8] {
        guard let (fd, size) = try? SafeFiles.openForReading(state.file(StateFile.recordConsole), noFollow: true) else { return [] }
        defer { try? fd.close() }
        let count = min(size, clientLimit / 2)
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes[done...].withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress!, $0.count, off_t(size - count + done)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return Array(bytes[0..<done])
    }

    /// The peer runs as this process's user (the socket is 0600 in a 0700 directory already).
    private static func isOwnUser(_ fd: Int32) -> Bool {
        // struct ucred (pid, uid, gid): Glibc shows it only with _GNU_SOURCE.
        var cred: (pid: pid_t, uid: uid_t, gid: gid_t) = (0, 0, 0)
        var len = socklen_t(MemoryLayout<(pid_t, uid_t, gid_t)>.size)
        return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid()
    }

    /// Start the keeper of a detached recording's console (`tt console --keep`) and wait
    /// until its attach socket is there. Its own session: the terminal's signals and hang-up
    /// do not reach it. Its errors before it is ready come out on this command's stderr.
    static func start(_ state: StateDirectory, qemu pid: Int32) throws {
        guard let tt = readSymbolicLink(FilePath("/proc/self/exe")) else {
            throw QEMUError("/proc/self/exe: cannot find tt's own executable to keep the console")
        }
        var c = Subprocess.Configuration([tt.string, "console", "--keep", "-s", state.path.string, state.name],
                                         output: .null, error: .inherit)
        c.newSession = true
        let keeper = try Subprocess.spawn(c)
        let deadline = monotonicMilliseconds() + Int(QEMUMachine.answerTimeoutMS)
        while true {
            if (try? SafeFiles.lstatIfPresent(state.file(StateFile.consoleAttach))).flatMap({ $0 }) != nil { return }
            if let status = keeper.reap() {
                throw QEMUError("\(state.file(StateFile.consoleAttach)): the console keeper ended before it was ready (\(status))")
            }
            guard monotonicMilliseconds() < deadline else {
                keeper.terminate()
                throw QEMUError("\(state.file(StateFile.consoleAttach)): the console keeper was not ready within \(QEMUMachine.answerTimeoutMS / 1000) s")
            }
            usleep(20_000)
        }
    }
}

/// `tt console NAME`: this terminal attached to a detached interactive recording's console.
public enum ConsoleAttachment {
    public enum Outcome: Equatable {
        /// The recording ended (the guest's end, tt record -S) and the keeper closed it.
        case ended
        /// Ctrl-A d: the recording goes on.
        case detached
        /// Ctrl-A x: the recording was stopped from here.
        case stopped
    }

    /// Attach: refused with one line when there is no recording in progress or it has no
    /// console to attach to (exit 69), or when the attach socket is not a socket of this user
    /// (66); never through a link.
    public static func attach(_ state: StateDirectory, cancellation: Cancellation) throws -> Outcome {
        let path = state.file(StateFile.consoleAttach)
        guard QEMURecorder.recordingPID(state) != nil else {
            throw QEMUError("\(state.path): no recording in progress (it ended, or was never started); tt replay -c shows a recording's console",
                            status: ExitStatus.unavailable)
        }
        guard let st = try SafeFiles.lstatIfPresent(path) else {
            throw QEMUError("\(state.path): the recording in progress has no console to attach to (only tt record --detach -c makes one)",
                            status: ExitStatus.unavailable)
        }
        guard st.st_mode & S_IFMT == S_IFSOCK, st.st_uid == geteuid() else {
            throw QEMUError("\(path): not a socket of this user (\(SafeFiles.kind(st.st_mode))); refusing to attach to it", status: ExitStatus.noInput)
        }
        let socket: UnixSocket
        do {
            socket = try UnixSocket(connectingTo: path)
        } catch {
            throw QEMUError("\(path): nobody serves the console (its keeper, tt console --keep, ended; the recording runs on without it): \(error)",
                            status: ExitStatus.unavailable)
        }
        _ = fcntl(socket.fd, F_SETFL, fcntl(socket.fd, F_GETFL) | O_NONBLOCK)
        let terminal = RawTerminal(fd: 0)
        defer { terminal?.restore() }
        if terminal != nil { fputs("tt: attached to \(state.name)'s console; Ctrl-A d detaches, Ctrl-A x ends the recording, Ctrl-A h helps\n", stderr) }
        var escape = ConsoleEscape(detaches: true)
        var pending: [UInt8] = []
        var inputOpen = true
        var stopping = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while !cancellation.isCancelled {
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN) | (pending.isEmpty ? 0 : Int16(POLLOUT)), revents: 0),
                       pollfd(fd: cancellation.descriptor, events: Int16(POLLIN), revents: 0)]
            if inputOpen && !stopping { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), 1000)
            // The guest's output, until the keeper closes (the recording ended).
            while true {
                let n = buf.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 { InteractiveConsole.writeAllToStdout(buf[0..<n]); continue }
                if n < 0 && errno == EINTR { continue }
                if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { return stopping ? .stopped : .ended }
                break
            }
            if fds.count > 2 && fds[2].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress!, 4096) }
                if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) { inputOpen = false }
                for action in n > 0 ? escape.feed(buf[0..<n]) : [] {
                    switch action {
                    case .send(let bytes): pending += bytes.prefix(max(0, InteractiveConsole.pendingLimit - pending.count))
                    case .help: fputs("\n" + ConsoleEscape.attachedHelp + "\n", stderr)
                    case .detach: return .detached
                    case .stop:
                        // As tt record -S: QEMU closes the recording; the keeper then sends
                        // what is left and closes, which ends this loop.
                        stopping = true
                        _ = QEMURecorder.stop(state)
                    }
                }
            }
            while !pending.isEmpty {
                let n = pending.withUnsafeBytes { send(socket.fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n > 0 { pending.removeFirst(n); continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { break }
                return stopping ? .stopped : .ended
            }
        }
        throw Cancelled(signal: cancellation.signal == 0 ? SIGINT : cancellation.signal)
    }
}
