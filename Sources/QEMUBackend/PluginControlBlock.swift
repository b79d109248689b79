import TTSystem
import XenTT
import CTTPluginABI
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The controller's side of the plugin's shared-memory control file
/// (layout: the C header Sources/CTTPluginABI/include/ttplugin.h, which the plugin
/// includes too; docs/qemu-plugin-shm.md).
/// Counters are read and written only while the vCPU is stopped; the ring is drained
/// while it runs (single producer: the plugin; single consumer: us).
final class PluginControlBlock {
    static let magic: UInt64 = TT_SHM_MAGIC
    static let headerBytes = Int(TT_SHM_HEADER_BYTES)
    static let recordBytes = MemoryLayout<tt_shm_record>.stride

    /// Byte offsets of the header's fields, as the C header defines them.
    enum Offset {
        static let magic = Int(TT_SHM_OFF_MAGIC), version = Int(TT_SHM_OFF_VERSION)
        static let ringCapacity = Int(TT_SHM_OFF_RING_CAPACITY), brctr = Int(TT_SHM_OFF_BRCTR)
        static let insns = Int(TT_SHM_OFF_INSNS), lastPC = Int(TT_SHM_OFF_LAST_PC)
        static let lastSize = Int(TT_SHM_OFF_LAST_SIZE), lastFlags = Int(TT_SHM_OFF_LAST_FLAGS)
        static let tracing = Int(TT_SHM_OFF_TRACING), traceAfter = Int(TT_SHM_OFF_TRACE_AFTER)
        static let pluginPID = Int(TT_SHM_OFF_PLUGIN_PID), lastTarget = Int(TT_SHM_OFF_LAST_TARGET)
        static let unexplained = Int(TT_SHM_OFF_UNEXPLAINED), handlers = Int(TT_SHM_OFF_HANDLERS)
        static let ringHead = Int(TT_SHM_OFF_RING_HEAD), ringTail = Int(TT_SHM_OFF_RING_TAIL)
        static let lastInfo = Int(TT_SHM_OFF_LAST_INFO), expected = Int(TT_SHM_OFF_EXPECTED), delta = Int(TT_SHM_OFF_DELTA)
    }
    static let flagValid: UInt64 = TT_SHM_FLAG_VALID
    static let flagRep: UInt64 = TT_SHM_FLAG_REP

    let path: FilePath
    /// Records in the ring (set by `create` after mapping a new, still empty file).
    private(set) var capacity: Int
    private let mapping: MappedFile
    private var base: UnsafeMutableRawPointer { mapping.base! }

