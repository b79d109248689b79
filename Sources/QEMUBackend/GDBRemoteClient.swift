import TTSystem
import XenTT
import SystemPackage

/// A client of QEMU's gdbstub (gdb remote serial protocol) over a unix socket, for
/// breakpoints, single steps, register reads and monitor commands (HumanMonitor.swift).
/// Every packet is acknowledged (no no-ack mode). While the vCPU runs, send nothing but the
/// interrupt byte (QEMU takes any byte as an interrupt request and swallows it).
final class GDBRemoteClient {
    private let socket: UnixSocket

    struct Failure: Error, CustomStringConvertible {
        let request: String
        let reply: String
        var description: String { "gdbstub answered '\(reply)' to '\(request)'" }
    }

    /// Called every 5 ms while a reply is awaited and nothing has arrived: the controller
    /// drains the plugin's ring there (a full ring stops the vCPU, which then never
    /// answers) and handles cancellation. Never blocks without it.
    var whileWaiting: (() throws -> Void)?

    init(path: FilePath) throws {
        socket = try UnixSocket(connectingTo: path)
        // QEMU answers within milliseconds unless it is stopped or hung: never wait forever.
        socket.receiveTimeoutMS = QEMUMachine.answerTimeoutMS
    }

    /// The next byte from the stub, running `whileWaiting` while none is there.
    private func nextByte() throws -> UInt8 {
        if let whileWaiting {
            try socket.waitReadable(every: 5, calling: whileWaiting)
        }
        return try socket.readByte()
    }

    private func checksum(_ bytes: some Sequence<UInt8>) -> UInt8 {
        bytes.reduce(0, &+)
    }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    func sendPacket(_ payload: String) throws {
        let body = Array(payload.utf8)
        let sum = checksum(body)
        try socket.send([UInt8(ascii: "$")] + body + [UInt8(ascii: "#"), Self.hex[Int(sum >> 4)], Self.hex[Int(sum & 15)]])
    }

    /// Read one packet, acknowledging it; skips acks and stray bytes.
    func receivePacket() throws -> String {
        while try nextByte() != UInt8(ascii: "$") {}
        return String(decoding: try packetBody(), as: UTF8.self)
    }

    /// A packet once one has begun to arrive, without waiting for it otherwise: acks and
    /// stray bytes already there are consumed; nil when no packet has started. (A `+` ack
    /// alone must not start a blocking read of a stop reply that comes only when the vCPU
    /// stops, maybe minutes later.)
    func receivePacketIfStarted() throws -> String? {
        while try socket.waitReadable(timeoutMS: 0) {
            if try socket.readByte() == UInt8(ascii: "$") {
                return String(decoding: try packetBody(), as: UTF8.self)
            }
        }
        return nil
    }

    /// A packet if one starts arriving within `timeoutMS`.
    func receivePacketIfAny(timeoutMS: Int32) throws -> String? {
        let deadline = monotonicSeconds() + Double(timeoutMS) / 1000
        repeat {
            if let packet = try receivePacketIfStarted() { return packet }
            let left = Int32(max(0, (deadline - monotonicSeconds()) * 1000))
            guard try socket.waitReadable(timeoutMS: left) else { return nil }
        } while true
    }

    /// The rest of a packet whose `$` was read: its body; the checksum is skipped and
    /// the packet acknowledged.
    private func packetBody() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let c = try nextByte()
            if c == UInt8(ascii: "#") { break }
            body.append(c)
        }
        _ = try nextByte()
        _ = try nextByte()
        try socket.send([UInt8(ascii: "+")])
        return body
    }

    /// Send a request and return the next packet as its reply. Stop replies left over
    /// from an earlier resume (a T02 after a stop by the interrupt byte) must have been
    /// drained first (`drainUnsolicited`).
    func request(_ payload: String) throws -> String {
        try sendPacket(payload)
        return try receivePacket()
    }

    /// Read and drop any packets already waiting (stale stop replies).
    func drainUnsolicited() throws {
        while try socket.waitReadable(timeoutMS: 0) {
            if try socket.readByte() == UInt8(ascii: "$") { _ = try packetBody() }
        }
    }

    func expectOK(_ payload: String) throws {
        let reply = try request(payload)
        guard reply == "OK" else { throw Failure(request: payload, reply: reply) }
    }

    var fileDescriptor: Int32 { socket.fd }

    /// Ask a running target to stop (the protocol's interrupt byte, not a packet).
    func sendInterrupt() throws { try socket.send([0x03]) }

    /// Registers as raw bytes in the target's `g` layout (the first `limit` bytes).
    func readRegisterBytes(limit: Int = .max) throws -> [UInt8] {
        try hexBytes(request: "g", limit: limit)
    }

    /// Guest memory at a virtual address (`m`), as the stopped vCPU sees it.
    func readMemory(at address: UInt64, count: Int) throws -> [UInt8] {
        try hexBytes(request: "m\(String(address, radix: 16)),\(String(count, radix: 16))", limit: count)
    }

    /// A request whose reply is hex-encoded bytes (the first `limit`).
    private func hexBytes(request payload: String, limit: Int) throws -> [UInt8] {
        let reply = try request(payload)
        guard reply.utf8.count % 2 == 0, !reply.hasPrefix("E"),
              let bytes = Self.decodeHex(reply.prefix(2 * min(limit, reply.utf8.count / 2))) else {
            throw Failure(request: payload, reply: String(reply.prefix(40)))
        }
        return bytes
    }

    /// Hex-encoded bytes as the stub sends them (`x` marks an unavailable byte: 0); nil when
    /// malformed.
    static func decodeHex(_ s: Substring) -> [UInt8]? {
        guard s.utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count / 2)
        var high: UInt8? = nil
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            case UInt8(ascii: "x"): v = 0
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return out
    }

    func socketReadable(timeoutMS: Int32) throws -> Bool { try socket.waitReadable(timeoutMS: timeoutMS) }

    /// Execute one instruction; returns the stop reply.
    func step() throws -> String { try request("s") }
}
