/// One entry of a replay log, as a reader returns it. The payload points into the
/// reader's mapping (zero copy): it is valid until the reader's next call or its end.
public struct ReplayLogEntry {
    /// Byte offset of the entry's first slot in the file.
    public var offset: UInt64
    /// The entry's sequence number: 0 for the first entry of the log, then +1 each.
    public var index: UInt64
    public var type: ReplayEventType
    public var info: UInt32
    public var domid: UInt16
    public var vcpu: UInt16
    public var cpu: CPUState
    public var payload: UnsafeRawBufferPointer
    /// Slots the entry occupies (header and payload, rounded up).
    public var slotCount: Int
    /// The CRC-32C stored in the entry (identifies its bytes, e.g. for the sidecar index).
    public var checksum: UInt32

    public var infoName: String { type.infoName(info) }

    /// Records in a branch entry (0 for other types).
    @inlinable
    public var branchRecordCount: Int {
        guard let size = type.branchRecordSize else { return 0 }
        return payload.count / size
    }

    /// The branch counter of the first record of a branch entry: brctr − (n − 1).
    @inlinable
    public var firstRecordBrctr: UInt64 {
        let n = UInt64(branchRecordCount)
        return n == 0 ? cpu.brctr : cpu.brctr &- (n - 1)
    }

    /// Calls `body` for each branch record of a hardware-branches entry (either flavour), with
    /// the record's branch counter: record k of n has brctr − (n − 1 − k). 32-bit records
    /// are widened; their flags word is passed as `format`. Other entry types call nothing.
    @inlinable
    public func forEachBranch(_ body: (_ from: UInt64, _ to: UInt64, _ format: UInt64, _ brctr: UInt64) throws -> Void) rethrows {
        guard let base = payload.baseAddress, let size = type.branchRecordSize else { return }
        let n = payload.count / size
        var counter = cpu.brctr &- UInt64(n) &+ 1
        if size == BranchRecordLayout.size {
            for k in 0..<n {
                let r = BranchRecordLayout.load(at: base + k * BranchRecordLayout.size)
                try body(r.from, r.to, r.format, counter)
                counter &+= 1
            }
        } else {
            for k in 0..<n {
                let r = base + k * 12
                try body(UInt64(UInt32(littleEndian: r.loadUnaligned(as: UInt32.self))),
                         UInt64(UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 4, as: UInt32.self))),
                         UInt64(UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 8, as: UInt32.self))),
                         counter)
                counter &+= 1
            }
        }
    }
}
