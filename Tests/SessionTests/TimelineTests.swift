import XCTest
@testable import XenTT
import TTSystem

/// The timeline's choices, with values worked out by hand: which checkpoint a session goes
/// back to, where a landing is worth a checkpoint, the one ordering of moments, and the
/// checkpoint list surviving between commands of one live replay.
final class TimelineTests: XCTestCase {
    func testGoesBackToTheLatestCheckpointStrictlyBeforeTheCount() throws {
        let t = Timeline()
        try t.add(Checkpoint(icount: 2_000_000, brctr: 300, backendState: [1]))
        try t.add(Checkpoint(icount: 1_000_000, brctr: 100, backendState: [2]))
        XCTAssertEqual(t.checkpoints.map(\.icount), [0, 1_000_000, 2_000_000], "kept in icount order, the start first")
        XCTAssertEqual(t.latest(before: 0), .start)
        XCTAssertEqual(t.latest(before: 100), .start, "a checkpoint at the count itself may be after the moment")
        XCTAssertEqual(t.latest(before: 101).icount, 1_000_000)
        XCTAssertEqual(t.latest(before: 300).icount, 1_000_000)
        XCTAssertEqual(t.latest(before: 301).icount, 2_000_000)
        t.reset()
        XCTAssertEqual(t.checkpoints, [.start])
    }

    func testALandingGetsACheckpointOnlyAwayFromOthers() throws {
        let t = Timeline()
        t.spacing = 1000
        func at(_ icount: UInt64?) -> Position { Position(landmark: Landmark(ip: 0x10, brctr: 5, cx: 0), icount: icount) }
        XCTAssertFalse(t.wantsCheckpoint(at: at(999)), "within the spacing after the start")
        XCTAssertTrue(t.wantsCheckpoint(at: at(1000)))
        XCTAssertFalse(t.wantsCheckpoint(at: at(nil)), "no icount, nothing to seek to")
        try t.add(Checkpoint(icount: 5000, brctr: 40, backendState: []))
        XCTAssertFalse(t.wantsCheckpoint(at: at(5999)))
        XCTAssertTrue(t.wantsCheckpoint(at: at(4999)), "only checkpoints before a landing make it redundant")
        XCTAssertTrue(t.wantsCheckpoint(at: at(6000)))
    }

    func testOrderOfMoments() {
        let here = Landmark(ip: 0x200, brctr: 10, cx: 5)
        XCTAssertTrue(Timeline.isBefore(address: 0x900, brctr: 9, cx: nil, here), "a lower count is earlier, whatever the address")
        XCTAssertFalse(Timeline.isBefore(address: 0x100, brctr: 11, cx: nil, here))
        XCTAssertTrue(Timeline.isBefore(address: 0x1ff, brctr: 10, cx: nil, here), "straight-line code only moves up")
        XCTAssertFalse(Timeline.isBefore(address: 0x201, brctr: 10, cx: nil, here))
        XCTAssertTrue(Timeline.isBefore(address: 0x200, brctr: 10, cx: 6, here), "a rep count only goes down")
        XCTAssertFalse(Timeline.isBefore(address: 0x200, brctr: 10, cx: 4, here))
        XCTAssertFalse(Timeline.isBefore(address: 0x200, brctr: 10, cx: 5, here), "the moment itself is not before itself")
        XCTAssertFalse(Timeline.isBefore(address: 0x200, brctr: 10, cx: nil, here))
    }

    func testCheckpointsSurviveBetweenCommandsOfOneReplay() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-timeline-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try StateDirectory(name: "t", explicit: dir, base: "/unused")
        try state.create()
        let first = Timeline(state: state)
        try first.add(Checkpoint(icount: 700_000, brctr: 42, backendState: [42, 699_995, 0x1234, 2, 1]))
        // The file is the documented one line per checkpoint: icount, brctr, backend words.
        XCTAssertEqual(try state.read(StateFile.checkpoints), "700000 42 42 699995 4660 2 1\n")
        let next = Timeline(state: state)
        XCTAssertEqual(next.checkpoints, [.start, Checkpoint(icount: 700_000, brctr: 42, backendState: [42, 699_995, 0x1234, 2, 1])])
        next.reset()
        XCTAssertFalse(state.fileExists(StateFile.checkpoints))
        XCTAssertEqual(Timeline(state: state).checkpoints, [.start])
    }
}

