/// Exit statuses and the protocol by which library errors name theirs.

/// Exit statuses shared by every command (sysexits.h values where one fits).
public enum ExitStatus {
    public static let success: Int32 = 0
    public static let failure: Int32 = 1
    /// A location was not reached (the replay ended first, or passed its branch count).
    public static let notReached: Int32 = 2
    /// A replay is not the run its checkpoint index was made from (`tt verify`,
    /// `--on-divergence abort`): a landmark, icount or register hash differs at a checkpoint.
    public static let divergence: Int32 = 3
    /// The command line is wrong.
    public static let usage: Int32 = 64
    /// Malformed input: a corrupt log, a bad location, an unknown symbol.
    public static let dataError: Int32 = 65
    /// An input file that does not exist or cannot be opened.
    public static let noInput: Int32 = 66
    /// A needed service is not there (no hypervisor, no QEMU).
    public static let unavailable: Int32 = 69
    /// An output (file, directory, state directory) cannot be created.
    public static let cannotCreate: Int32 = 73
    /// Reading or writing failed.
    public static let ioError: Int32 = 74
}

/// An error that knows which exit status it deserves.
public protocol ExitStatusProviding: Error {
    var exitStatus: Int32 { get }
}
