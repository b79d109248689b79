import TTSystem

/// Why a symbol file could not be loaded or a name could not be resolved: one line,
/// naming the file (and the symbol) it concerns.
public struct SymbolizeError: Error, ExitStatusProviding, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The file is missing or unreadable.
        case noInput
        /// The file is not a usable ELF image, or a name/address is bad.
        case data
    }

    public let kind: Kind
    public let message: String
    /// Names close to an unknown symbol, or the units of an ambiguous one.
    public let suggestions: [String]

    public init(_ kind: Kind, _ message: String, suggestions: [String] = []) {
        self.kind = kind
        self.message = message
        self.suggestions = suggestions
    }

    public var exitStatus: Int32 {
        switch kind {
        case .noInput: return ExitStatus.noInput
        case .data: return ExitStatus.dataError
        }
    }

    public var description: String { message }
}
