import CCRC32C
import XenTT

/// One fuzz input: a mode byte, then a whole log file. The reader, strict and salvaging,
/// must end in an entry sequence or a ReplayLogError — never a crash, a hang or an
/// out-of-bounds read (the address sanitizer and libFuzzer's timeouts catch those).
///
/// Mode byte odd: the harness first recomputes the header's and every entry's checksum, so
/// that mutations get past the CRC and reach the checks behind it (lengths, vCPU and domain
/// bounds, record sizes, sequence numbers, per-vCPU counters, seeks).
@_cdecl("LLVMFuzzerTestOneInput")
public func replayLogFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    var log = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 == 1 { fixChecksums(&log) }
    log.withUnsafeBytes { read($0) }
    return 0
}

private func read(_ bytes: UnsafeRawBufferPointer) {
    for salvage in [false, true] {
        guard let reader = try? ReplayLogReader(bytes: bytes, name: "fuzz", salvage: salvage) else { continue }
        var records = 0
        do {
            while let e = try reader.next() {
                _ = e.type.name
                _ = e.infoName
                e.forEachBranch { _, _, _, _ in records += 1 }
            }
        } catch {
            precondition(!salvage, "a salvaging reader threw: \(error)")
        }
        // Seeks build an in-memory index over the same bytes.
        for v in 0..<min(Int(reader.header.vcpuCount), 2) {
            do {
                try reader.seek(vcpu: UInt16(v), toBranchCount: UInt64(bytes.count))
                _ = try reader.next()
            } catch {
                precondition(error is ReplayLogError, "seek threw \(error)")
            }
        }
    }
}

/// Rewrites the header CRC and, walking entries by their length fields, each entry's CRC.
private func fixChecksums(_ log: inout [UInt8]) {
    guard log.count >= 128 else { return }
    log.withUnsafeMutableBytes { p in
        p.storeBytes(of: tt_crc32c_update(0, p.baseAddress!, 124).littleEndian, toByteOffset: 124, as: UInt32.self)
        let slot = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        guard slot >= 128, slot <= 65536, slot & (slot - 1) == 0 else { return }
        var at = slot
        while at + 80 <= p.count {
            let length = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self)))
            guard length <= 1 << 20 else { return }
            let total = (80 + length + slot - 1) / slot * slot
            guard at + total <= p.count else { return }
            let head = tt_crc32c_update(0, p.baseAddress! + at, 20)
            let crc = tt_crc32c_update(head, p.baseAddress! + at + 24, total - 24)
            p.storeBytes(of: crc.littleEndian, toByteOffset: at + 20, as: UInt32.self)
            at += total
        }
    }
}
