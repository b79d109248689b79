import Symbolize
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One fuzz input: a whole ELF file. Loading it (libelf, libdw, tt's own indexes) and
/// looking things up in it must end in a SymbolFile or a SymbolizeError, and in answers
/// that keep their invariants — never a crash, a trap, a hang or an out-of-bounds read
/// (the address sanitizer and libFuzzer's timeouts catch those).
///
/// The bytes go into one file in /dev/shm (memory), rewritten for each input: SymbolFile
/// takes a path, as every command gives it one.
nonisolated(unsafe) private var scratch: Int32 = -1
private let scratchPath = "/dev/shm/tt-symbolfile-fuzz-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func symbolFileFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if scratch < 0 {
        scratch = open(scratchPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        atexit { unlink("/dev/shm/tt-symbolfile-fuzz-\(getpid())") }
    }
    precondition(scratch >= 0, "cannot create the scratch file")
    precondition(ftruncate(scratch, 0) == 0)
    var done = 0
    while done < size {
        let n = pwrite(scratch, data + done, size - done, off_t(done))
        precondition(n > 0, "pwrite to the scratch file failed")
        done += n
    }
    // No separate debug files: the input alone is what is being read.
    guard let file = try? SymbolFile(path: FilePath(scratchPath), debugDirectories: []) else { return 0 }
    probe(file, entryPoint(data, size))
    return 0
}

/// e_entry from the ELF header (32- or 64-bit, little-endian), or 0.
private func entryPoint(_ data: UnsafePointer<UInt8>, _ size: Int) -> UInt64 {
    guard size >= 32 else { return 0 }
    let raw = UnsafeRawPointer(data)
    if data[4] == 2, size >= 32 { return UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)) }
    return UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
}

/// Every public lookup, at the entry point and at the bounds of whatever it finds there,
/// and by name for the bundled guests' and a C program's usual functions.
private func probe(_ file: SymbolFile, _ entry: UInt64) {
    var addresses: [UInt64] = [entry, entry &+ 1, entry &- 1, 0, 0x100000, 0x401000, UInt64.max]
    for name in ["main", "_start", "fib", "tail_caller", "serial_puts", "user_main", "no such name", "a.c::main"] {
        if let a = try? file.address(ofSymbol: name) { addresses.append(a) }
    }
    let symbolizer = Symbolizer(symbols: file)
    var seen = Set<UInt64>()
    var i = 0
    while i < addresses.count && i < 64 {
        let a = addresses[i]
        i += 1
        guard seen.insert(a).inserted else { continue }
        if let f = file.function(containing: a) {
            precondition(f.range.contains(a), "function(containing:) returned a range without the address")
            precondition(f.ranges.contains(f.range), "the containing part is not one of the function's ranges")
            addresses += [f.entry, f.range.lowerBound, f.range.upperBound &- 1, f.range.upperBound]
        }
        if let f = file.function(startingAt: a) { precondition(f.entry == a, "function(startingAt:) with another entry") }
        let chain = file.inlineChain(at: a)
        // Only the innermost instance is found by address; its parents are whatever the
        // (possibly corrupt) DWARF nests it in, and may not cover the address.
        if let inner = chain.first { precondition(inner.range.contains(a), "the innermost inline frame's range without the address") }
        for frame in chain {
            if let c = frame.callSite { precondition(c.line >= 0, "negative call line") }
        }
        if let l = file.sourceLocation(at: a) { precondition(l.line >= 0, "negative source line") }
        _ = file.code(at: a, count: 16)
        _ = symbolizer.describe(a, style: .gdb)
        _ = symbolizer.describe(a, style: .inline)
    }
}
