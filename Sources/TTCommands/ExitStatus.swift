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
    printError("\(program): \(escapingControlCharacters(text))")
    let status = (error as? ExitStatusProviding)?.exitStatus ?? (error is ValidationError ? ExitStatus.usage : ExitStatus.failure)
    return ExitCode(status)
}

/// Control characters (C0, DEL, C1) as `\xNN`: error lines echo paths and arguments, and
/// an ESC or BEL from them must not reach the terminal raw.
func escapingControlCharacters(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: isControl) else { return text }
    var out = String.UnicodeScalarView()
    for u in text.unicodeScalars {
        if isControl(u) {
            let hex = String(u.value, radix: 16)
            out.append(contentsOf: ("\\x" + (hex.count < 2 ? "0" + hex : hex)).unicodeScalars)
        } else {
            out.append(u)
        }
    }
    return String(out)
}

private func isControl(_ u: Unicode.Scalar) -> Bool {
    u.value < 0x20 && u != "\t" || (0x7f...0x9f).contains(u.value)
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
