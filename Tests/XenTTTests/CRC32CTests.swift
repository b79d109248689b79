import XCTest
@testable import XenTT

final class CRC32CTests: XCTestCase {
    /// The catalogue check value of CRC-32C (Castagnoli): an oracle independent of this code.
    func testCheckValue() {
        let bytes = Array("123456789".utf8)
        XCTAssertEqual(bytes.withUnsafeBytes { CRC32C.checksum($0) }, 0xE306_9283)
    }

    /// The hardware path (three streams, combined) against a bit-at-a-time reference,
    /// over lengths and misalignments that exercise every path.
    func testMatchesBitwiseReference() {
        var rng = SplitMix64(seed: 7)
        let data = (0..<20000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func reference(_ s: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in s {
                c ^= UInt32(b)
                for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            }
            return ~c
        }
        data.withUnsafeBytes { all in
            for length in [0, 1, 7, 8, 9, 63, 64, 3071, 3072, 3073, 6144, 9999, 19990] {
                for start in 0..<9 {
                    let part = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    XCTAssertEqual(CRC32C.checksum(part), reference(data[start..<(start + length)]), "length \(length) at \(start)")
                    // Incremental updates agree with one pass.
                    let cut = length / 3
                    let a = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: all[start..<(start + cut)]))
                    XCTAssertEqual(CRC32C.update(a, UnsafeRawBufferPointer(rebasing: all[(start + cut)..<(start + length)])), reference(data[start..<(start + length)]))
                }
            }
        }
    }
}

/// A small seeded generator (SplitMix64) so that property tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
