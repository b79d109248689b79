import CLibDW
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// One open ELF file through libelf: its allocated sections and symbol tables.
/// Internal: no libelf type leaves the Symbolize target.
final class ELFImage {
    struct Section {
        var index: Int
        var name: String
        var address: UInt64
        var size: UInt64
        var fileOffset: UInt64
        var type: UInt32
        var flags: UInt64
        var isAllocated: Bool { flags & UInt64(SHF_ALLOC) != 0 }
        var isCode: Bool { flags & UInt64(SHF_EXECINSTR) != 0 }
        var hasFileBytes: Bool { type != UInt32(SHT_NOBITS) }
    }

    struct RawSymbol {
        var name: String
        var value: UInt64
        var size: UInt64
        var type: UInt8      // STT_*
        var binding: UInt8   // STB_*
        var sectionIndex: Int
    }

    let path: FilePath
    let fd: Int32
    let elf: OpaquePointer
    let is64Bit: Bool
    let sections: [Section]

    init(path: FilePath) throws {
        self.path = path
        _ = elf_version(UInt32(EV_CURRENT))
        // A FIFO or a /proc file named as a symbol file is refused, not waited on or read as empty.
        let fd: Int32
        do {
            fd = try SafeFiles.openForReading(path).fd.rawValue
        } catch let e as SystemError {
            throw SymbolizeError(.noInput, e.description)
        }
        guard let elf = elf_begin(fd, ELF_C_READ_MMAP, nil) else {
            close(fd)
            throw SymbolizeError(.data, "\(path): cannot read as ELF: \(String(cString: elf_errmsg(-1)))")
        }
        guard elf_kind(elf) == ELF_K_ELF else {
            elf_end(elf)
            close(fd)
            throw SymbolizeError(.data, "\(path): not an ELF file")
        }
        let cls = gelf_getclass(elf)
        guard cls == ELFCLASS32 || cls == ELFCLASS64 else {
            elf_end(elf)
            close(fd)
            throw SymbolizeError(.data, "\(path): unknown ELF class \(cls)")
        }
        self.fd = fd
        self.elf = elf
        self.is64Bit = cls == ELFCLASS64
        var strIndex = 0
        if elf_getshdrstrndx(elf, &strIndex) != 0 { strIndex = 0 }
        var sections: [Section] = []
        var scn: OpaquePointer? = elf_nextscn(elf, nil)
        while let s = scn {
            var shdr = GElf_Shdr()
            if gelf_getshdr(s, &shdr) != nil {
                let name = elf_strptr(elf, strIndex, Int(shdr.sh_name)).map { String(cString: $0) } ?? ""
                sections.append(Section(index: elf_ndxscn(s), name: name, address: shdr.sh_addr,
                                        size: shdr.sh_size, fileOffset: shdr.sh_offset,
                                        type: shdr.sh_type, flags: shdr.sh_flags))
            }
            scn = elf_nextscn(elf, s)
        }
        self.sections = sections
    }

    deinit {
        elf_end(elf)
        close(fd)
    }

    func section(named name: String) -> Section? { sections.first { $0.name == name } }

    func section(index: Int) -> Section? {
        // Section indexes are dense and sections[] is in index order starting at 1.
        let i = index - 1
        if i >= 0 && i < sections.count && sections[i].index == index { return sections[i] }
        return sections.first { $0.index == index }
    }

    /// Drops this process's copy of the file pages of section `name` below `offset` (an
    /// offset in the section): clean pages of the read-only mapping libelf made, read
    /// again from the page cache if touched later. Keeps resident memory to what is in use
    /// after a walk over a large section.
    func releasePages(section name: String, below offset: UInt64) {
        guard let s = section(named: name), s.hasFileBytes else { return }
        var size = 0
        guard let base = elf_rawfile(elf, &size) else { return }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = (UInt64(UInt(bitPattern: base)) &+ s.fileOffset + page - 1) / page * page
        let end = (UInt64(UInt(bitPattern: base)) &+ s.fileOffset &+ min(offset, s.size)) / page * page
        guard end > start, s.fileOffset + min(offset, s.size) <= UInt64(size) else { return }
        _ = madvise(UnsafeMutableRawPointer(bitPattern: UInt(start)), Int(end - start), MADV_DONTNEED)
    }

    var hasDebugInfo: Bool {
        sections.contains { ($0.name == ".debug_info" || $0.name == ".zdebug_info") && $0.type != UInt32(SHT_NOBITS) }
    }

    /// Symbols of .symtab (or of .dynsym when there is no .symtab).
    func symbols() -> [RawSymbol] {
        var table = symbols(ofType: UInt32(SHT_SYMTAB))
        if table.isEmpty { table = symbols(ofType: UInt32(SHT_DYNSYM)) }
        return table
    }

