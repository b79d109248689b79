import TTSystem

/// A domain configuration parsed from xl.cfg text (the subset tt's template uses),
/// turned into the JSON libxl_domain_config_from_json reads. xl's own parser
/// (parse_config_data) lives in the xl binary, not in a library, hence this one.
struct XenDomainSpec: Equatable {
    var name = ""
    var type = XenGuestType.pv
    var kernel: String?
    var ramdisk: String?
    var cmdline: String?
    var memoryMB = 0
    var maxMemoryMB: Int?
    var vcpus = 1
    var disks: [Disk] = []
    var nics: [Nic] = []
    var vmtraceBufferKB: Int?
    var onCrash: String?
    var onPoweroff: String?
    var onReboot: String?
    var timeTravel: [(String, String)] = []

    struct Disk: Equatable { var target: String; var vdev: String; var format: String; var readwrite: Bool }
    struct Nic: Equatable { var bridge: String?; var mac: String? }

    static func == (a: XenDomainSpec, b: XenDomainSpec) -> Bool {
        a.libxlJSON() == b.libxlJSON()
    }

    enum XLValue: Equatable {
        case string(String)
        case number(Int)
        case list([XLValue])
    }

    init(parsing text: String, origin: String) throws {
        var lineNumber = 0
        var seenName = false
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let at = "\(origin):\(lineNumber)"
            var scanner = XLScanner(Substring(rawLine), at: at)
            scanner.skipBlanks()
            if scanner.atEnd { continue }
            let key = scanner.identifier()
            guard !key.isEmpty else { throw XenConfigError("\(at): expected 'key = value'") }
            scanner.skipBlanks()
            guard scanner.take("=") else { throw XenConfigError("\(at): expected '=' after \(key)") }
            let value = try scanner.value()
            scanner.skipBlanks()
            _ = scanner.take(";")
            scanner.skipBlanks()
            guard scanner.atEnd else { throw XenConfigError("\(at): unexpected text after the value of \(key)") }
            try apply(key, value, at: at)
            if key == "name" { seenName = true }
        }
        guard seenName, !name.isEmpty else { throw XenConfigError("\(origin): no domain name") }
        guard memoryMB > 0 else { throw XenConfigError("\(origin): no memory size") }
        if type == .pv && kernel == nil { throw XenConfigError("\(origin): a PV domain needs a kernel") }
    }

    private mutating func apply(_ key: String, _ value: XLValue, at: String) throws {
        func string() throws -> String {
            guard case .string(let s) = value else { throw XenConfigError("\(at): \(key) must be a string") }
            return s
        }
        func number() throws -> Int {
            guard case .number(let n) = value else { throw XenConfigError("\(at): \(key) must be a number") }
            return n
        }
        func strings() throws -> [String] {
            guard case .list(let items) = value else { throw XenConfigError("\(at): \(key) must be a list") }
            return try items.map {
                guard case .string(let s) = $0 else { throw XenConfigError("\(at): \(key) items must be strings") }
                return s
            }
        }
        switch key {
        case "name": name = try string()
        case "type":
            let s = try string()
            guard let t = XenGuestType(rawValue: s) else { throw XenConfigError("\(at): unknown type '\(s)' (pv, pvh or hvm)") }
            type = t
        case "builder":
            type = try string() == "hvm" ? .hvm : .pv
        case "kernel": kernel = try string()
        case "ramdisk": ramdisk = try string()
        case "cmdline", "extra": cmdline = try string()
        case "memory": memoryMB = try number()
        case "maxmem": maxMemoryMB = try number()
        case "vcpus":
            vcpus = try number()
            guard vcpus >= 1 else { throw XenConfigError("\(at): vcpus must be at least 1") }
        case "vmtrace_buf_kb": vmtraceBufferKB = try number()
        case "on_crash": onCrash = try action(string(), at: at)
        case "on_poweroff": onPoweroff = try action(string(), at: at)
        case "on_reboot": onReboot = try action(string(), at: at)
        case "disk": disks = try strings().map { try Self.disk($0, at: at) }
        case "vif": nics = try strings().map { try Self.nic($0, at: at) }
        case "time_travel":
            timeTravel = try strings().flatMap { spec in
                try spec.split(separator: ",").map { item -> (String, String) in
                    let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2, !parts[0].isEmpty else {
                        throw XenConfigError("\(at): time_travel item '\(item)' is not key=value")
                    }
                    return (parts[0], parts[1])
                }
            }
        default:
            throw XenConfigError("\(at): '\(key)' is not a key tt can turn into a libxl configuration")
        }
    }

    private func action(_ s: String, at: String) throws -> String {
        let known = ["destroy", "restart", "rename-restart", "preserve", "coredump-destroy", "coredump-restart", "soft-reset"]
        guard known.contains(s) else { throw XenConfigError("\(at): unknown action '\(s)'") }
        // libxl's enum names use underscores where xl.cfg uses dashes.
        return s.replacingDashes()
    }

    /// `key=value,...` with `target=` last taking the rest of the string (xl-disk-configuration).
    static func disk(_ spec: String, at: String) throws -> Disk {
        var disk = Disk(target: "", vdev: "", format: "raw", readwrite: true)
        var rest = Substring(spec)
        while !rest.isEmpty {
            rest = rest.drop(while: { $0 == " " })
            if rest.hasPrefix("target=") {
                disk.target = String(rest.dropFirst("target=".count))
                break
            }
            let item = rest.prefix(while: { $0 != "," })
            rest = rest.dropFirst(item.count).dropFirst()
            let parts = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace }
            guard parts.count == 2 else { throw XenConfigError("\(at): disk item '\(item)' is not key=value") }
            switch parts[0] {
            case "vdev": disk.vdev = parts[1]
            case "format": disk.format = parts[1]
            case "access":
                switch parts[1] {
                case "rw", "w": disk.readwrite = true
                case "ro", "r": disk.readwrite = false
                default: throw XenConfigError("\(at): disk access '\(parts[1])' is not rw or ro")
                }
            default: throw XenConfigError("\(at): disk key '\(parts[0])' is not supported by tt")
            }
        }
        guard !disk.target.isEmpty, !disk.vdev.isEmpty else { throw XenConfigError("\(at): disk needs target= and vdev=") }
        guard ["raw", "qcow", "qcow2", "vhd", "qed"].contains(disk.format) else {
            throw XenConfigError("\(at): unknown disk format '\(disk.format)'")
        }
        return disk
    }

    static func nic(_ spec: String, at: String) throws -> Nic {
        var nic = Nic()
        for item in spec.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace }
            guard parts.count == 2 else { throw XenConfigError("\(at): vif item '\(item)' is not key=value") }
            switch parts[0] {
            case "bridge": nic.bridge = parts[1]
            case "mac": nic.mac = parts[1]
            default: throw XenConfigError("\(at): vif key '\(parts[0])' is not supported by tt")
            }
        }
        return nic
    }

    /// libxl_domain_config as JSON (the form libxl_domain_config_to_json prints and
    /// libxl_domain_config_from_json reads). Keys in a fixed order, so output is stable.
    ///
    /// `time_travel` is not a field of stock libxl: it is where the time-travel
    /// toolstack is assumed to read `ttd_flag`/`tt_dir`/`tt_replay_flag`; stock libxl's
    /// parser ignores unknown keys (stock Xen is refused before creation anyway).
    func libxlJSON() -> String {
        let j = JSONWriter()
        j.object {
            j.key("c_info") {
                j.object {
                    j.field("type", string: type.rawValue)
                    j.field("name", string: name)
                }
            }
            j.key("b_info") {
                j.object {
                    j.field("max_vcpus", number: vcpus)
                    j.key("avail_vcpus") { j.array((0..<vcpus).map { .number($0) }) }
                    j.field("max_memkb", number: (maxMemoryMB ?? memoryMB) * 1024)
                    j.field("target_memkb", number: memoryMB * 1024)
                    if let kernel { j.field("kernel", string: kernel) }
                    if let cmdline { j.field("cmdline", string: cmdline) }
                    if let ramdisk { j.field("ramdisk", string: ramdisk) }
                    if let vmtraceBufferKB { j.field("vmtrace_buf_kb", number: vmtraceBufferKB) }
                    j.key("type.\(type.rawValue)") { j.object {} }
                }
            }
            if !disks.isEmpty {
                j.key("disks") {
                    j.objects(disks) { d in
                        j.field("pdev_path", string: d.target)
                        j.field("vdev", string: d.vdev)
                        j.field("format", string: d.format)
                        j.field("readwrite", number: d.readwrite ? 1 : 0)
                    }
                }
            }
            if !nics.isEmpty {
                j.key("nics") {
                    j.objects(nics) { n in
                        if let mac = n.mac { j.field("mac", string: mac) }
                        if let bridge = n.bridge { j.field("bridge", string: bridge) }
                    }
                }
            }
            if let onPoweroff { j.field("on_poweroff", string: onPoweroff) }
            if let onReboot { j.field("on_reboot", string: onReboot) }
            if let onCrash { j.field("on_crash", string: onCrash) }
            if !timeTravel.isEmpty {
                j.key("time_travel") {
                    j.object {
                        for (k, v) in timeTravel {
                            if let n = Int(v) { j.field(k, number: n) } else { j.field(k, string: v) }
                        }
                    }
                }
            }
        }
        return j.text + "\n"
    }
}

