import CTTShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The one way tt opens the files a user names, as root: inputs must be regular files
/// (a FIFO would block the open or the read forever, a /proc file reads as empty), and an
/// output replaces only a regular file or nothing, through a temporary of its own that no
/// symlink can redirect.
public enum SafeFiles {
    /// `fd`'s file opened again for writing (a descriptor of its own: its own flags, such
    /// as O_DIRECT, and its own lifetime), the same file whatever its path names now.
    public static func reopenForWriting(_ fd: FileDescriptor) throws -> FileDescriptor {
        let d = tt_reopen_for_writing(fd.rawValue, 0)
        guard d >= 0 else { throw Errno(rawValue: errno) }
        return FileDescriptor(rawValue: d)
    }

    /// `fd`'s file opened again for writing with O_DIRECT (for `OutputBuffer(file:at:direct:)`);
    /// nil where that is refused (tmpfs and some other file systems).
    public static func reopenDirect(_ fd: FileDescriptor) -> FileDescriptor? {
        let d = tt_reopen_for_writing(fd.rawValue, 1)
        return d >= 0 ? FileDescriptor(rawValue: d) : nil
    }

    /// The kind of a file for error messages ("a FIFO", "a directory", ...).
    public static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFLNK: return "a symbolic link"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    /// lstat(2): nil when nothing is there.
    public static func lstatIfPresent(_ path: FilePath, status: Int32? = nil) throws -> stat? {
        var st = stat()
        if lstat(path.string, &st) == 0 { return st }
        if errno == ENOENT { return nil }
        throw SystemError.last(path, doing: "lstat", status: status)
    }

    /// Open a regular file for reading. O_NONBLOCK for the open only, so a FIFO cannot
    /// block it; the type is checked on the descriptor (no race with a rename). A regular
    /// file of size 0 that still has bytes (/proc, /sys) is refused rather than read as
    /// empty, because every reader here trusts the size — unless `pseudoFiles` (a reader
    /// that reads to the end, whatever the size says). `noFollow`: a symlink as the last
    /// component is refused (files in directories tt owns).
    public static func openForReading(_ path: FilePath, pseudoFiles: Bool = false,
                                      noFollow: Bool = false) throws -> (fd: FileDescriptor, size: Int) {
        let raw = path.withPlatformString { open($0, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (noFollow ? O_NOFOLLOW : 0)) }
        guard raw >= 0 else { throw SystemError.last(path, doing: "open") }
        let fd = FileDescriptor(rawValue: raw)
        var st = stat()
        guard fstat(raw, &st) == 0 else {
            let e = SystemError.last(path, doing: "stat")
            try? fd.close()
            throw e
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            try? fd.close()
            throw SystemError(path: path, message: "open: \(kind(st.st_mode)), not a regular file", status: ExitStatus.noInput)
        }
        if st.st_size == 0 && !pseudoFiles {
            // A pseudo-file (/proc, /sys) says size 0 but has contents: one byte tells.
            var byte: UInt8 = 0
            if pread(raw, &byte, 1, 0) == 1 {
                try? fd.close()
                throw SystemError(path: path, message: "open: a file whose size is unknown (a /proc or /sys file); copy it to a regular file first",
                                  status: ExitStatus.noInput)
            }
        }
        _ = fcntl(raw, F_SETFL, fcntl(raw, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(st.st_size))
    }

    /// Refuse to replace `path` unless nothing is there or it is a regular file: a device
    /// node, a FIFO, a directory or a symlink named as an output is never replaced or
    /// written through. 73: the output cannot be created.
    public static func requireReplaceable(_ path: FilePath) throws {
        guard let st = try lstatIfPresent(path, status: ExitStatus.cannotCreate) else {
            // Nothing there: the directory must exist and be one, or the create fails later
            // with a bare ENOENT after the work is done.
            var dir = path.removingLastComponent()
            if dir.isEmpty { dir = "." }
            var dst = stat()
            guard stat(dir.string, &dst) == 0 else { throw SystemError.last(dir, doing: "output directory", status: ExitStatus.cannotCreate) }
            guard (dst.st_mode & S_IFMT) == S_IFDIR else {
                throw SystemError(path: dir, message: "output directory: \(kind(dst.st_mode)), not a directory", status: ExitStatus.cannotCreate)
            }
            guard access(dir.string, W_OK | X_OK) == 0 else { throw SystemError.last(dir, doing: "output directory", status: ExitStatus.cannotCreate) }
            return
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw SystemError(path: path, message: "refusing to replace \(kind(st.st_mode)) with an output file; name a regular file or a new path",
                              status: ExitStatus.cannotCreate)
        }
    }

    /// Create `temporary` for writing, mode 0600: a stale one is removed only if it is a
    /// regular file (tt's own leftover); then O_CREAT|O_EXCL|O_NOFOLLOW, so a symlink or
    /// anything else put there in between makes the create fail instead of being followed.
    public static func createTemporary(_ temporary: FilePath) throws -> FileDescriptor {
        if let st = try lstatIfPresent(temporary) {
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                throw SystemError(path: temporary, message: "refusing to remove \(kind(st.st_mode)) in the way of a temporary file",
                                  status: ExitStatus.cannotCreate)
            }
            guard unlink(temporary.string) == 0 || errno == ENOENT else {
                throw SystemError.last(temporary, doing: "unlink", status: ExitStatus.cannotCreate)
            }
        }
        return try SystemError.naming(temporary, "create", status: ExitStatus.cannotCreate) {
            try FileDescriptor.open(temporary, .writeOnly, options: [.create, .exclusiveCreate, .noFollow, .closeOnExec],
                                    permissions: [.ownerReadWrite])
        }
    }

    /// Rename a finished temporary over `path`, checking again that `path` may be replaced.
    /// The file replaced, if any, is freed later (`freeLater`).
    public static func commit(_ temporary: FilePath, to path: FilePath) throws {
        try requireReplaceable(path)
        let replaced = openToFreeLater(path)
        guard rename(temporary.string, path.string) == 0 else {
            let e = SystemError.last(temporary, doing: "rename to \(path)", status: ExitStatus.cannotCreate)
            try? replaced?.close()
            throw e
        }
        if let replaced { freeLater(replaced) }
    }

    /// Remove `path` (a link itself, not what it names; nothing there: nothing to do). A
    /// regular file's blocks are freed later (`freeLater`).
    public static func removeFreeingLater(_ path: FilePath) {
        let held = openToFreeLater(path)
        _ = unlink(path.string)
        if let held { freeLater(held) }
    }

    /// The regular file at `path` (not followed) held open, so that replacing or unlinking
    /// the name does not free its blocks yet; nil for anything else or nothing.
    private static func openToFreeLater(_ path: FilePath) -> FileDescriptor? {
        try? openForReading(path, pseudoFiles: true, noFollow: true).fd
    }

    /// Close the last hold on a file whose name is gone on a thread of its own: ext4 frees a
    /// file's blocks at that close, about 0.2 s a GB (a trace's output or log of gigabytes),
    /// which the caller need not wait for.
    private static func freeLater(_ fd: FileDescriptor) {
        BackgroundThread<Void>.detached { try? fd.close() }
    }
}
