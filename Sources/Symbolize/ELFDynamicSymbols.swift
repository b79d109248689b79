import CLibDW
import SystemPackage
import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Facts about an ELF file that need no DWARF: used to check executables and
/// libraries (does this QEMU export the plugin API?) without loading them.
public enum ELFInspection {
    /// The version of elfutils' libdw this process is linked against.
    public static var libdwVersion: String {
        guard let v = dwfl_version(nil) else { return "unknown" }
        return String(cString: v)
    }

    /// Names of the defined symbols in the file's dynamic symbol table (.dynsym).
    public static func definedDynamicSymbols(path: FilePath) throws -> Set<String> {
        _ = elf_version(UInt32(EV_CURRENT))
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        guard let elf = elf_begin(fd.rawValue, ELF_C_READ_MMAP, nil) else {
            throw SystemError(path: path, message: "not an ELF file: \(String(cString: elf_errmsg(-1)))")
        }
        defer { elf_end(elf) }
        guard elf_kind(elf) == ELF_K_ELF else { throw SystemError(path: path, message: "not an ELF file") }
        var names = Set<String>()
        var scn = elf_nextscn(elf, nil)
        while let section = scn {
            var shdr = GElf_Shdr()
            if gelf_getshdr(section, &shdr) != nil, shdr.sh_type == SHT_DYNSYM, shdr.sh_entsize > 0,
               let data = elf_getdata(section, nil) {
                let count = Int(shdr.sh_size / shdr.sh_entsize)
                for i in 0..<count {
                    var sym = GElf_Sym()
                    guard gelf_getsym(data, Int32(i), &sym) != nil, sym.st_shndx != SHN_UNDEF,
                          let name = elf_strptr(elf, Int(shdr.sh_link), Int(sym.st_name)) else { continue }
                    names.insert(String(cString: name))
                }
            }
            scn = elf_nextscn(elf, section)
        }
        return names
    }
}