/// The checkpoint index's file format and its place in the timeline, with values by hand.
final class CheckpointIndexFormatTests: XCTestCase {
    static func sample() -> CheckpointIndex {
        CheckpointIndex(spacing: 1000, checkpoints: [
            IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: 0x100420, brctr: 77, cx: 0x1f), icount: 1000, registerHash: 0xdeadbeef),
                              backendState: [77, 1000, 0x10041b, 5, 1, 0]),
            IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: 0x1003c0, brctr: 150, cx: 0), icount: 2000, registerHash: 1),
                              backendState: [149, 2000, 1, 2, 49, 0x1003c0]),
        ])
    }

    func testTextRoundTripsAndIsTheDocumentedFormat() throws {
        let text = Self.sample().text
        XCTAssertEqual(text, """
            tt-checkpoint-index 1
            spacing 1000
            checkpoint 1000 77 0x100420 0x1f 0xdeadbeef 77 1000 1049627 5 1 0
            checkpoint 2000 150 0x1003c0 0x0 0x1 149 2000 1 2 49 1049536

            """)
        XCTAssertEqual(try CheckpointIndex(parsing: text, file: "x"), Self.sample())
    }

    func testBadIndexesAreOneLineErrorsNamingTheLine() {
        func problem(_ text: String) -> String {
            do { _ = try CheckpointIndex(parsing: text, file: "idx"); return "accepted" } catch { return "\(error)" }
        }
        XCTAssertEqual(problem("tt-checkpoint-index 2\nspacing 1\n"), "idx: line 1: checkpoint index format 2; this tt reads format 1 (make it again with tt index)")
        XCTAssertTrue(problem("").hasPrefix("idx: line 1: "))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 0\n").hasPrefix("idx: line 2: "))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0 1\ncheckpoint 10 1 0x1 0x0 0x0 1\n").hasPrefix("idx: line 4: icount 10 not after"))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 1 0x0 0x0\n").hasPrefix("idx: line 3: "), "ip without 0x")
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x100000000\n").hasPrefix("idx: line 3: "), "hash wider than 32 bits")
    }

    func testTheTimelineUsesTheIndexWithItsImageOnly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-index-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try StateDirectory(name: "t", explicit: dir, base: "/unused")
        try state.create()
        try Self.sample().save(state)
        let noImage = Timeline(state: state)
        XCTAssertNil(noImage.index)
        XCTAssertTrue(noImage.indexProblem?.contains("index.qcow2 is missing") ?? false, noImage.indexProblem ?? "")
        try state.write(StateFile.indexImage, "")
        let t = Timeline(state: state)
        XCTAssertEqual(t.index, Self.sample())
        XCTAssertEqual(t.checkpoints.map(\.icount), [0, 1000, 2000])
        XCTAssertEqual(t.latest(before: 150).icount, 1000)
        XCTAssertEqual(t.latest(before: 151).icount, 2000)
        XCTAssertEqual(t.indexed(at: 2000)?.number, 2)
        XCTAssertNil(t.indexed(at: 1500))
        // Landings come and go with the replay VM; the index stays.
        try t.add(Checkpoint(icount: 1500, brctr: 100, backendState: [1]))
        XCTAssertEqual(t.checkpoints.map(\.icount), [0, 1000, 1500, 2000])
        t.reset()
        XCTAssertEqual(t.checkpoints.map(\.icount), [0, 1000, 2000])
        // What -D and -f may unlink includes the index's files.
        for f in [StateFile.index, StateFile.indexImage, StateFile.indexDiskOverlay(0)] { XCTAssertTrue(StateFile.all.contains(f), f) }
        try state.write(StateFile.index, "tt-checkpoint-index 9\nspacing 1\n")
        let bad = Timeline(state: state)
        XCTAssertNil(bad.index)
        XCTAssertTrue(bad.indexProblem?.contains("line 1: checkpoint index format 9") ?? false, bad.indexProblem ?? "")
    }
}

/// Unresumable checkpoints: kept in the index file, never restored, still in the index.
final class UnresumableCheckpointTests: XCTestCase {
    func testAnUnresumableCheckpointIsNeverRestoredAndSurvivesInTheFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-unres-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try StateDirectory(name: "t", explicit: dir, base: "/unused")
        try state.create()
        let index = CheckpointIndexFormatTests.sample()
        try index.save(state)
        try state.write(StateFile.indexImage, "")
        let t = Timeline(state: state)
        XCTAssertEqual(t.latest(before: 151).icount, 2000)
        try t.markUnresumable(2000)
        XCTAssertEqual(t.latest(before: 151).icount, 1000, "the one before it instead")
        XCTAssertEqual(t.indexed(at: 2000)?.number, 2, "still compared when passed")
        XCTAssertTrue(try state.read(StateFile.index).hasSuffix("\nunresumable 2000\n"))
        XCTAssertEqual(Timeline(state: state).latest(before: 151).icount, 1000, "read back")
        // A landing that cannot be resumed is forgotten.
        try t.add(Checkpoint(icount: 1500, brctr: 120, backendState: [1]))
        try t.markUnresumable(1500)
        XCTAssertEqual(t.checkpoints.map(\.icount), [0, 1000])
        // The format refuses an unresumable line naming no checkpoint, and checkpoints after one.
        XCTAssertThrowsError(try CheckpointIndex(parsing: index.text + "unresumable 3\n", file: "i"))
        XCTAssertThrowsError(try CheckpointIndex(parsing: "tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0\nunresumable 10\ncheckpoint 20 1 0x1 0x0 0x0\n", file: "i"))
    }
}
