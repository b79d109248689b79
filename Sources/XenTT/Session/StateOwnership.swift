import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// What tt, running as root, may change: the one place that decides.
///
/// - A state directory is tt's when tt created it (it then holds the marker
///   `.tt-recording`) or when it holds a recording made before the marker existed
///   (`qemu.argv` or `backend`). An existing empty directory is taken over (the user named
///   it for this); anything else — a file, a symlink, a directory with other contents — is
///   refused, never chmod'ed, written into or removed.
/// - A state directory must belong to the caller and not be writable by group or others:
///   otherwise someone else decides what tt reads (and QEMU loads) from it.
/// - Removing a recording (`-D`, `-f`) unlinks only the names tt's backends create there,
///   then the directory if that left it empty. Nothing is removed recursively.
public enum StateOwnership {
    static let marker = StateFile.marker

    /// Whether the directory is tt's: made by tt, or a recording from before the marker.
    public static func isRecording(_ dir: StateDirectory) -> Bool {
        dir.fileExists(marker) || hasRecording(dir)
    }

    /// Whether a recording was started in it (what replays need).
    public static func hasRecording(_ dir: StateDirectory) -> Bool {
        dir.fileExists(StateFile.argv) || dir.fileExists(StateFile.backend)
    }

    /// Refuse a state directory that is a symlink or not a directory, that belongs to
    /// someone else or that group or others may write. A missing one passes (callers say
    /// "no recording here" or create it).
    public static func check(_ path: FilePath) throws {
        var st = stat()
        guard lstat(path.string, &st) == 0 else {
            if errno == ENOENT { return }
            // EACCES here is another user's directory above it: an input that cannot be used.
            throw SystemError.last(path, doing: "lstat the state directory", status: ExitStatus.noInput)
        }
        try check(path, st)
    }

    static func check(_ path: FilePath, _ st: stat) throws {
        switch st.st_mode & S_IFMT {
        case S_IFDIR: break
        case S_IFLNK:
            throw StateError.refused(path, "a symbolic link; tt does not follow links to state directories (name the directory itself)")
        default:
            throw StateError.refused(path, "\(SafeFiles.kind(st.st_mode)), not a directory")
        }
        let me = geteuid()
        if st.st_uid != me {
            throw StateError.notOwned(path, "owned by uid \(st.st_uid), not by you (uid \(me))")
        }
        if st.st_mode & 0o022 != 0 {
            throw StateError.notOwned(path, "writable by \(st.st_mode & 0o020 != 0 ? "its group" : "others") (mode \(String(st.st_mode & 0o7777, radix: 8)))")
        }
    }

    /// Create `dir` (mode 0700, parents as needed) with the marker, or take an existing
    /// empty directory or an existing recording of the caller's.
    static func create(_ dir: StateDirectory) throws {
        let path = dir.path
        var st = stat()
        if lstat(path.string, &st) != 0 {
            guard errno == ENOENT else { throw SystemError.last(path, doing: "lstat the state directory", status: ExitStatus.cannotCreate) }
            var prefix = FilePath("/")
            for c in path.components {
                prefix.append(c)
                if mkdir(prefix.string, 0o700) == 0 || errno == EEXIST { continue }
                throw SystemError.last(prefix, doing: "mkdir", status: ExitStatus.cannotCreate)
            }
            guard lstat(path.string, &st) == 0 else { throw SystemError.last(path, doing: "lstat the state directory", status: ExitStatus.cannotCreate) }
        }
        try check(path, st)
        if !isRecording(dir) {
            let others = try entries(of: dir)
            guard others.isEmpty else {
                throw StateError.refused(path, "a directory that is not a tt recording and is not empty (\(describe(others))); refusing to record into it")
            }
        }
        // chmod through the descriptor opened without following links: the directory
        // checked above, not whatever the path names by now.
        let dfd = try dir.openDirectory()
        defer { close(dfd) }
        guard fchmod(dfd, 0o700) == 0 else { throw SystemError.last(path, doing: "chmod", status: ExitStatus.cannotCreate) }
        if !dir.fileExists(marker) { try dir.write(marker, "tt state directory\n") }
    }

    /// Remove a recording: tt's files (`StateFile.all` and the temporaries `.NAME.tmp` of
    /// all of them), then the directory if nothing else is in
    /// it. Returns the names it kept (not tt's), with the directory then kept too.
    /// `replacing` (tt record -f): the directory, its marker and lock stay for the new
    /// recording.
    @discardableResult
    public static func remove(_ dir: StateDirectory, replacing: Bool = false) throws -> [String] {
        try check(dir.path)
        guard dir.exists else { return [] }
        guard isRecording(dir) else {
            throw StateError.refused(dir.path, "not a tt recording (no \(marker), qemu.argv or backend); refusing to remove it")
        }
        let dfd = try dir.openDirectory()
        defer { close(dfd) }
        var known = Set(StateFile.all)
        if replacing { known.subtract([marker, StateFile.lock]) }
        for name in known.union(known.map { "." + $0 + ".tmp" }) {
            var st = stat()
            guard fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) != S_IFDIR else { continue }
            // Unlinking removes the name only: a symlink's or hard link's target is untouched.
            guard unlinkat(dfd, name, 0) == 0 || errno == ENOENT else {
                throw SystemError.last(dir.file(name), doing: "unlink")
            }
        }
        if replacing { return [] }
        let kept = try entries(of: dir)
        guard kept.isEmpty else { return kept }
        guard rmdir(dir.path.string) == 0 || errno == ENOENT else { throw SystemError.last(dir.path, doing: "rmdir") }
        return []
    }

    /// The names in a directory, without . and ..
    static func entries(of dir: StateDirectory) throws -> [String] {
        let dfd = try dir.openDirectory()
        guard let d = fdopendir(dfd) else {
            close(dfd)
            throw SystemError.last(dir.path, doing: "opendir")
        }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if n != "." && n != ".." { names.append(n) }
        }
        return names.sorted()
    }

    static func describe(_ names: [String]) -> String {
        let shown = names.prefix(3).joined(separator: ", ")
        return names.count > 3 ? "\(shown) and \(names.count - 3) more" : shown
    }
}
