import SystemPackage
import TTSystem

/// The kind of Xen guest.
public enum XenGuestType: String, Sendable, CaseIterable {
    case pv, pvh, hvm
}

/// Which domain of a recording a configuration is for.
public enum XenDomainRole: String, Sendable {
    case record, replay
}

/// The values tt fills into the domain template. Unset optionals drop their lines.
public struct XenDomainParameters: Sendable, Equatable {
    public var name: String
    public var type: XenGuestType = .pv
    public var kernel: FilePath?
    public var ramdisk: FilePath?
    public var commandLine: String?
    public var memoryMB: Int = 64
    /// Root disk image or block device; becomes `target=` (last, so commas in it are kept).
    public var disk: FilePath?
    public var diskFormat: String = "raw"
    public var diskVdev: String = "xvda"
    /// Network bridge; no network when nil.
    public var bridge: String?
    public var mac: String?
    /// The state directory: `tt_dir` of the time-travel options.
    public var stateDirectory: FilePath?
    /// vmtrace (Intel PT) buffer per vCPU in KiB (power of two, 4..65536), HVM only.
    public var vmtraceBufferKB: Int?

    public init(name: String) { self.name = name }
}

/// A generated domain configuration: the xl text written into the state directory for
/// people, and libxl's JSON the domain is created from. Both come from one template.
public struct XenDomainConfig: Sendable, Equatable {
    public var name: String
    public var xlText: String
    public var json: String
}

/// A domain-configuration problem: says what and where (template line, field).
public struct XenConfigError: Error, ExitStatusProviding, CustomStringConvertible, Equatable {
    public let message: String
    public var exitStatus: Int32 { ExitStatus.dataError }
    public var description: String { message }
    init(_ message: String) { self.message = message }
}

/// `etc/xentt/xen-domain.cfg.template`: xl.cfg text with `@PLACEHOLDER@`s.
public struct XenDomainTemplate: Sendable {
    public let text: String
    /// Where the template came from, for error messages.
    public let origin: String

    public static let fileName = "xen-domain.cfg.template"

    public init(text: String, origin: String) {
        self.text = text
        self.origin = origin
    }

    public static func load(from path: FilePath) throws -> XenDomainTemplate {
        do {
            let file = try MappedFile(path: path)
            return XenDomainTemplate(text: String(decoding: file.bytes, as: UTF8.self), origin: path.string)
        } catch {
            throw XenConfigError("\(path): cannot read the Xen domain template: \(error)")
        }
    }

    /// Fill the template for the record or the replay domain.
    public func render(_ p: XenDomainParameters, role: XenDomainRole) throws -> XenDomainConfig {
        try validateName(p.name)
        var values: [String: Value] = [
            "NAME": .string(p.name, "name"),
            "TYPE": .string(p.type.rawValue, "type"),
            "MEMORY": .number(p.memoryMB),
            "TT_REPLAY": .string(role == .replay ? ",tt_replay_flag=1" : "", "tt_replay_flag"),
        ]
        guard p.memoryMB > 0 else { throw XenConfigError("memory must be positive, not \(p.memoryMB) MB") }
        if let kernel = p.kernel { values["KERNEL"] = .string(kernel.string, "kernel") }
        if let ramdisk = p.ramdisk { values["RAMDISK"] = .string(ramdisk.string, "ramdisk") }
        if let commandLine = p.commandLine { values["CMDLINE"] = .string(commandLine, "cmdline") }
        if let disk = p.disk {
            try refuseCommas(p.diskFormat, "disk format")
            try refuseCommas(p.diskVdev, "disk vdev")
            // target= last: xl takes the rest of the spec, commas included, as the target.
            values["DISK"] = .string("format=\(p.diskFormat),vdev=\(p.diskVdev),access=rw,target=\(disk.string)", "disk")
        }
        if let bridge = p.bridge {
            try refuseCommas(bridge, "bridge")
            var spec = "bridge=\(bridge)"
            if let mac = p.mac {
                try refuseCommas(mac, "mac")
                spec = "mac=\(mac)," + spec
            }
            values["VIF"] = .string(spec, "vif")
        }
        if let dir = p.stateDirectory {
            // tt_dir sits inside a comma-separated option list: a comma would split it.
            try refuseCommas(dir.string, "state directory (tt_dir)")
            values["TT_DIR"] = .string(dir.string, "tt_dir")
        }
        if let kb = p.vmtraceBufferKB {
            guard kb >= 4, kb <= 65536, kb & (kb - 1) == 0 else {
                throw XenConfigError("vmtrace_buf_kb must be a power of two from 4 to 65536, not \(kb)")
            }
            values["VMTRACE_KB"] = .number(kb)
        }
        let xl = try substitute(values)
        let spec = try XenDomainSpec(parsing: xl, origin: "\(origin) (\(role.rawValue))")
        return XenDomainConfig(name: p.name, xlText: xl, json: spec.libxlJSON())
    }

