import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Problems with state directories, names and locks.
public enum StateError: Error, CustomStringConvertible, ExitStatusProviding {
    case badName(String, String)
    case badPath(String, String)
    case missing(FilePath)
    case exists(FilePath)
    case busy(FilePath, pid: Int32)
    case vmRunning(FilePath, vm: String)
    case noVM(FilePath)
    case badFile(FilePath, String)
    /// The path cannot become (or be used as) a state directory: 73.
    case refused(FilePath, String)
    /// Owned by someone else or writable by others: tt, running as root, would act on
    /// files another user controls.
    case notOwned(FilePath, String)
    /// QEMU did not end the recording cleanly; the reason is QEMU's own.
    case incomplete(FilePath, String)

    public var description: String {
        switch self {
        case .badName(let n, let why): return "bad name '\(n)': \(why)"
        case .badPath(let p, let why): return "bad state directory '\(p)': \(why)"
        case .missing(let p): return "\(p): no recording here (run tt record first)"
        case .exists(let p): return "\(p): a recording already exists (use -f to replace it)"
        case .busy(let p, let pid):
            return pid > 0 ? "\(p): in use by pid \(pid)" : "\(p): in use by another tt command (it has not written its pid to lock yet)"
        case .vmRunning(let p, let vm): return "\(p): a VM of this state directory is running: \(vm)"
        case .refused(let p, let why): return "\(p): \(why)"
        case .notOwned(let p, let why): return "\(p): \(why); refusing to use it"
        case .incomplete(let p, let why): return "\(p): the recording is incomplete (\(why)); record it again with tt record -f"
        case .noVM(let p): return "\(p): no replay VM is running (start one with tt replay)"
        case .badFile(let p, let why): return "\(p): \(why)"
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .badName, .badPath, .badFile, .incomplete: return ExitStatus.dataError
        case .missing, .noVM: return ExitStatus.noInput
        case .refused: return ExitStatus.cannotCreate
        case .notOwned: return ExitStatus.noInput
        default: return ExitStatus.failure
        }
    }
}

/// A recording's state directory: validated names, 0700 directories, 0600 files, and
/// small text files (`qemu.argv`, `symfile`, `pid`, ...).
public struct StateDirectory: Sendable {
    public let path: FilePath
    public let name: String

