import ArgumentParser

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report which capabilities this machine has for replay sessions.")

    func run() throws {
        print("doctor: not yet written")
    }
}
