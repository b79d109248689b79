import Foundation
import SystemPackage
import TTSystem
import XenTT
#if canImport(Glibc)
import Glibc
#endif

/// A `tt record --disk` image: what it is, and what it was when it was recorded.
///
/// QEMU never writes it: the recording writes into a qcow2 overlay in the state directory
/// with the image as its read-only backing file, through QEMU's block-replay driver; each
/// replay gets a fresh overlay over the same image. A replay is valid only over the same
/// bytes, so the identity is kept in `StateFile.disks` and checked before every replay.
public struct DiskImage: Equatable, Sendable {
    /// Absolute.
    public var path: FilePath
    /// `raw` or `qcow2`, as `qemu-img info` detected it.
    public var format: String
    public var size: Int64
    /// Modification time, seconds and nanoseconds.
    public var mtime: (seconds: Int64, nanoseconds: Int64)
    /// SHA-256 of the whole file, lowercase hex.
    public var sha256: String

    public static func == (a: DiskImage, b: DiskImage) -> Bool {
        a.path == b.path && a.format == b.format && a.size == b.size && a.mtime == b.mtime && a.sha256 == b.sha256
    }

    public init(path: FilePath, format: String, size: Int64, mtime: (seconds: Int64, nanoseconds: Int64), sha256: String) {
        self.path = path
        self.format = format
        self.size = size
        self.mtime = mtime
        self.sha256 = sha256
    }

    /// Inspect an image now: a regular file (followed if a link: QEMU follows it too),
    /// its format from `qemu-img info`, its size, mtime and content hash.
    public static func inspect(_ path: FilePath) throws -> DiskImage {
        let (fd, _) = try SafeFiles.openForReading(path)
        defer { try? fd.close() }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw SystemError.last(path, doing: "stat") }
        let format = try detectFormat(path)
        return DiskImage(path: path, format: format, size: Int64(st.st_size),
                         mtime: (Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec)), sha256: try sha256(path))
    }

    static func detectFormat(_ path: FilePath) throws -> String {
        let r = try Subprocess.run(.init(["qemu-img", "info", "--output=json", path.string],
                                         output: .collect(limit: 1 << 20), error: .collect(limit: 1 << 16),
                                         deathSignal: SIGKILL), timeoutMS: 60_000)
        guard r.status.isSuccess else {
            let why = r.standardErrorText.split(separator: "\n").last.map(String.init) ?? "\(r.status)"
            throw QEMUError("\(path): qemu-img info failed: \(why)", status: ExitStatus.dataError)
        }
        guard let info = try? JSONSerialization.jsonObject(with: Data(r.standardOutput)) as? [String: Any],
              let format = info["format"] as? String else {
            throw QEMUError("\(path): qemu-img info gave no format", status: ExitStatus.dataError)
        }
        guard format == "raw" || format == "qcow2" else {
            throw QEMUError("\(path): a \(format) image; --disk takes raw or qcow2 images", status: ExitStatus.dataError)
        }
        return format
    }

    /// The file's SHA-256 (`sha256sum`, which streams it).
    static func sha256(_ path: FilePath) throws -> String {
        let r = try Subprocess.run(.init(["sha256sum", "-b", "--", path.string],
                                         output: .collect(limit: 1 << 16), error: .collect(limit: 1 << 16),
                                         deathSignal: SIGKILL))
        let hex = r.standardOutputText.prefix { $0 != " " }
        guard r.status.isSuccess, hex.count == 64, hex.allSatisfy(\.isHexDigit) else {
            throw QEMUError("\(path): sha256sum failed: \(r.standardErrorText.split(separator: "\n").last.map(String.init) ?? "\(r.status)")",
                            status: ExitStatus.ioError)
        }
        return String(hex)
    }

    // MARK: the state file

    /// One line: `FORMAT SIZE MTIME_S.MTIME_NS SHA256 PATH` (the path last, it may hold spaces).
    var line: String { "\(format) \(size) \(mtime.seconds).\(mtime.nanoseconds) \(sha256) \(path.string)" }

    init?(line: Substring) {
        let f = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false)
        guard f.count == 5, let size = Int64(f[1]) else { return nil }
        let t = f[2].split(separator: ".")
        guard t.count == 2, let s = Int64(t[0]), let ns = Int64(t[1]), f[3].count == 64, f[4].hasPrefix("/") else { return nil }
        self.init(path: FilePath(String(f[4])), format: String(f[0]), size: size, mtime: (s, ns), sha256: String(f[3]))
    }

    public static func store(_ images: [DiskImage], in state: StateDirectory) throws {
        try state.writeLines(StateFile.disks, images.map(\.line))
    }

    /// The recording's images (none when it has no disks file).
    public static func recorded(in state: StateDirectory) throws -> [DiskImage] {
        guard state.fileExists(StateFile.disks) else { return [] }
        return try state.readLines(StateFile.disks).enumerated().map { i, l in
            guard let image = DiskImage(line: Substring(l)), image.format == "raw" || image.format == "qcow2" else {
                throw StateError.badFile(state.file(StateFile.disks), "line \(i + 1) is not a disk image's identity")
            }
            return image
        }
    }

    /// What changed in the image since `self` was taken, or nil when its bytes are the
    /// same (a new mtime alone does not change what the guest reads).
    public func change(to now: DiskImage) -> String? {
        var what: [String] = []
        if now.format != format { what.append("its format is \(now.format), was \(format)") }
        if now.size != size { what.append("its size is \(now.size) bytes, was \(size)") }
        if now.sha256 != sha256 { what.append("its content differs (SHA-256 \(now.sha256.prefix(12))…, was \(sha256.prefix(12))…)") }
        guard !what.isEmpty else { return nil }
        if now.mtime != mtime { what.append("modified since the recording") }
        return what.joined(separator: ", ")
    }

    /// Refuse a replay over images that are not the ones recorded (65, one line naming the
    /// image and what changed). Returns the images.
    public static func requireUnchanged(_ state: StateDirectory) throws -> [DiskImage] {
        let images = try recorded(in: state)
        for image in images {
            let now: DiskImage
            do { now = try inspect(image.path) } catch {
                throw QEMUError("disk image \(image.path) of this recording cannot be read (\(error)); the replay needs it unchanged",
                                status: ExitStatus.dataError)
            }
            if let what = image.change(to: now) {
                throw QEMUError("disk image \(image.path) changed since the recording: \(what); refusing to replay",
                                status: ExitStatus.dataError)
            }
        }
        return images
    }

    /// Create the qcow2 overlay `name` in `state` over this image (read-only backing
    /// file); `initSnapshot`: with an empty disk-only snapshot `init`, which a replay's
    /// `rrsnapshot=init` loads on every writable drive (the recording made it at the start,
    /// when the overlay was empty too).
    func createOverlay(_ name: String, in state: StateDirectory, initSnapshot: Bool) throws {
        try Self.createQcow2(name, over: path.string, format: format, in: state)
        if initSnapshot {
            try QEMURecorder.runToCompletion(["qemu-img", "snapshot", "-c", "init", name], in: state, log: StateFile.replayLog)
        }
    }

    /// Create the qcow2 image `name` (mode 0600) in `state` over `backing`, an image of
    /// `format`, which it only reads (a relative name is in `state`); `size`: its own, else
    /// the backing's.
    static func createQcow2(_ name: String, over backing: String, format: String, size: UInt64? = nil, in state: StateDirectory) throws {
        state.remove(name)
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        try QEMURecorder.runToCompletion(["qemu-img", "create", "-q", "-f", "qcow2", "-F", format, "-b", backing, name] + (size.map { ["\($0)"] } ?? []),
                                         in: state, log: name.hasPrefix("replay") ? StateFile.replayLog : StateFile.recordLog)
    }

    /// A replay's copy-on-write layer `name` over the checkpoint index's image `index` (in
    /// `state`): the replay reads the index's qcow2 image through it (`QEMUMachine.image`), so
    /// that booting costs no copy of its gigabytes and the index is never written (savevm
    /// writes into the layer). Its raw view of the index's file is that file's size plus
    /// 1 TiB (allocated as written): room for the image to grow by the snapshots the replay
    /// saves.
    static func createLayer(_ name: String, over index: String, in state: StateDirectory) throws {
        // QEMU follows a link: only tt's own file is read.
        guard let st = try SafeFiles.lstatIfPresent(state.file(index)), (st.st_mode & S_IFMT) == S_IFREG else {
            throw SystemError(path: state.file(index), message: "the checkpoint index's image is not a regular file", status: ExitStatus.dataError)
        }
        try createQcow2(name, over: index, format: "raw", size: UInt64(st.st_size) + (1 << 40), in: state)
    }
}

