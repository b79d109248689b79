import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// Exit statuses shared by every command (sysexits.h values where one fits).
public enum ExitStatus {
    public static let failure: Int32 = 1
    /// Malformed input: a corrupt log, a bad location, an unknown symbol.
    public static let dataError: Int32 = 65
    /// An input file that does not exist or cannot be opened.
    public static let noInput: Int32 = 66
    /// A needed service is not there (no hypervisor, no QEMU).
    public static let unavailable: Int32 = 69
    /// Reading or writing failed.
    public static let ioError: Int32 = 74
}

/// An error that knows which exit status it deserves.
public protocol ExitStatusProviding: Error {
    var exitStatus: Int32 { get }
}

/// Print `tt: <one line>` on stderr and exit with the error's status: the one
/// way every command reports failure, so no command ever dumps a stack or a type name.
public func reportAndExit(_ error: Error, program: String = "tt") -> ExitCode {
    if let exit = error as? ExitCode { return exit }
    let text = String(describing: error).split(separator: "\n", omittingEmptySubsequences: true).joined(separator: "; ")
    let line = "\(program): \(text)\n"
    _ = line.withCString { fputs($0, stderr) }
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
