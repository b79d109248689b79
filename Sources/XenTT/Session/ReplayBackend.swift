import TTSystem

/// The contract between the backend-neutral session logic (`ReplaySession`) and a
/// hypervisor that can replay a recording: QEMU's icount record/replay, or Xen.
///
/// A backend offers primitives only — boot paused, read the position, breakpoints,
/// single-step, continue until something stops the vCPU, seek back, branch tracing.
/// The policy (what "run until WHERE:brctr:cx" means, occurrence counting, when to
/// seek backwards) lives once, in `ReplaySession`, on top of these.
///
/// Counter semantics every backend must honour: a `Landmark` reported while stopped
/// at instruction X means "about to execute X, `brctr` taken control transfers so far",
/// where the count already INCLUDES the transfer that arrived at X (if X was reached by
/// one). So the k-th branch record of a run is the transfer that takes the counter from
/// k−1 to k. `rep`-prefixed string instructions re-executing at one address are not
/// transfers; jumps, calls, returns, interrupts and exceptions are.

/// A point of a replay: the vCPU is about to execute `ip`, having taken `brctr`
/// control transfers since the replay began; `cx` is RCX/ECX (it tells apart
/// iterations of a `rep` instruction, which take no branch).
public struct Landmark: Hashable, Sendable, CustomStringConvertible {
    public var ip: UInt64
    public var brctr: UInt64
    public var cx: UInt64

    public init(ip: UInt64, brctr: UInt64, cx: UInt64) {
        self.ip = ip
        self.brctr = brctr
        self.cx = cx
    }

    /// `0x<ip>:<brctr>:<cx>` — the syntax `Location` parses back (cx in hex).
    public var description: String {
        "0x" + String(ip, radix: 16) + ":" + String(brctr) + ":0x" + String(cx, radix: 16)
    }
}

/// Where a stopped replay is, with what the backend knows beyond the landmark.
public struct Position: Hashable, Sendable {
    public var landmark: Landmark
    /// Instructions executed since the replay began, when the backend knows it (QEMU's icount).
    public var icount: UInt64?

    public init(landmark: Landmark, icount: UInt64?) {
        self.landmark = landmark
        self.icount = icount
    }
}

/// Why the vCPU stopped after `step` or `continueUntilStop`.
public enum StopReason: Equatable, Sendable {
    /// At an address that has a breakpoint (not yet executed).
    case breakpoint
    /// One instruction (or one `rep` iteration) was executed.
    case stepped
    /// Stopped because the caller's `Cancellation` was cancelled (a signal, a user request).
    case interrupted
    /// The recording is exhausted; the VM still exists, stopped at its end.
    case ended
    /// The VM is gone (the guest ended it, or it died); nothing is left to kill.
    case exited
    /// Stopped because the caller's deadline passed, wherever the vCPU was then (before
    /// what the caller ran to): `runToICount(_:deadline:…)`.
    case deadline
}

/// One taken control transfer: `from` the last instruction executed, `to` the next one;
/// `brctr` is the counter value after it (the k-th transfer has brctr k).
public struct BranchTransfer: Hashable, Sendable {
    public var from: UInt64
    public var to: UInt64
    public var brctr: UInt64

    public init(from: UInt64, to: UInt64, brctr: UInt64) {
        self.from = from
        self.to = to
        self.brctr = brctr
    }
}

/// Receives branch records while tracing is on, in order, each exactly once.
/// Batches end at arbitrary points; `brctr` values are consecutive across batches.
public protocol BranchSink: AnyObject {
    func receive(_ batch: UnsafeBufferPointer<BranchTransfer>) throws
    /// No more records: write out what is held back (called by whoever switched tracing
    /// off, before using what the sink wrote).
    func finish() throws
}

extension BranchSink {
    public func finish() throws {}
}

