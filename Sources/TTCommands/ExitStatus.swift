import ArgumentParser
@_exported import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Print `tt: <one line>` on stderr and exit with the error's status: the one
/// way every command reports failure, so no command ever dumps a stack or a type name.
public func reportAndExit(_ error: Error, program: String = "tt") -> ExitCode {
    if let exit = error as? ExitCode { return exit }
    let text = String(describing: error).split(separator: "\n", omittingEmptySubsequences: true).joined(separator: "; ")
    printError("\(program): \(text)")
    let status = (error as? ExitStatusProviding)?.exitStatus ?? ExitStatus.failure
    return ExitCode(status)
}

/// Run a command body, turning any thrown error into one line and an exit status.
public func reporting(program: String = "tt", _ body: () throws -> Void) throws {
    do {
        try body()
    } catch {
        throw reportAndExit(error, program: program)
    }
}

/// Print a line on stderr (errors, warnings, -d summaries).
func printError(_ line: String) {
    _ = (line + "\n").withCString { fputs($0, stderr) }
}