/// `tt record --rootfs DIR`: an ext4 image of a folder, made without root by `mkfs.ext4 -d`
/// (e2fsprogs), as `StateFile.rootfs` in the state directory: the recording's first disk.
public enum RootFilesystemImage {
    /// Make the image of `folder` in `state`; its size is twice the folder's bytes plus
    /// 32 MiB (at least 64 MiB), room for the guest to write. Returns its absolute path.
    public static func make(from folder: FilePath, in state: StateDirectory) throws -> FilePath {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.string, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SystemError(path: folder, message: "--rootfs: not a directory", status: ExitStatus.noInput)
        }
        let image = state.file(StateFile.rootfs)
        state.remove(StateFile.rootfs)
        let kib = max(64 << 10, 2 * (try bytes(in: folder)) / 1024 + (32 << 10))
        let r = try Subprocess.run(.init(["mkfs.ext4", "-q", "-F", "-L", "ttrootfs", "-d", folder.string, image.string, "\(kib)k"],
                                         output: .collect(limit: 1 << 16), error: .sameAsOutput, deathSignal: SIGKILL))
        guard r.status.isSuccess else {
            state.remove(StateFile.rootfs)
            let why = r.standardOutputText.split(separator: "\n").last.map(String.init) ?? "\(r.status)"
            throw SystemError(path: folder, message: "--rootfs: mkfs.ext4 -d failed: \(why)", status: ExitStatus.cannotCreate)
        }
        guard chmod(image.string, 0o600) == 0 else { throw SystemError.last(image, doing: "chmod") }
        return image
    }

    /// The bytes of the regular files under `folder` (links not followed).
    static func bytes(in folder: FilePath) throws -> Int {
        guard let walk = FileManager.default.enumerator(at: URL(fileURLWithPath: folder.string),
                                                         includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else {
            throw SystemError(path: folder, message: "--rootfs: cannot list it", status: ExitStatus.noInput)
        }
        var total = 0
        for case let url as URL in walk {
            let v = try? url.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey])
            if v?.isRegularFile == true { total += v?.fileSize ?? 0 }
        }
        return total
    }
}