/// A register as the backend names it (`rax`/`eax`, `rip`/`eip`, `eflags`, ...).
public struct RegisterValue: Hashable, Sendable {
    public var name: String
    public var value: UInt64

    public init(name: String, value: UInt64) {
        self.name = name
        self.value = value
    }
}

extension ReplayBackend {
    public func landmark() throws -> Landmark { try position().landmark }
    public var endReason: String? { nil }
    public func registerHash() throws -> UInt32? { nil }
    public func runToICount(_ icount: UInt64, deadline: Double?, cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> StopReason {
        throw SessionError.unsupported(operation: "run to an instruction count", backend: name)
    }
    /// `runToICount` without a deadline.
    public func runToICount(_ icount: UInt64, cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> StopReason {
        try runToICount(icount, deadline: nil, cancellation: cancellation, progress: progress)
    }
    public func watchICounts(_ icounts: [UInt64], handler: ((Position) throws -> Void)?) {}
    public func setRawTracing(_ sink: BranchSink?) throws -> UInt64 {
        throw SessionError.unsupported(operation: "trace from a checkpoint", backend: name)
    }
    public func keepCheckpoints() throws {
        throw SessionError.unsupported(operation: "keep checkpoints for later replays", backend: name)
    }
}

/// What a backend can do beyond the required primitives.
public struct BackendCapabilities: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// `restore(_:)` works, at least for `Checkpoint.start`: the session can go back in time.
    public static let seeking = BackendCapabilities(rawValue: 1 << 0)
    /// `setTracing` delivers branch records.
    public static let branchTracing = BackendCapabilities(rawValue: 1 << 1)
    /// The backend drives a live VM, not a replay (Xen without the time-travel hypervisor):
    /// it has no branch counter (`Landmark.brctr` is 0 and means nothing), so `WHERE:brctr`
    /// locations are refused and `WHERE#N` counts arrivals from the current position.
    public static let live = BackendCapabilities(rawValue: 1 << 2)
}

/// A hypervisor-specific replay VM driver. One object drives one replay VM of one
/// recorded state directory. Calls are made from one thread, while the vCPU is stopped
/// (or before `boot`); the long one, `continueUntilStop`, watches a `Cancellation`.
public protocol ReplayBackend: AnyObject {
    /// "qemu", "xen": for messages.
    var name: String { get }
    var capabilities: BackendCapabilities { get }

    /// Whether a replay VM of this state directory exists (this process's or a detached one).
    var isLive: Bool { get }
    /// What the live replay VM is, for messages ("QEMU pid 4242", "Xen domain 7"); nil if none.
    var vmDescription: String? { get }
    /// Clean up what a command that died left in the state directory: a VM it owned is
    /// killed, files naming dead processes are removed. A VM is never adopted this way.
    func cleanUpAfterDeadOwners()

    /// Create the replay VM at the very beginning of the recording, vCPU stopped.
    /// `outlivesCommand`: the VM is meant to outlive this process (`tt replay`); otherwise it
    /// belongs to this command, and `cleanUpAfterDeadOwners` kills it once the command is
    /// gone, however it died. Precondition: `!isLive`.
    func boot(outlivesCommand: Bool) throws
    /// Take control of a replay VM that already exists (started by an earlier command);
    /// stops its vCPU if it was running. Precondition: `isLive`.
    func attach() throws
    /// Let go of the VM without stopping it (it keeps running or stays paused as it is).
    func detach()

    /// The current landmark (counter semantics above) and icount. vCPU stopped.
    func position() throws -> Position
    /// The current landmark alone, where that is cheaper than `position()` (QEMU answers
    /// icount queries slowly); the session calls it at every breakpoint hit.
    func landmark() throws -> Landmark
    /// General-purpose registers and the instruction pointer, for comparison and display.
    func registers() throws -> [RegisterValue]
    /// `count` bytes of guest memory at a linear (virtual) address, as the stopped vCPU sees it.
    func readMemory(at address: UInt64, count: Int) throws -> [UInt8]

