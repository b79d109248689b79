import ArgumentParser
import QEMUBackend
import XenTT

/// `tt where`: the live replay's current location.
struct Where: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print where the live replay is: eip:brctr:cx (icount N).",
        discussion: "Stops the replay if it was running. The output parses back as a location.")

    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @Flag(name: .long, help: "Also print the registers.")
    var registers = false
    @Flag(name: .long, help: "Also print the checkpoints runs can start from (icount, brctr): the start, the recording's index (tt index), the live replay's landings.")
    var timeline = false
    @OptionGroup var state: StateOptions

    func run() throws {
        let scope = try SessionScope(state, debug: debug)
        try scope.run { scope in
            try scope.attachLive()
            let session = scope.session
            printLine(session.describe(try session.position()))
            if registers {
                for r in try session.registers() { printLine("\(r.name) 0x\(String(r.value, radix: 16))") }
            }
            if timeline {
                for c in session.timeline.checkpoints {
                    let kind = c.icount == 0 ? " (the start)" : session.timeline.indexed(at: c.icount).map { " (index \($0.number))" } ?? " (landing)"
                    printLine("checkpoint icount \(c.icount) brctr \(c.brctr)\(kind)")
                }
            }
        }
    }
}