    enum Value {
        case string(String, String)  // value, field name for errors
        case number(Int)
    }

    private func validateName(_ name: String) throws {
        guard !name.isEmpty else { throw XenConfigError("the domain name is empty") }
        guard !name.contains("/"), name != ".", name != ".." else {
            throw XenConfigError("domain name '\(name)' must not contain '/' or be '.' or '..'")
        }
    }

    private func refuseCommas(_ value: String, _ field: String) throws {
        if value.contains(",") {
            throw XenConfigError("\(field) '\(value)' contains a comma, which would split its xl option list")
        }
    }

    /// Replace placeholders line by line; drop lines with an unset placeholder.
    func substitute(_ values: [String: Value]) throws -> String {
        var out = ""
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.first == "#" {
                out += line + "\n"
                continue
            }
            var result = ""
            var keep = true
            var inQuotes = false
            var rest = Substring(line)
            while let c = rest.first {
                if c == "\"" { inQuotes.toggle() }
                if c == "@", let end = rest.dropFirst().firstIndex(of: "@") {
                    let key = String(rest[rest.index(after: rest.startIndex)..<end])
                    if !key.isEmpty, key.allSatisfy({ $0.isUppercase || $0 == "_" }) {
                        guard let value = values[key] else {
                            if !Self.placeholders.contains(key) {
                                throw XenConfigError("\(origin):\(lineNumber): unknown placeholder @\(key)@")
                            }
                            keep = false
                            break
                        }
                        switch value {
                        case .number(let n):
                            result += String(n)
                        case .string(let s, let field):
                            guard inQuotes else {
                                throw XenConfigError("\(origin):\(lineNumber): placeholder @\(key)@ must be inside double quotes")
                            }
                            result += try Self.xlEscape(s, field: field)
                        }
                        rest = rest[rest.index(after: end)...]
                        continue
                    }
                }
                result.append(c)
                rest = rest.dropFirst()
            }
            if keep { out += result + "\n" }
        }
        // split on a trailing newline yields an empty last piece: do not double it.
        if out.hasSuffix("\n\n") && !text.hasSuffix("\n\n") { out.removeLast() }
        return out
    }

    static let placeholders: Set<String> = ["NAME", "TYPE", "KERNEL", "RAMDISK", "CMDLINE", "MEMORY", "DISK", "VIF",
                                            "TT_DIR", "TT_REPLAY", "VMTRACE_KB"]

    /// Escape for an xl double-quoted string: backslash and quote. Control characters
    /// (newline included) have no place in a configuration value and are refused.
    static func xlEscape(_ value: String, field: String) throws -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let what = scalar == "\n" ? "a newline" : "control character 0x\(String(scalar.value, radix: 16))"
                    throw XenConfigError("\(field) contains \(what): '\(value.debugDescription.dropFirst().dropLast())'")
                }
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
