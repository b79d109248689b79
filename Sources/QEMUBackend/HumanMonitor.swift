import XenTT

/// QEMU's human monitor (HMP) reached through the gdbstub's `monitor` packet (`qRcmd`):
/// with the stub itself, the replay VM's only control channel. A QMP socket is not used:
/// QEMU serves QMP from an I/O thread of its own that every change of a virtual-clock timer
/// wakes (measured on a Linux boot's replay: about 7,000 wake-ups a second and 9% more CPU
/// time for the whole replay, with no command sent; see docs/qemu-plugin-shm.md).
/// HMP answers while the vCPU is stopped only: a byte sent to the stub while it runs stops it.
extension GDBRemoteClient {
    struct MonitorFailure: Error, CustomStringConvertible {
        let command: String
        let message: String
        var description: String { "QEMU refused '\(command)': \(message)" }
    }

    /// Run one HMP command line and return its output (`O` packets, then `OK`). An output
    /// line starting with "Error:" or "unknown command" is a failure.
    func monitor(_ commandLine: String) throws -> String {
        var payload = Array("qRcmd,".utf8)
        for b in commandLine.utf8 { payload += [Self.hex[Int(b >> 4)], Self.hex[Int(b & 15)]] }
        try sendPacket(String(decoding: payload, as: UTF8.self))
        var output: [UInt8] = []
        while true {
            let reply = try receivePacket()
            if reply == "OK" { break }
            // A stop reply owed to an earlier run (one stopped by the interrupt byte, or a
            // `c` whose controller died) can come first: it is not this command's answer.
            if reply.hasPrefix("T") || reply.hasPrefix("S") { continue }
            guard reply.hasPrefix("O"), let bytes = Self.decodeHex(reply.dropFirst()) else {
                throw MonitorFailure(command: commandLine, message: reply.isEmpty ? "the gdbstub has no monitor" : "answered '\(reply.prefix(40))'")
            }
            output += bytes
        }
        let text = String(decoding: output, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        for line in text.split(separator: "\n") where line.hasPrefix("Error:") || line.hasPrefix("unknown command") {
            throw MonitorFailure(command: commandLine, message: String(line))
        }
        return text
    }

    /// The replay's position in instructions ("instruction count = N" of `info replay`).
    func replayICount() throws -> UInt64 {
        let text = try monitor("info replay")
        guard let r = text.range(of: "instruction count = "),
              let n = UInt64(text[r.upperBound...].prefix { $0.isNumber }) else {
            throw MonitorFailure(command: "info replay", message: "no instruction count in '\(text.trimmingWhitespace)'")
        }
        return n
    }

    /// The guest has ended: QEMU's run state "shutdown" (the replay VM pauses there, and only
    /// a snapshot load makes it run again).
    func guestEnded() throws -> Bool {
        try monitor("info status").contains("(shutdown)")
    }
}
