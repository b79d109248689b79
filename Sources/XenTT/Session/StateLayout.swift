import TTSystem

/// Every file name of a state directory, in one place (each backend uses its own subset).
/// QEMU runs with the state directory as its working directory and names these relatively.
public enum StateFile {
    // Every recording.
    /// Which backend made the recording (`BackendKind`'s raw value).
    public static let backend = "backend"
    /// The guest kernel's symbol file path, absolute.
    public static let symfile = "symfile"
    /// flock(2) of the command that uses the directory, with its pid.
    public static let lock = "lock"
    /// The replay log `tt trace-task` writes, and its default BTS output.
    public static let traceLog = "trace.ttlog", traceOutput = "trace.bts"
    /// The trace log's index and the default output while it is being written.
    public static let traceLogIndex = "trace.ttlog.idx", traceOutputPartial = "trace.bts.partial"
    /// Written when tt creates a state directory: the directory is tt's (see StateOwnership).
    public static let marker = ".tt-recording"
    /// Present when the recording did not end cleanly; holds the recorder's reason.
    public static let incomplete = "recording.incomplete"
    /// The timeline's checkpoints of the live replay (one line each, see `Timeline`).
    public static let checkpoints = "replay.snapshots"
    /// The recording's checkpoint index (`tt index`, see `CheckpointIndex`) and the snapshot
    /// image holding its snapshots, which replays boot from instead of `snapshot`; with
    /// `--disk`, each disk's overlay holding the same snapshots (QEMU's savevm and loadvm
    /// take every writable drive).
    public static let index = "index.checkpoints", indexImage = "index.qcow2"
    public static func indexDiskOverlay(_ n: Int) -> String { "index-disk\(n).qcow2" }
    /// Arrivals at addresses counted from the start up to indexed checkpoints, by `WHERE#N`
    /// runs that passed them (see `Timeline.hits`); part of the index, removed with it.
    public static let indexHits = "index.hits"
    /// `tt trace-task --jobs N`: worker K's own state directory inside this one (its replay
    /// VM's files), holding hard links to the files a replay reads (`recordingForReplay`);
    /// removed when its segment is traced.
    public static func jobDirectory(_ k: Int) -> String { "job\(k)" }
    public static let maxJobs = 16
    /// `tt trace-task --plan DIR --segment K`: the directory the segment's replay VM runs in
    /// (as a worker's), one job per segment at a time (its lock); removed when it is done.
    public static func segmentDirectory(_ k: Int) -> String { "segment\(k)" }
    /// What a replay of the recording reads: linked into a worker's directory.
    public static let recordingForReplay = [argv, backend, kernel, initrd, recording, qemuVersion, symfile, disks,
                                            index, indexImage] + (0..<maxDisks).map(indexDiskOverlay)

    // QEMU recordings.
    public static let argv = "qemu.argv", replayArgv = "replay.argv"
    public static let recording = "recording.rr", snapshot = "snapshot.qcow2", replaySnapshot = "replay.qcow2"
    public static let recordConsole = "console.record", replayConsole = "console.replay"
    public static let recordLog = "record.log", replayLog = "replay.log"
    public static let recordShm = "record.shm", replayShm = "replay.shm"
    /// `qmp` is the QMP socket of replays made by earlier versions (none now), still removed.
    public static let qmp = "qmp.sock", gdb = "gdb.sock", pid = "pid", recordPID = "record.pid"
    /// The interactive console's socket (`tt record -c`): QEMU listens, tt record connects.
    public static let consoleSocket = "console.sock"
    /// `tt record --detach -c`: the socket `tt console NAME` attaches to, served by the
    /// console's keeper (`tt console --keep`) for as long as the recording runs.
    public static let consoleAttach = "attach.sock"
    public static let kernel = "kernel", initrd = "initrd"
    /// The first line of `qemu-system-x86_64 --version` of the QEMU that recorded: a replay
    /// runs only on that same QEMU (record/replay streams and plugin semantics differ).
    public static let qemuVersion = "qemu.version"
    /// `tt record --disk`: each image's identity (format, size, mtime, SHA-256, absolute
    /// path), one line per disk in --disk order; a replay refuses an image that changed.
    public static let disks = "disks"
    /// At most this many --disk images (the pc machine's IDE buses take four disks).
    public static let maxDisks = 4
    /// Disk N's overlay of the recording (qcow2 over the user's image, which it never
    /// writes), and the fresh one each replay makes (the recording wrote into the first).
    public static func diskOverlay(_ n: Int) -> String { "disk\(n).qcow2" }
    public static func replayDiskOverlay(_ n: Int) -> String { "replay-disk\(n).qcow2" }
    /// The ext4 image `tt record --rootfs DIR` makes of a folder (the first disk).
    public static let rootfs = "rootfs.ext4"

    // Xen recordings.
    public static let recordConfig = "record.cfg", recordJSON = "record.json"
    public static let replayConfig = "replay.cfg", replayJSON = "replay.json"
    public static let domid = "domid"
    /// Present in a live Xen session's directory (`tt record --backend xen --live`):
    /// nothing was recorded; the domain runs for real.
    public static let live = "live"

    /// Every name above: what removing a recording (`tt record -D`, `-f`) may unlink, and
    /// nothing else (see StateOwnership.remove).
    public static let all = [backend, symfile, lock, traceLog, traceOutput, traceLogIndex, traceOutputPartial,
                             marker, incomplete, checkpoints, index, indexImage, indexHits,
                             argv, replayArgv, recording, snapshot, replaySnapshot, recordConsole, replayConsole,
                             recordLog, replayLog, recordShm, replayShm, qmp, gdb, consoleSocket, consoleAttach, pid, recordPID, kernel, initrd, qemuVersion,
                             disks, rootfs] + (0..<maxDisks).flatMap { [diskOverlay($0), replayDiskOverlay($0), indexDiskOverlay($0)] } + [
                             recordConfig, recordJSON, replayConfig, replayJSON, domid, live]
}

/// The hypervisor a recording was made with; stored in `StateFile.backend`.
public enum BackendKind: String, Sendable, CaseIterable {
    case qemu, xen

    /// The kind recorded in `state` (recordings made before the file existed are QEMU's).
    public init(recordedIn state: StateDirectory) throws {
        guard let text = state.readIfPresent(StateFile.backend)?.trimmingWhitespace else {
            self = .qemu
            return
        }
        guard let kind = BackendKind(rawValue: text) else {
            throw StateError.badFile(state.file(StateFile.backend), "unknown backend '\(text)'")
        }
        self = kind
    }
}