    /// Create (replacing) the control file, mode 0600, with an empty ring. The default ring
    /// (1M records, 24 MiB, sparse until used) lets the plugin run long stretches while
    /// the controller is busy elsewhere (monitor commands are answered by QEMU's main
    /// loop only; a full ring stops the vCPU until drained).
    static func create(at path: FilePath, ringCapacity: Int = 1 << 20) throws -> PluginControlBlock {
        precondition(ringCapacity > 0 && ringCapacity & (ringCapacity - 1) == 0)
        _ = unlink(path.string)
        let fd = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusiveCreate, .closeOnExec, .noFollow],
                                         permissions: [.ownerReadWrite])
        defer { try? fd.close() }
        let length = headerBytes + ringCapacity * recordBytes
        do { try fd.resize(to: Int64(length)) } catch let e as Errno {
            throw SystemError(path: path, errno: e, doing: "ftruncate")
        }
        let block = try PluginControlBlock(path: path, fd: fd, length: length)
        block.store(Offset.ringCapacity, UInt64(ringCapacity))
        block.capacity = ringCapacity // init read 0 from the new file
        block.base.storeBytes(of: UInt32(TT_SHM_VERSION), toByteOffset: Offset.version, as: UInt32.self)
        block.base.storeBytes(of: UInt32(headerBytes), toByteOffset: Offset.version + 4, as: UInt32.self)
        block.store(Offset.magic, magic)
        return block
    }

    /// Map an existing control file (of a replay VM started by an earlier command).
    static func open(at path: FilePath) throws -> PluginControlBlock {
        let fd = try FileDescriptor.open(path, .readWrite, options: [.closeOnExec, .noFollow])
        defer { try? fd.close() }
        let size: Int64
        do { size = try fd.stat().size } catch { throw SystemError(path: path, errno: error, doing: "stat") }
        let block = try PluginControlBlock(path: path, fd: fd, length: Int(size))
        guard block.load(Offset.magic) == magic else { throw SystemError(path: path, message: "not a tt plugin control file") }
        return block
    }

    private init(path: FilePath, fd: FileDescriptor, length: Int) throws {
        guard length >= Self.headerBytes else { throw SystemError(path: path, message: "plugin control file too small") }
        mapping = try MappedFile(fd, path: path, count: length, access: .sharedReadWrite)
        self.path = path
        let cap = mapping.base!.load(fromByteOffset: Offset.ringCapacity, as: UInt64.self)
        self.capacity = Int(cap == 0 ? 1 : cap)
        guard Self.headerBytes + Int(cap) * Self.recordBytes <= length else {
            throw SystemError(path: path, message: "plugin control file shorter than its ring")
        }
    }

    private func pointer(_ offset: Int) -> UnsafeMutableRawPointer { base + offset }

    func load(_ offset: Int) -> UInt64 {
        tt_load_relaxed(pointer(offset))
    }

    func store(_ offset: Int, _ value: UInt64) {
        tt_store_relaxed(pointer(offset), value)
    }

    var brctr: UInt64 { load(Offset.brctr) }
    var instructions: UInt64 { load(Offset.insns) }
    var pluginAttached: Bool { load(Offset.pluginPID) != 0 }

    /// The plugin counts direct transfers before they run and keeps the last instruction
    /// packed (docs/qemu-plugin-shm.md); this puts the counters in their settled form (the
    /// last instruction that ran in `last…`, `brctr` without its predicted transfer). Only
    /// while the vCPU is stopped or QEMU is gone; every read of the counters at a stop
    /// comes after it.
    func settle() {
        tt_settle(base.assumingMemoryBound(to: UInt8.self))
    }

    /// The plugin's view of the last executed instruction (settled).
    struct Last { var pc: UInt64; var size: UInt64; var valid: Bool; var rep: Bool }
    var last: Last {
        let f = load(Offset.lastFlags)
        return Last(pc: load(Offset.lastPC), size: load(Offset.lastSize), valid: f & Self.flagValid != 0, rep: f & Self.flagRep != 0)
    }

    /// What frame reads at a stop need: 48 bytes at the stack pointer, the frame's width
    /// (16, 32, 64) and the stack pointer; nil when they cannot be read.
    typealias FrameReader = () -> (bytes: [UInt8], width: Int32, sp: UInt64)?

    /// The transfers into `ip` that the plugin has not counted yet, by the one rule the
    /// plugin follows (tt_classify_arrival in ttplugin.h). The vCPU stops before it executes
    /// `ip` (measured: at a breakpoint or after a step, the plugin's last instruction is
    /// the one before), so the arrival is still pending there.
    func pendingArrivals(at ip: UInt64, readFrame: FrameReader) -> [(from: UInt64, to: UInt64)] {
        settle()
        let f = load(Offset.lastFlags)
        guard f & Self.flagValid != 0 else { return [] }
        var p = tt_insn(pc: load(Offset.lastPC), size: load(Offset.lastSize), kind: (f >> UInt64(TT_SHM_KIND_SHIFT)) & 15,
                        target: load(Offset.lastTarget), rel16: f & TT_SHM_FLAG_REL16 != 0 ? 1 : 0)
        final class Box { let read: FrameReader; init(_ r: @escaping FrameReader) { read = r } }
        return withoutActuallyEscaping(readFrame) { reader in
            let box = Unmanaged.passRetained(Box(reader))
            defer { box.release() }
            let handlers = (base + Offset.handlers).assumingMemoryBound(to: UInt64.self)
            let a = tt_classify_arrival(&p, ip, handlers, { opaque, frame, width, sp in
                let box = Unmanaged<Box>.fromOpaque(opaque!).takeUnretainedValue()
                guard let r = box.read(), r.bytes.count >= 48 else { return -1 }
                for i in 0..<48 { frame![i] = r.bytes[i] }
                width!.pointee = r.width
                sp!.pointee = r.sp
                return 0
            }, box.toOpaque())
            var out: [(UInt64, UInt64)] = []
            if a.n >= 1 { out.append((a.from.0, a.to.0)) }
            if a.n >= 2 { out.append((a.from.1, a.to.1)) }
            return out
        }
    }

    /// The interrupt and exception handler entries the plugin has learned (its table's
    /// entries, ascending). Part of a checkpoint: whether an arrival after an indirect
    /// transfer counts as one transfer or two depends on them (tt_classify_arrival).
    var handlers: [UInt64] {
        (0..<Int(TT_HANDLER_SLOTS)).map { load(Offset.handlers + 8 * $0) }.filter { $0 != 0 }.sorted()
    }

    /// Put the counters and the handler table back to a saved state (after a snapshot was loaded).
    func restore(brctr: UInt64, instructions: UInt64, lastPC: UInt64, lastSize: UInt64, lastFlags: UInt64, lastTarget: UInt64,
                 handlers: [UInt64]) {
        for i in 0..<Int(TT_HANDLER_SLOTS) { store(Offset.handlers + 8 * i, 0) }
        let table = (base + Offset.handlers).assumingMemoryBound(to: UInt64.self)
        for h in handlers { tt_handler_learn(table, h) }
        store(Offset.lastInfo, 0)
        store(Offset.delta, 0)
        store(Offset.expected, TT_EXPECT_BLOCK_STARTED)
        store(Offset.lastTarget, lastTarget)
        store(Offset.brctr, brctr)
        store(Offset.insns, instructions)
        store(Offset.lastPC, lastPC)
        store(Offset.lastSize, lastSize)
        store(Offset.lastFlags, lastFlags)
    }

    var tracing: Bool { load(Offset.tracing) != 0 }

    /// While the vCPU is stopped. Settling makes the next block start call the plugin,
    /// which then has QEMU translate again for the new mode (docs/qemu-plugin-shm.md).
    func setTracing(_ on: Bool, after brctr: UInt64) {
        settle()
        store(Offset.traceAfter, brctr)
        store(Offset.tracing, on ? 1 : 0)
    }

    /// Hand every record produced so far to `body`, in order, then free their slots.
    func drain(_ body: (UnsafeBufferPointer<BranchTransfer>) throws -> Void) rethrows {
        let head = tt_load_acquire(pointer(Offset.ringHead))
        var tail = load(Offset.ringTail)
        let records = (base + Self.headerBytes).assumingMemoryBound(to: BranchTransfer.self)
        while tail < head {
            let index = Int(tail % UInt64(capacity))
            let n = min(Int(head - tail), capacity - index)
            try body(UnsafeBufferPointer(start: records + index, count: n))
            tail += UInt64(n)
            tt_store_release(pointer(Offset.ringTail), tail)
        }
    }
}

