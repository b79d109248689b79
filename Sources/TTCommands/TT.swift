import ArgumentParser

/// `tt`: record a guest's run, replay it deterministically, stop the replay at an
/// exact point, capture the branch trace between two points, print it with symbols.
public struct TT: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tt",
        abstract: "Time-travel analysis of virtual machines.",
        discussion: """
            Record a guest's run, replay it deterministically, stop the replay at an exact
            location (WHERE[:brctr[:cx]] or WHERE#N), capture the branch trace between two
            locations and print it with symbols the way GDB would.
            """,
        version: TTVersion.string,
        subcommands: [
            Doctor.self,
            Record.self,
            Console.self,
            Replay.self,
            Where.self,
            RunUntil.self,
            TraceTaskCommand.self,
            IndexCommand.self,
            Verify.self,
            Bts.self,
            SymbolizeCommand.self,
            Log.self,
        ]
    )

    public init() {}
}

public enum TTVersion {
    public static let string = "0.1.0"
}
