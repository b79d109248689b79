import ArgumentParser
@_exported import TTSystem
#if canImport(Glibc)
import Glibc
#endif

/// Print `<program>: <one line>` on stderr and give the error's exit status: the one
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

/// The one entry point of every executable (tt and the original bts-* names): parse the
/// command line, run the command, and turn whatever it throws into one stderr line and an
/// exit status (`reportAndExit`). Parse errors and help are argument-parser's own.
public enum CommandMain {
    /// Runs the command and returns the exit status (in-process callers, tests).
    public static func status(_ root: ParsableCommand.Type, arguments: [String]? = nil) -> Int32 {
        var command: ParsableCommand
        do {
            command = try root.parseAsRoot(arguments)
        } catch {
            return argumentParserReport(error, root)
        }
        do {
            try command.run()
            return ExitStatus.success
        } catch let error where isArgumentParserRequest(error) {
            // `tt help CMD` and `CMD --help` parse into argument-parser's own help command,
            // whose run throws the help request: rendered by argument-parser, as its main does.
            return argumentParserReport(error, root)
        } catch {
            return reportAndExit(error, program: programName).rawValue
        }
    }

    /// Help, usage and parse errors as argument-parser prints them (help on stdout, 0).
    private static func argumentParserReport(_ error: Error, _ root: ParsableCommand.Type) -> Int32 {
        let code = root.exitCode(for: error)
        let message = root.fullMessage(for: error)
        if !message.isEmpty {
            if code == .success { print(message) } else { printError(message) }
        }
        return code.rawValue
    }

    /// An error of argument-parser's own (its help, version or parse requests), not a
    /// command's: ValidationError and ExitCode, which commands throw, are reported as theirs.
    private static func isArgumentParserRequest(_ error: Error) -> Bool {
        !(error is ValidationError) && !(error is ExitCode)
            && String(reflecting: type(of: error)).hasPrefix("ArgumentParser.")
    }

    /// Run and exit with the command's status.
    public static func main(_ root: ParsableCommand.Type) -> Never {
        let status = status(root)
        fflush(stdout)
        exit(status)
    }

    /// The name errors are reported under: `bts-dump` etc. when run by that name, else `tt`.
    static let programName: String = {
        let base = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        return base.hasPrefix("bts-") ? base : "tt"
    }()
}

/// Print a line on stderr (errors, warnings, -d summaries).
func printError(_ line: String) {
    _ = (line + "\n").withCString { fputs($0, stderr) }
}