    private func symbols(ofType wanted: UInt32) -> [RawSymbol] {
        var result: [RawSymbol] = []
        var scn: OpaquePointer? = elf_nextscn(elf, nil)
        while let s = scn {
            defer { scn = elf_nextscn(elf, s) }
            var shdr = GElf_Shdr()
            guard gelf_getshdr(s, &shdr) != nil, shdr.sh_type == wanted, shdr.sh_entsize > 0,
                  let data = elf_getdata(s, nil) else { continue }
            let count = Int(shdr.sh_size / shdr.sh_entsize)
            result.reserveCapacity(result.count + count)
            for i in 1..<max(count, 1) {
                var sym = GElf_Sym()
                guard gelf_getsym(data, Int32(i), &sym) != nil else { continue }
                guard let cname = elf_strptr(elf, Int(shdr.sh_link), Int(sym.st_name)), cname.pointee != 0 else { continue }
                result.append(RawSymbol(name: String(cString: cname), value: sym.st_value, size: sym.st_size,
                                        type: sym.st_info & 0xf, binding: sym.st_info >> 4,
                                        sectionIndex: Int(sym.st_shndx)))
            }
        }
        return result
    }

    /// The GNU build-id note, as lower-case hex.
    func buildID() -> String? {
        var scn: OpaquePointer? = elf_nextscn(elf, nil)
        while let s = scn {
            defer { scn = elf_nextscn(elf, s) }
            var shdr = GElf_Shdr()
            guard gelf_getshdr(s, &shdr) != nil, shdr.sh_type == UInt32(SHT_NOTE), let data = elf_getdata(s, nil) else { continue }
            var offset = 0
            while true {
                var note = GElf_Nhdr()
                var nameOffset = 0, descOffset = 0
                let next = gelf_getnote(data, offset, &note, &nameOffset, &descOffset)
                if next == 0 { break }
                offset = next
                guard note.n_type == UInt32(NT_GNU_BUILD_ID), note.n_namesz == 4, let buf = data.pointee.d_buf else { continue }
                let name = buf.advanced(by: nameOffset).assumingMemoryBound(to: CChar.self)
                guard strncmp(name, "GNU", 4) == 0 else { continue }
                let desc = buf.advanced(by: descOffset).assumingMemoryBound(to: UInt8.self)
                let digits = Array("0123456789abcdef".utf8)
                var hex: [UInt8] = []
                for i in 0..<Int(note.n_descsz) {
                    hex.append(digits[Int(desc[i] >> 4)])
                    hex.append(digits[Int(desc[i] & 0xf)])
                }
                return String(decoding: hex, as: UTF8.self)
            }
        }
        return nil
    }

    /// The file name recorded in .gnu_debuglink.
    func debugLink() -> String? {
        guard let sec = section(named: ".gnu_debuglink"), let scn = elf_getscn(elf, sec.index),
              let data = elf_getdata(scn, nil), let buf = data.pointee.d_buf, data.pointee.d_size > 0 else { return nil }
        let bytes = UnsafeRawBufferPointer(start: buf, count: Int(data.pointee.d_size))
        guard let nul = bytes.firstIndex(of: 0), nul > 0 else { return nil }
        let name = String(decoding: bytes[..<nul], as: UTF8.self)
        // A link name is a plain file name; refuse anything that walks directories.
        guard !name.contains("/") else { return nil }
        return name
    }

    /// Separate debug file candidates, in the order GDB searches them: by build-id under
    /// each debug directory, then by .gnu_debuglink next to the file, in its .debug
    /// subdirectory, and under each debug directory followed by the file's directory.
    func separateDebugCandidates(debugDirectories: [FilePath]) -> [FilePath] {
        var candidates: [FilePath] = []
        if let id = buildID(), id.count > 2 {
            let dir = String(id.prefix(2)), rest = String(id.dropFirst(2))
            for root in debugDirectories {
                candidates.append(root.appending(".build-id").appending(dir).appending("\(rest).debug"))
            }
        }
        if let link = debugLink() {
            var dir = path.removingLastComponent()
            if dir.isEmpty { dir = "." }
            candidates.append(dir.appending(link))
            candidates.append(dir.appending(".debug").appending(link))
            var absolute = dir
            if !absolute.isAbsolute, let cwd = currentDirectory() { absolute = cwd.pushing(dir) }
            for root in debugDirectories {
                candidates.append(root.pushing(FilePath(String(absolute.string.drop { $0 == "/" }))).appending(link))
            }
        }
        return candidates
    }

    private func currentDirectory() -> FilePath? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return nil }
        return FilePath(String(cString: buf))
    }
}
