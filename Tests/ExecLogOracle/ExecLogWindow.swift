// A window of QEMU's exec log between two instruction counts of a replay, captured with the
// real QEMU: QMP `replay-break` to the first count, HMP `log exec,nochain,in_asm`,
// `replay-break` to the second, `log none`. Test support for comparing tt's branch traces with
// QEMU's own account of the same window.

import Foundation
import TTSystem

public struct WindowError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum ExecLogWindow {
    public struct Capture {
        /// The window analysed; its counters start at 0 at `start`.
        public var run: ExecLogOracle.Run
        /// The linear address (CS base + EIP/RIP) where the vCPU stood at the first count: the
        /// window's first instruction.
        public var start: UInt64
    }

    /// Replays with `qemuArguments` (the exact argument vector of the replay, program first;
    /// `-S`, `-qmp` and `-D` are added) and returns the instructions executed from icount
    /// `first` to icount `last`. Works in a private directory under `scratch`, removed after.
    ///
    /// Branch counter mapping: if tt's branch counter is B at the stop at icount `first`
    /// (arrival at the first instruction included), the window's k-th transfer is tt's
    /// transfer B + k. Beware a stop "between" an instruction and a due interrupt
    /// (docs/qemu-replay-stepping.md): the window then begins with the interrupt.
    public static func capture(qemuArguments: [String], first: Int, last: Int, scratch: URL,
                               keepingInstructions: Bool = true) throws -> Capture {
        precondition(first <= last)
        let dir = scratch.appendingPathComponent("execlog-window-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("qmp.sock").path
        let log = dir.appendingPathComponent("exec.log").path

        let qemu = try Subprocess.spawn(Subprocess.Configuration(
            [try which(qemuArguments[0])] + qemuArguments.dropFirst() + ["-S", "-qmp", "unix:\(socket),server=on,wait=off", "-D", log]))
        defer { qemu.terminate() }

        let qmp = try QMPClient(socketPath: socket)
        if first > 0 {
            try qmp.execute("replay-break", ["icount": first])
            try qmp.execute("cont")
            try qmp.waitForStop()
        }
        guard try qmp.icount() == first else { throw WindowError("replay did not stop at icount \(first)") }
        let start = try instructionPointer(qmp.hmp("info registers"))
        _ = try qmp.hmp("log exec,nochain,in_asm,int")
        try qmp.execute("replay-break", ["icount": last])
        try qmp.execute("cont")
        try qmp.waitForStop()
        guard try qmp.icount() == last else { throw WindowError("replay did not stop at icount \(last)") }
        _ = try qmp.hmp("log none")
        _ = try? qmp.execute("quit")
        _ = qemu.wait()
        let run = try ExecLogOracle.analyze(logAt: log, keepingInstructions: keepingInstructions)
        return Capture(run: run, start: start)
    }

    /// The linear address of the next instruction from HMP `info registers`: CS base + EIP/RIP.
    public static func instructionPointer(_ registers: String) throws -> UInt64 {
        func field(after key: String) -> Substring? {
            guard let r = registers.range(of: key) else { return nil }
            return registers[r.upperBound...].prefix { $0.isHexDigit }
        }
        guard let ip = field(after: "IP=").flatMap({ UInt64($0, radix: 16) }),
              let csLine = registers.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("CS =") }),
              let base = csLine.split(separator: " ").dropFirst(2).first.flatMap({ UInt64($0, radix: 16) })
        else { throw WindowError("cannot read the instruction pointer from: \(registers)") }
        return base &+ ip
    }

    static func which(_ name: String) throws -> String {
        if name.contains("/") { return name }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw WindowError("\(name) not found on PATH")
    }
}

/// A minimal QMP client over a unix socket (one JSON object per line), independent of tt's own.
public final class QMPClient {
    private let fd: Int32
    private var buffer: [UInt8] = []

    public init(socketPath: String, timeout: TimeInterval = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var lastErrno: Int32 = 0
        while true {
            let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard s >= 0 else { throw WindowError("socket: errno \(errno)") }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(socketPath.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                close(s)
                throw WindowError("socket path too long: \(socketPath)")
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
                }
            }
            if ok { fd = s; break }
            lastErrno = errno
            close(s)
            if Date() > deadline { throw WindowError("cannot connect to \(socketPath): errno \(lastErrno)") }
            usleep(20_000)
        }
        _ = try readMessage()   // the greeting
        _ = try execute("qmp_capabilities")
    }

    deinit { close(fd) }

    public func readMessage() throws -> [String: Any] {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                guard let obj = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                    throw WindowError("QMP sent no object")
                }
                return obj
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { throw WindowError("QMP connection closed") }
            buffer += chunk[..<n]
        }
    }

    /// Runs a command; returns its "return" value (events that arrive meanwhile are dropped,
    /// except that `waitForStop` below looks for STOP itself).
    @discardableResult
    public func execute(_ command: String, _ arguments: [String: Any] = [:]) throws -> Any {
        var message: [String: Any] = ["execute": command]
        if !arguments.isEmpty { message["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: message)
        data.append(0x0A)
        try data.withUnsafeBytes { raw in
            guard write(fd, raw.baseAddress, raw.count) == raw.count else {
                throw WindowError("QMP write failed")
            }
        }
        while true {
            let m = try readMessage()
            if let r = m["return"] { return r }
            if let e = m["error"] { throw WindowError("QMP \(command): \(e)") }
            if m["event"] as? String == "STOP" { pendingStop = true }
        }
    }

    private var pendingStop = false

    public func waitForStop() throws {
        if pendingStop { pendingStop = false; return }
        while true {
            if try readMessage()["event"] as? String == "STOP" { return }
        }
    }

    public func icount() throws -> Int {
        guard let r = try execute("query-replay") as? [String: Any], let n = r["icount"] as? Int else {
            throw WindowError("query-replay gave no icount")
        }
        return n
    }

    public func hmp(_ commandLine: String) throws -> String {
        (try execute("human-monitor-command", ["command-line": commandLine]) as? String) ?? ""
    }
}
