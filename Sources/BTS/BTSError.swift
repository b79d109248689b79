import SystemPackage
import TTSystem

/// What went wrong reading, writing or interpreting branch records.
public enum BTSError: Error, CustomStringConvertible, ExitStatusProviding {
    /// A file's content is not what it should be.
    case malformed(path: String, offset: Int, record: Int?, reason: String)
    /// A command-line value that does not parse.
    case badArgument(String)
    /// A needed file (symbols, log) is missing.
    case missing(String)

    public var description: String {
        switch self {
        case let .malformed(path, offset, record, reason):
            if let record { return "\(path): byte offset \(offset) (record \(record)): \(reason)" }
            return "\(path): byte offset \(offset): \(reason)"
        case let .badArgument(s): return s
        case let .missing(s): return s
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .malformed: return ExitStatus.dataError
        case .badArgument: return ExitStatus.failure
        case .missing: return ExitStatus.noInput
        }
    }
}
