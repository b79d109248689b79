import XCTest
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with an OutputBuffer of `capacity` bytes on a pipe and returns what was written.
private func captured(capacity: Int = 16, _ body: (OutputBuffer) throws -> Void) throws -> String {
    var fds: [Int32] = [0, 0]
    XCTAssertEqual(pipe(&fds), 0)
    do {
        let out = OutputBuffer(fd: fds[1], capacity: capacity)
        try body(out)
        try out.flush()
    }
    close(fds[1])
    var data = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fds[0], &chunk, chunk.count)
        if n <= 0 { break }
        data += chunk[0..<n]
    }
    close(fds[0])
    return String(decoding: data, as: UTF8.self)
}

final class OutputBufferTests: XCTestCase {
    func testHexMatchesStringRadix() throws {
        let values: [UInt64] = [0, 1, 0xf, 0x10, 0xdeadbeef, 0xffff_ffff_ffff_ffff, 0x1234_5678_9abc]
        for v in values {
            for width in [1, 8, 16] {
                let got = try captured { try $0.appendHex(v, minDigits: width) }
                var expected = String(v, radix: 16)
                if expected.count < width { expected = String(repeating: "0", count: width - expected.count) + expected }
                XCTAssertEqual(got, expected, "value \(v) width \(width)")
            }
        }
    }

    func testDecimalMatchesDescription() throws {
        let values: [UInt64] = [0, 9, 10, 12345, UInt64.max]
        for v in values {
            XCTAssertEqual(try captured { try $0.appendDecimal(v) }, String(v))
            let padded = try captured { try $0.appendDecimal(v, minDigits: 12) }
            XCTAssertEqual(UInt64(padded), v)
            XCTAssertGreaterThanOrEqual(padded.count, 12)
        }
        XCTAssertEqual(try captured { try $0.appendDecimal(Int64(-42)) }, "-42")
    }

    func testLongAppendLargerThanCapacity() throws {
        let long = String(repeating: "abc", count: 1000)
        XCTAssertEqual(try captured { try $0.append(long); try $0.endLine() }, long + "\n")
    }
}

final class OutputBufferReservationTests: XCTestCase {
    /// Lines built with one reservation each, across many buffer flushes, come out whole
    /// and in order; a long text appended mid-line passes through.
    func testReservedLinesAcrossFlushes() throws {
        let long = String(repeating: "n", count: 3000)
        let text = try captured(capacity: 1024) { out in
            for i in 0..<500 {
                try out.reserve(OutputBuffer.lineReserve)
                out.putDecimal(UInt64(i), minDigits: 4)
                out.put(": 0x")
                out.putHex(UInt64(i) * 0x1001, minDigits: 8)
                if i == 250 { try out.append(long) }
                out.put(byte: 0x0a)
            }
        }
        var expected = ""
        for i in 0..<500 {
            let hex = String(UInt64(i) * 0x1001, radix: 16)
            expected += String(repeating: "0", count: max(0, 4 - String(i).count)) + String(i)
            expected += ": 0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex
            expected += (i == 250 ? long : "") + "\n"
        }
        XCTAssertEqual(text, expected)
    }

    func testJSONStringAndDigitsIntoBytes() throws {
        XCTAssertEqual(try captured(capacity: 16) { try $0.appendJSONString("a\"\n") }, #""a\"\n""#)
        var bytes: [UInt8] = []
        Digits.appendDecimal(-1234, to: &bytes)
        bytes.append(0x20)
        Digits.appendDecimal(0, to: &bytes)
        bytes.append(0x20)
        Digits.appendHex(0xbeef, minDigits: 6, to: &bytes)
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "-1234 0 00beef")
    }
}
