import ArgumentParser
import QEMUBackend
import XenTT

/// `tt verify`: replay the whole recording and compare it with its checkpoint index.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay the recording from the start and compare it with its checkpoint index at every checkpoint.",
        discussion: """
            Stops the replay exactly at each indexed checkpoint's icount and compares the \
            landmark (eip:brctr:cx), icount and register hash with the index; prints one line \
            per checkpoint (equal, divergent with expected and actual, or not reached). \
            Exit status 0 when all are equal, 3 when any differs, 65 without a usable index. Needs \
            no live replay (tt replay -K first).
            """)

    @Flag(name: .customShort("d"), help: "Debug output.")
    var debug = false
    @OptionGroup var state: StateOptions

    struct Diverged: Error, CustomStringConvertible, ExitStatusProviding {
        let name: String, differing: Int, total: Int
        var description: String { "verify \(name): \(differing) of \(total) checkpoints differ from the index" }
        var exitStatus: Int32 { ExitStatus.divergence }
    }

    func run() throws {
        let scope = try SessionScope(state, debug: debug)
        try scope.run { scope in
            let dir = scope.state
            guard let index = scope.session.timeline.index else {
                throw StateError.badFile(dir.file(StateFile.index), scope.session.timeline.indexProblem ?? "no checkpoint index (make one with tt index)")
            }
            if let vm = scope.backend.vmDescription { throw StateError.vmRunning(dir.path, vm: vm) }
            try scope.bootOwn()
            let progress = ProgressLine()
            defer { progress.end() }
            let differing = try scope.session.verifyIndex(progress: progress.reporter("verifying \(dir.name)")) { v in
                progress.end()
                let head = "checkpoint \(v.number) icount \(v.expected.icount):"
                if v.equal {
                    printLine("\(head) equal \(v.expected)")
                } else if let actual = v.actual {
                    let d = Divergence(expected: v.expected, actual: actual, number: v.number)
                    printLine("\(head) DIVERGENT (\(d.differences.joined(separator: ", "))): expected \(v.expected), actual \(actual)")
                } else {
                    printLine("\(head) DIVERGENT (not reached): the replay ended first; expected \(v.expected)")
                }
            }
            progress.end()
            guard differing == 0 else { throw Diverged(name: dir.name, differing: differing, total: index.checkpoints.count) }
            printLine("tt: verify \(dir.name): all \(index.checkpoints.count) checkpoints equal")
        }
    }
}
