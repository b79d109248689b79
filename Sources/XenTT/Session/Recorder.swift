import SystemPackage
import TTSystem

/// What to record: the guest and its VM, as the user asked (every path absolute).
public struct RecordingRequest: Sendable {
    public var kernel: FilePath
    public var initrd: FilePath?
    /// The kernel command line.
    public var append: String?
    /// The guest kernel's symbol file, stored in `StateFile.symfile` for every later command.
    public var symbols: FilePath
    public var memoryMB: Int
    /// Return once the recording runs (`tt record --detach`) instead of waiting for its end.
    public var detach: Bool
    /// Copy the guest's console to standard output while waiting.
    public var console: Bool
    public var debug: Bool
    /// QEMU only: the CPU model (nil: the backend's default), disk images (absolute) and
    /// arguments passed to QEMU as they are (`tt record --cpu/--disk/--qemu-arg`).
    public var cpu: String?
    public var disks: [FilePath]
    public var qemuArguments: [String]
    /// QEMU only: `tt record --net` (nil: no network).
    public var network: String?

    public init(kernel: FilePath, initrd: FilePath?, append: String?, symbols: FilePath, memoryMB: Int,
                detach: Bool, console: Bool, debug: Bool, cpu: String? = nil, disks: [FilePath] = [], qemuArguments: [String] = [],
                network: String? = nil) {
        self.network = network
        self.cpu = cpu
        self.disks = disks
        self.qemuArguments = qemuArguments
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.symbols = symbols
        self.memoryMB = memoryMB
        self.detach = detach
        self.console = console
        self.debug = debug
    }
}

/// How a recording went.
public enum RecordingOutcome: Sendable {
    /// It runs on after the command (`detach`); `vm` says what it is.
    case detached(vm: String)
    /// The guest ended; `summary` is the one-line account ("N instructions, …").
    case finished(summary: String)
    /// A signal stopped it; the VM is gone, what was recorded is kept.
    case interrupted(signal: Int32)
}

/// A hypervisor-specific recorder: the other half of a backend, beside `ReplayBackend`.
/// The recording flow itself (state directory, lock, symbol file, -f/-S/-D) is written
/// once, in `tt record`; a recorder only starts, waits for and stops its VM.
public protocol Recorder: AnyObject {
    var kind: BackendKind { get }

    /// Record `request` into `state` (created, locked, holding only the common files).
    /// Unless detached, waits until the guest ends or `cancellation` is cancelled, calling
    /// `progress` (if given, a few times a second) with the guest instructions recorded so far.
    func record(_ request: RecordingRequest, into state: StateDirectory,
                cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> RecordingOutcome
    /// Stop a recording in progress in `state`, keeping what was recorded; false if none ran.
    func stopRecording(in state: StateDirectory) throws -> Bool
    /// A VM of `state` that is running (recording or replaying), for refusals; nil if none.
    func runningVM(in state: StateDirectory) -> String?
}
