import TTSystem
import XenTT
import Foundation
import SystemPackage

/// A client of QEMU's machine protocol (QMP) over a unix socket: JSON commands, one
/// answer each, and asynchronous events (STOP, RESUME, SHUTDOWN, ...) queued as they arrive.
final class QMPClient {
    private let socket: UnixSocket
    private(set) var pendingEvents: [String] = []

    struct Failure: Error, CustomStringConvertible {
        let command: String
        let message: String
        var description: String { "QEMU refused \(command): \(message)" }
    }

    /// Called every 5 ms while an answer is awaited and nothing has arrived (the controller
    /// drains the plugin's ring there: in replay, QEMU's main loop answers only when the
    /// vCPU thread lets it, and a full ring holds that thread).
    var whileWaiting: (() throws -> Void)?

    init(path: FilePath) throws {
        socket = try UnixSocket(connectingTo: path)
        // QEMU answers within milliseconds unless it is stopped or hung: never wait forever.
        socket.receiveTimeoutMS = QEMUMachine.answerTimeoutMS
        _ = try readMessage() // greeting
        _ = try execute("qmp_capabilities")
    }

    var fileDescriptor: Int32 { socket.fd }

    private func readMessage() throws -> [String: Any] {
        while true {
            if let whileWaiting {
                try socket.waitReadable(every: 5, calling: whileWaiting)
            }
            var line = try socket.readLine()
            if line.last == 0x0d { line.removeLast() }
            if line.isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw Failure(command: "(reading)", message: "malformed QMP message: \(String(decoding: line, as: UTF8.self))")
            }
            return object
        }
    }

    /// Run a command and return its "return" member.
    @discardableResult
    func execute(_ command: String, _ arguments: [String: Any] = [:]) throws -> Any {
        var request: [String: Any] = ["execute": command]
        if !arguments.isEmpty { request["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: request)
        data.append(0x0a)
        try socket.send(Array(data))
        while true {
            let message = try readMessage()
            if let event = message["event"] as? String {
                pendingEvents.append(event)
                continue
            }
            if let error = message["error"] as? [String: Any] {
                throw Failure(command: command, message: error["desc"] as? String ?? "unknown error")
            }
            return message["return"] ?? [:]
        }
    }

    /// Human monitor command through QMP (savevm, log, ...); returns its output.
    func human(_ commandLine: String) throws -> String {
        let out = try execute("human-monitor-command", ["command-line": commandLine])
        return out as? String ?? ""
    }

    /// Take the first queued event among `names`, reading what has arrived within
    /// `timeoutMS` (0: only what is there). Nil when none came.
    func takeEvent(_ names: Set<String>, timeoutMS: Int32) throws -> String? {
        if let i = pendingEvents.firstIndex(where: names.contains) { return pendingEvents.remove(at: i) }
        var wait = timeoutMS
        while try socket.waitReadable(timeoutMS: wait) {
            let message = try readMessage()
            if let event = message["event"] as? String {
                if names.contains(event) { return event }
                pendingEvents.append(event)
            }
            wait = 0
        }
        return nil
    }

    func discardEvents() { pendingEvents.removeAll() }

    /// Whether the vCPU runs, from query-status.
    /// The guest has ended (QEMU's run state "shutdown": the replay VM is paused there, and
    /// only a replay-seek makes it run again).
    func guestEnded() throws -> Bool {
        let status = try execute("query-status") as? [String: Any]
        return status?["status"] as? String == "shutdown"
    }

    func isRunning() throws -> Bool {
        let status = try execute("query-status") as? [String: Any]
        return status?["running"] as? Bool ?? false
    }

    /// The replay position in instructions (query-replay's icount).
    func replayICount() throws -> UInt64 {
        let r = try execute("query-replay") as? [String: Any]
        if let n = r?["icount"] as? NSNumber { return n.uint64Value }
        throw Failure(command: "query-replay", message: "no icount in the answer")
    }
}