    /// Names become directory names: no `/`, no `..`, no control characters, no leading
    /// `-` or `.`; at most 64 of [A-Za-z0-9._-].
    public static func validate(name: String) throws {
        guard !name.isEmpty else { throw StateError.badName(name, "empty") }
        guard name.utf8.count <= 64 else { throw StateError.badName(name, "longer than 64 bytes") }
        guard !name.contains("/") else { throw StateError.badName(name, "contains '/'") }
        guard !name.contains("..") else { throw StateError.badName(name, "contains '..'") }
        guard name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw StateError.badName(name, "contains control characters")
        }
        guard let first = name.first, first != "-", first != "." else {
            throw StateError.badName(name, "starts with '-' or '.'")
        }
        guard name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                                                || "._-".unicodeScalars.contains($0) }) else {
            throw StateError.badName(name, "only letters, digits, '.', '_' and '-' are allowed")
        }
    }

    /// `explicit` (-s) wins; otherwise `<base>/<name>`. Relative paths are made absolute.
    public init(name: String, explicit: String?, base: String) throws {
        try Self.validate(name: name)
        self.name = name
        let raw = explicit ?? base
        guard !raw.isEmpty else { throw StateError.badPath(raw, "empty") }
        guard raw.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw StateError.badPath(raw, "contains control characters")
        }
        var p = FilePath(raw)
        // A '..' would make the directory depend on where symlinks point: refuse it.
        guard !p.components.contains(where: { $0.kind == .parentDirectory }) else {
            throw StateError.badPath(raw, "contains '..'")
        }
        guard let absolute = absolutePath(p) else { throw StateError.badPath(raw, "cannot find the current directory") }
        p = absolute
        path = explicit == nil ? p.appending(name) : p
    }

    public func file(_ name: String) -> FilePath { path.appending(name) }

    public var exists: Bool { Self.isDirectory(path) }

    static func isDirectory(_ p: FilePath) -> Bool {
        (try? p.stat(followTargetSymlink: false))?.type == .directory
    }

    public func fileExists(_ name: String) -> Bool {
        guard let dfd = try? openDirectory() else { return false }
        defer { close(dfd) }
        var st = stat()
        return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// The directory itself, never through a symlink: every file operation below is
    /// relative to this descriptor (openat, renameat, unlinkat), so swapping the path for
    /// a link after the checks cannot redirect a write.
    func openDirectory() throws -> Int32 {
        let fd = open(path.string, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ELOOP || errno == ENOTDIR { try StateOwnership.check(path) }
            throw SystemError.last(path, doing: "open the state directory")
        }
        return fd
    }

    /// Create the directory (missing parents too) with mode 0700 and tt's marker, or take
    /// an existing one that is tt's (see StateOwnership).
    public func create() throws { try StateOwnership.create(self) }

    /// A recording is here (and is the caller's). `complete`: and it may be replayed — an
    /// incomplete one is refused; without it (a command that only kills or inspects) it is taken.
    public func requireRecording(complete: Bool = true) throws {
        try StateOwnership.check(path)
        guard StateOwnership.hasRecording(self) else { throw StateError.missing(path) }
        if complete, let why = readIfPresent(StateFile.incomplete) {
            throw StateError.incomplete(path, why.trimmingWhitespace)
        }
    }

    /// Write a file atomically (temporary + rename), mode 0600. The temporary is created
    /// with O_EXCL|O_NOFOLLOW: a link planted at its name fails the create.
    public func write(_ name: String, _ text: String) throws {
        let dfd = try openDirectory()
        defer { close(dfd) }
        let tmp = "." + name + ".tmp"
        var st = stat()
        if fstatat(dfd, tmp, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == S_IFREG { _ = unlinkat(dfd, tmp, 0) }
        let fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError.last(file(tmp), doing: "create", status: ExitStatus.cannotCreate) }
        do {
            try FileDescriptor(rawValue: fd).closeAfter {
                _ = try SystemError.naming(file(name), "write") { try FileDescriptor(rawValue: fd).writeAll(Array(text.utf8)) }
            }
        } catch {
            _ = unlinkat(dfd, tmp, 0)
            throw error
        }
        guard renameat(dfd, tmp, dfd, name) == 0 else {
            let e = SystemError.last(file(name), doing: "rename", status: ExitStatus.cannotCreate)
            _ = unlinkat(dfd, tmp, 0)
            throw e
        }
    }

    /// A state file's text (at most 4 MiB; never through a symlink planted in the directory).
    public func read(_ name: String) throws -> String {
        guard let bytes = try readSmallFile(file(name), limit: 1 << 22, noFollow: true) else {
            throw Errno.noSuchFileOrDirectory
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func readIfPresent(_ name: String) -> String? { try? read(name) }

    /// One entry per line (arguments may contain spaces, never newlines).
    public func writeLines(_ name: String, _ lines: [String]) throws {
        for l in lines where l.contains("\n") { throw StateError.badFile(file(name), "argument with a newline: \(l)") }
        try write(name, lines.map { $0 + "\n" }.joined())
    }

    public func readLines(_ name: String) throws -> [String] {
        let text = try read(name)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    /// Rename one state file to another name in the directory (names relative to a
    /// descriptor of the directory: no link in the path is followed; `to` is replaced).
    public func rename(_ from: String, to: String) throws {
        let dfd = try openDirectory()
        defer { close(dfd) }
        guard renameat(dfd, from, dfd, to) == 0 else {
            throw SystemError.last(file(from), doing: "rename to \(to)", status: ExitStatus.cannotCreate)
        }
    }

    /// A second name for one of this directory's files in `other` (a hard link; no link in
    /// either path is followed, and a symlink planted at `name` is linked as a symlink).
    public func link(_ name: String, into other: StateDirectory) throws {
        let from = try openDirectory()
        defer { close(from) }
        let to = try other.openDirectory()
        defer { close(to) }
        guard linkat(from, name, to, name, 0) == 0 else {
            throw SystemError.last(file(name), doing: "link into \(other.path)", status: ExitStatus.cannotCreate)
        }
    }

    /// The size in bytes of a state file (nil: not there), not following a link.
    public func size(_ name: String) -> UInt64? {
        guard let dfd = try? openDirectory() else { return nil }
        defer { close(dfd) }
        var st = stat()
        guard fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return UInt64(st.st_size)
    }

    /// Remove one of tt's files (never a directory, never through a link).
    public func remove(_ name: String) {
        guard let dfd = try? openDirectory() else { return }
        _ = unlinkat(dfd, name, 0)
        close(dfd)
    }

    /// Exclusive use of this state directory by this process for one command
    /// (released when the returned lock is dropped or the process dies).
    public func lock() throws -> StateLock {
        try StateOwnership.check(path)
        return try StateLock(directory: self)
    }
}

/// flock(2) on `<state>/lock`, holding our pid. The kernel drops it when the holder
/// dies, so a dead holder never blocks anyone; its processes are reaped separately.
public final class StateLock {
    private let fd: FileDescriptor

    init(directory: StateDirectory) throws {
        let path = directory.file("lock")
        let dfd = try directory.openDirectory()
        defer { close(dfd) }
        let raw = openat(dfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard raw >= 0 else { throw SystemError.last(path, doing: "open", status: ExitStatus.cannotCreate) }
        fd = FileDescriptor(rawValue: raw)
        if flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            var holder: Int32 = 0
            var buf = [UInt8](repeating: 0, count: 32)
            let n = buf.withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress!, 31, 0) }
            if n > 0 { holder = Int32(String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace) ?? 0 }
            try? fd.close()
            if e == EWOULDBLOCK { throw StateError.busy(directory.path, pid: holder) }
            throw SystemError(path: path, errno: Errno(rawValue: e), doing: "flock")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd.rawValue, 0)
        _ = text.withUnsafeBytes { pwrite(fd.rawValue, $0.baseAddress!, $0.count, 0) }
    }

    deinit { try? fd.close() }
}


/// Where state directories go by default: `state_base = PATH` in tt.conf (TT_CONFIG, or
/// /etc/xentt/tt.conf, or etc/xentt/tt.conf next to the build), overridden by the
/// environment variable TT_STATE_BASE; `-s` overrides both.
public enum TTConfiguration {
    public static let defaultStateBase = "/var/lib/tt"

    public static func stateBase() -> String {
        if let env = getenv("TT_STATE_BASE"), env.pointee != 0 { return String(cString: env) }
        for file in configFiles() {
            guard let bytes = try? readSmallFile(FilePath(file), limit: 1 << 20) else { continue }
            let text = String(decoding: bytes, as: UTF8.self)
            for line in text.split(separator: "\n") {
                let l = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let kv = l.split(separator: "=", maxSplits: 1)
                if kv.count == 2, String(kv[0]).trimmingWhitespace == "state_base" {
                    let v = String(kv[1]).trimmingWhitespace
                    if !v.isEmpty { return v }
                }
            }
        }
        return defaultStateBase
    }

    static func configFiles() -> [String] {
        var files: [String] = []
        if let c = getenv("TT_CONFIG") { files.append(String(cString: c)) }
        files.append("/etc/xentt/tt.conf")
        for root in packageRootCandidates() { files.append(root.appending("etc/xentt/tt.conf").string) }
        return files
    }

    /// Directories above the executable that may be the package's root, for a tt run
    /// from its build directory (.build/<triple>/<config>/tt).
    public static func packageRootCandidates() -> [FilePath] {
        guard var dir = executableDirectory() else { return [] }
        var out: [FilePath] = []
        for _ in 0..<4 {
            dir = dir.removingLastComponent()
            if dir.lastComponent?.string != ".build" && !dir.isEmpty { out.append(dir) }
        }
        return out
    }

    /// The directory of the running executable (/proc/self/exe).
    public static func executableDirectory() -> FilePath? {
        readSymbolicLink("/proc/self/exe")?.removingLastComponent()
    }
}

