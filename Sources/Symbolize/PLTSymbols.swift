import CLibDW

/// GDB names PLT entries `foo@plt` from BFD's synthetic symbols: each x86 PLT entry that
/// jumps through a GOT slot is named after the dynamic symbol relocated into that slot.
/// These have no size (GDB keeps none for synthetic symbols).
extension ELFImage {
    var machine: Int32 {
        var ehdr = GElf_Ehdr()
        guard gelf_getehdr(elf, &ehdr) != nil else { return 0 }
        return Int32(ehdr.e_machine)
    }

    func pltSymbols() -> [RawSymbol] {
        let m = machine
        guard m == EM_X86_64 || m == EM_386 else { return [] }
        let slots = gotSlotNames()
        guard !slots.isEmpty else { return [] }
        let gotPlt = section(named: ".got.plt")?.address ?? section(named: ".got")?.address ?? 0
        var result: [RawSymbol] = []
        for name in [".plt", ".plt.sec", ".plt.got"] {
            guard let s = section(named: name), s.hasFileBytes, s.size > 0,
                  let bytes = sectionBytes(s) else { continue }
            var entrySize = 16
            if name == ".plt.got" {
                let endbr = bytes.count >= 4 && bytes[0] == 0xf3 && bytes[1] == 0x0f && bytes[2] == 0x1e && (bytes[3] == 0xfa || bytes[3] == 0xfb)
                entrySize = endbr ? 16 : 8
            }
            var offset = 0
            while offset + entrySize <= bytes.count {
                if let slot = gotSlot(bytes, entry: offset, size: entrySize, entryAddress: s.address &+ UInt64(offset),
                                      is64: m == EM_X86_64, gotPlt: gotPlt),
                   let symbol = slots[slot] {
                    result.append(RawSymbol(name: symbol + "@plt", value: s.address &+ UInt64(offset), size: 0,
                                            type: 2, binding: 1, sectionIndex: s.index))
                }
                offset += entrySize
            }
        }
        return result
    }

    /// The GOT slot an entry jumps through: `jmp *disp(%rip)` (x86-64), `jmp *abs` or
    /// `jmp *disp(%ebx)` (i386), optionally after endbr and with a bnd prefix.
    private func gotSlot(_ b: [UInt8], entry: Int, size: Int, entryAddress: UInt64, is64: Bool, gotPlt: UInt64) -> UInt64? {
        func disp(_ at: Int) -> Int64 {
            Int64(Int32(bitPattern: UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24))
        }
        let endbr = b[entry] == 0xf3 && b[entry + 1] == 0x0f && b[entry + 2] == 0x1e
        var i = entry + (endbr ? 4 : 0)
        if i < entry + size && b[i] == 0xf2 { i += 1 } // bnd
        guard i + 6 <= entry + size, b[i] == 0xff else { return nil }
        let end = UInt64(i - entry + 6)
        if b[i + 1] == 0x25 {
            // Address arithmetic wraps (as the CPU's does): a hostile section address near
            // 2^64 must not trap.
            return is64 ? UInt64(bitPattern: Int64(bitPattern: entryAddress &+ end) &+ disp(i + 2))
                        : UInt64(UInt32(bitPattern: Int32(truncatingIfNeeded: disp(i + 2))))
        }
        if !is64 && b[i + 1] == 0xa3 {
            return UInt64(UInt32(truncatingIfNeeded: Int64(bitPattern: gotPlt) &+ disp(i + 2)))
        }
        return nil
    }

    private func sectionBytes(_ s: Section) -> [UInt8]? {
        guard let scn = elf_getscn(elf, s.index), let data = elf_rawdata(scn, nil), let buf = data.pointee.d_buf else { return nil }
        return Array(UnsafeRawBufferPointer(start: buf, count: Int(data.pointee.d_size)))
    }

    /// GOT slot address → dynamic symbol name, from the dynamic relocation sections.
    private func gotSlotNames() -> [UInt64: String] {
        var names: [UInt64: String] = [:]
        var scn: OpaquePointer? = elf_nextscn(elf, nil)
        while let s = scn {
            defer { scn = elf_nextscn(elf, s) }
            var shdr = GElf_Shdr()
            guard gelf_getshdr(s, &shdr) != nil, shdr.sh_type == UInt32(SHT_RELA) || shdr.sh_type == UInt32(SHT_REL),
                  shdr.sh_flags & UInt64(SHF_ALLOC) != 0, shdr.sh_entsize > 0,
                  let data = elf_getdata(s, nil), let symScn = elf_getscn(elf, Int(shdr.sh_link)) else { continue }
            var symShdr = GElf_Shdr()
            guard gelf_getshdr(symScn, &symShdr) != nil, let symData = elf_getdata(symScn, nil) else { continue }
            let count = Int(shdr.sh_size / shdr.sh_entsize)
            for i in 0..<count {
                var offset: UInt64 = 0, info: UInt64 = 0
                if shdr.sh_type == UInt32(SHT_RELA) {
                    var r = GElf_Rela()
                    guard gelf_getrela(data, Int32(i), &r) != nil else { continue }
                    offset = r.r_offset
                    info = r.r_info
                } else {
                    var r = GElf_Rel()
                    guard gelf_getrel(data, Int32(i), &r) != nil else { continue }
                    offset = r.r_offset
                    info = r.r_info
                }
                // GElf widens ELF32 r_info to the 64-bit layout.
                let symIndex = Int32(truncatingIfNeeded: info >> 32)
                guard symIndex != 0 else { continue }
                var sym = GElf_Sym()
                guard gelf_getsym(symData, symIndex, &sym) != nil,
                      let cname = elf_strptr(elf, Int(symShdr.sh_link), Int(sym.st_name)), cname.pointee != 0 else { continue }
                if names[offset] == nil { names[offset] = String(cString: cname) }
            }
        }
        return names
    }
}
