import XCTest
import Foundation
import TestProcesses
import BTS
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory per test, removed afterwards.
func makeTempDir() throws -> String {
    var template = Array("/tmp/bts-test-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw SystemError(path: nil, message: "mkdtemp failed") }
    return String(cString: p)
}

func removeTree(_ path: String) {
    _ = try? spawn(["/bin/rm", "-rf", path])
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate], permissions: .ownerReadWrite)
    defer { try? fd.close() }
    _ = try fd.writeAll(bytes)
}

/// Runs `body` with an OutputBuffer on a temporary file and returns what was written.
func captured(_ body: (OutputBuffer) throws -> Void) throws -> String {
    var template = Array("/tmp/bts-out-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    let path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    defer { close(fd); unlink(path) }
    do {
        let out = OutputBuffer(fd: fd, capacity: 64)
        try body(out)
        try out.flush()
    }
    return try String(decoding: readAll(path), as: UTF8.self)
}

func readAll(_ path: String) throws -> [UInt8] {
    let fd = try FileDescriptor.open(FilePath(path), .readOnly)
    defer { try? fd.close() }
    var data = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
        if n == 0 { break }
        data += chunk[0..<n]
    }
    return data
}

/// Run a program (argument vector, no shell); returns stdout, stderr and status.
@discardableResult
func spawn(_ argv: [String]) throws -> (out: String, err: String, status: Int32) {
    let r = try TestProcesses.run(argv, timeout: 3600)
    return (r.out, r.err, r.status)
}

/// Little-endian bytes of a u64, written out so tests state the format independently of BranchRecord.
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

func record(_ from: UInt64, _ to: UInt64, _ format: UInt64) -> [UInt8] { le64(from) + le64(to) + le64(format) }

/// The directory holding the built executables (tt, bts-dump, …).
var productsDirectory: String { TestProcesses.buildDirectory.path }