    func insertBreakpoint(at address: UInt64) throws
    func removeBreakpoint(at address: UInt64) throws

    /// Execute exactly one instruction (one `rep` iteration). Returns `.stepped`, or
    /// `.ended`/`.exited` when the replay cannot go further.
    func step() throws -> StopReason
    /// Execute at least one instruction, then run until the vCPU is about to execute
    /// an address with a breakpoint, the replay ends, or `cancellation` is cancelled
    /// (then `.interrupted`, the vCPU stopped wherever it was).
    /// `hintBrctr`: the caller wants to reach this branch count; a backend may use it to
    /// fast-forward (it must then stop no later than the first breakpoint at or after it).
    /// `progress` is called now and then with the live branch count while the vCPU runs.
    func continueUntilStop(hintBrctr: UInt64?, cancellation: Cancellation,
                           progress: ((UInt64) -> Void)?) throws -> StopReason

    /// Let the vCPU run freely (no controller waiting), e.g. `tt replay` without `-p`.
    func resumeDetached() throws
    /// Stop a freely running vCPU.
    func pause() throws

    /// Keep the VM's state at `position` (a landing) so that `restore` can come back to it;
    /// nil when the backend cannot. The `Timeline` decides where checkpoints are worth it.
    func saveCheckpoint(at position: Position) throws -> Checkpoint?
    /// Go back to a checkpoint this VM saved, or to `Checkpoint.start` (counters restored),
    /// and return where that left the vCPU. Only with `.seeking`.
    func restore(_ checkpoint: Checkpoint) throws -> Position

    /// A hash of every register the backend can read at this stop (QEMU: CRC-32C of the
    /// gdbstub's `g` packet), to tell two replays apart at one icount; nil if it has none.
    func registerHash() throws -> UInt32?
    /// Run, ignoring breakpoints, until exactly `icount` instructions have executed since the
    /// replay began: `.stepped` when stopped there (no later than the current position is an
    /// error), `.ended`/`.exited` when the replay ended first, `.interrupted` on cancellation,
    /// `.deadline` when stopped short because `monotonicSeconds()` reached `deadline`.
    func runToICount(_ icount: UInt64, deadline: Double?, cancellation: Cancellation, progress: ((UInt64) -> Void)?) throws -> StopReason
    /// While `continueUntilStop` runs forward, stop at each of these instruction counts,
    /// call `handler` with the position there (it may throw, ending the run), and go on as
    /// if nothing had stopped. nil or [] stops watching.
    func watchICounts(_ icounts: [UInt64], handler: ((Position) throws -> Void)?)
    /// Branch tracing cut at the backend's own count of transfers executed, not at a
    /// landmark: on, records after the transfers counted so far; off, records up to them
    /// (the arrival at the next instruction, not executed yet, is not one of them: the run
    /// after this stop records it, whichever it turns out to be). Returns that count. For
    /// seams at checkpoints, which are not landings.
    func setRawTracing(_ sink: BranchSink?) throws -> UInt64
    /// Make the checkpoints this VM saved the ones every later replay of the recording boots
    /// with (`tt index`); the VM ends. Only with `.seeking`.
    func keepCheckpoints() throws

    /// Switch branch tracing on (records after the current landmark go to `sink`) or off
    /// (`sink` nil; records up to and including the current landmark have been delivered).
    func setTracing(_ sink: BranchSink?) throws

    /// Why the VM can go no further, once a run returned `.ended`/`.exited`, when the
    /// backend knows more than "the end" (e.g. "domain 3 crashed"); nil otherwise.
    var endReason: String? { get }

    /// Kill the replay VM; all recorded state stays. Afterwards `!isLive`.
    func kill() throws

    /// Copy the live replay's console output to standard output until the VM ends or
    /// `cancellation` is cancelled (`tt replay -c`).
    func followConsole(until cancellation: Cancellation) throws
}