extension String {
    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}

/// The xl.cfg value syntax: "string" or 'string' (with \\ \" \' \n \t \r escapes),
/// decimal or 0x numbers, and [ lists ].
struct XLScanner {
    var rest: Substring
    let at: String
    init(_ line: Substring, at: String) { rest = line; self.at = at }

    var atEnd: Bool { rest.isEmpty || rest.first == "#" }

    mutating func skipBlanks() { rest = rest.drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" }) }

    mutating func take(_ c: Character) -> Bool {
        guard rest.first == c else { return false }
        rest = rest.dropFirst()
        return true
    }

    mutating func identifier() -> String {
        let id = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
        rest = rest.dropFirst(id.count)
        return String(id)
    }

    mutating func value() throws -> XenDomainSpec.XLValue {
        skipBlanks()
        guard let c = rest.first else { throw XenConfigError("\(at): missing value") }
        if c == "\"" || c == "'" { return .string(try quoted()) }
        if c == "[" {
            rest = rest.dropFirst()
            var items: [XenDomainSpec.XLValue] = []
            while true {
                skipBlanks()
                if take("]") { return .list(items) }
                items.append(try value())
                skipBlanks()
                if take(",") { continue }
                guard take("]") else { throw XenConfigError("\(at): expected ',' or ']' in a list") }
                return .list(items)
            }
        }
        let word = rest.prefix(while: { $0.isHexDigit || $0 == "x" || $0 == "X" })
        rest = rest.dropFirst(word.count)
        let number = word.hasPrefix("0x") || word.hasPrefix("0X") ? Int(word.dropFirst(2), radix: 16) : Int(word)
        guard let number else { throw XenConfigError("\(at): expected a string, a number or a list") }
        return .number(number)
    }

    mutating func quoted() throws -> String {
        let quote = rest.first!
        rest = rest.dropFirst()
        var out = ""
        while let c = rest.first {
            rest = rest.dropFirst()
            if c == quote { return out }
            if c == "\\" {
                guard let e = rest.first else { break }
                rest = rest.dropFirst()
                switch e {
                case "\\", "\"", "'": out.append(e)
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                default: throw XenConfigError("\(at): unknown escape '\\\(e)'")
                }
                continue
            }
            out.append(c)
        }
        throw XenConfigError("\(at): unterminated string")
    }
}

/// Minimal JSON output with fixed key order and full string escaping.
final class JSONWriter {
    enum Scalar { case number(Int), string(String) }
    private(set) var text = ""
    private var depth = 0
    private var needsComma = false

    private func newline() { text += "\n" + String(repeating: "    ", count: depth) }

    private func separator() {
        if needsComma { text += "," }
        newline()
        needsComma = true
    }

    func object(_ body: () -> Void) {
        text += "{"
        depth += 1
        needsComma = false
        body()
        depth -= 1
        if needsComma { newline() }
        text += "}"
        needsComma = true
    }

    func key(_ name: String, _ body: () -> Void) {
        separator()
        text += JSONString.quoted(name) + ": "
        body()
    }

    func field(_ name: String, string: String) { key(name) { text += JSONString.quoted(string) } }
    func field(_ name: String, number: Int) { key(name) { text += String(number) } }

    func array(_ items: [Scalar]) {
        text += "[" + items.map { item -> String in
            switch item {
            case .number(let n): return String(n)
            case .string(let s): return JSONString.quoted(s)
            }
        }.joined(separator: ", ") + "]"
        needsComma = true
    }

    func objects<T>(_ items: [T], _ body: (T) -> Void) {
        text += "["
        depth += 1
        for (i, item) in items.enumerated() {
            if i > 0 { text += "," }
            newline()
            object { body(item) }
        }
        depth -= 1
        newline()
        text += "]"
        needsComma = true
    }
}
