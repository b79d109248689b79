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
        CheckpointIndex(spacing: .instructions(1000), checkpoints: [
            IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: 0x100420, brctr: 77, cx: 0x1f), icount: 1000, registerHash: 0xdeadbeef),
                              backendState: [77, 1000, 0x10041b, 5, 1, 0], replaySeconds: 0.25),
            IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: 0x1003c0, brctr: 150, cx: 0), icount: 2000, registerHash: 1),
                              backendState: [149, 2000, 1, 2, 49, 0x1003c0], replaySeconds: 1.5),
        ], end: IndexedEnd(icount: 2500, brctr: 170, replaySeconds: 0.125))
    }

    func testTextRoundTripsAndIsTheDocumentedFormat() throws {
        let text = Self.sample().text
        XCTAssertEqual(text, """
            tt-checkpoint-index 2
            spacing 1000
            checkpoint 1000 77 0x100420 0x1f 0xdeadbeef 250 77 1000 1049627 5 1 0
            checkpoint 2000 150 0x1003c0 0x0 0x1 1500 149 2000 1 2 49 1049536
            end 2500 170 125

            """)
        XCTAssertEqual(try CheckpointIndex(parsing: text, file: "x"), Self.sample())
        var timed = Self.sample()
        timed.spacing = .seconds(0.5)
        timed.unresumable = [2000]
        XCTAssertTrue(timed.text.hasPrefix("tt-checkpoint-index 2\nseconds 0.5\n"), timed.text)
        XCTAssertTrue(timed.text.hasSuffix("end 2500 170 125\nunresumable 2000\n"), timed.text)
        XCTAssertEqual(try CheckpointIndex(parsing: timed.text, file: "x"), timed)
    }

    /// Format 1 (no replay times, no end) is still read: its checkpoints without times.
    func testFormatOneIsReadWithoutTimes() throws {
        let old = try CheckpointIndex(parsing: """
            tt-checkpoint-index 1
            spacing 1000
            checkpoint 1000 77 0x100420 0x1f 0xdeadbeef 77 1000 1049627 5 1 0
            checkpoint 2000 150 0x1003c0 0x0 0x1 149 2000 1 2 49 1049536
            unresumable 2000

            """, file: "x")
        var expected = Self.sample()
        for i in expected.checkpoints.indices { expected.checkpoints[i].replaySeconds = nil }
        expected.end = nil
        expected.unresumable = [2000]
        XCTAssertEqual(old, expected)
        XCTAssertNil(old.replaySeconds(toICount: 1500, brctr: 100))
    }

    func testBadIndexesAreOneLineErrorsNamingTheLine() {
        func problem(_ text: String) -> String {
            do { _ = try CheckpointIndex(parsing: text, file: "idx"); return "accepted" } catch { return "\(error)" }
        }
        XCTAssertEqual(problem("tt-checkpoint-index 3\nspacing 1\n"), "idx: line 1: checkpoint index format 3; this tt reads formats 1 and 2 (make it again with tt index)")
        XCTAssertTrue(problem("").hasPrefix("idx: line 1: "))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 0\n").hasPrefix("idx: line 2: "))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nseconds 1\n").hasPrefix("idx: line 2: "), "seconds is format 2's")
        XCTAssertTrue(problem("tt-checkpoint-index 2\nseconds 0\n").hasPrefix("idx: line 2: "))
        XCTAssertTrue(problem("tt-checkpoint-index 2\nseconds nan\n").hasPrefix("idx: line 2: "))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0 1\ncheckpoint 10 1 0x1 0x0 0x0 1\n").hasPrefix("idx: line 4: icount 10 not after"))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 1 0x0 0x0\n").hasPrefix("idx: line 3: "), "ip without 0x")
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x100000000\n").hasPrefix("idx: line 3: "), "hash wider than 32 bits")
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 9 0x1 0x0 0x0\ncheckpoint 20 8 0x1 0x0 0x0\n").hasPrefix("idx: line 4: brctr 8 below"))
        XCTAssertTrue(problem("tt-checkpoint-index 2\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0\n").hasPrefix("idx: line 3: "), "no milliseconds")
        XCTAssertTrue(problem("tt-checkpoint-index 2\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0 -4 1\n").hasPrefix("idx: line 3: the milliseconds"))
        XCTAssertTrue(problem("tt-checkpoint-index 1\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0\nend 20 2 5\n").hasPrefix("idx: line 4: "), "end is format 2's")
        XCTAssertTrue(problem("tt-checkpoint-index 2\nspacing 5\ncheckpoint 10 1 0x1 0x0 0x0 5\nend 10 2 5\n").hasPrefix("idx: line 4: the end"))
        XCTAssertTrue(problem("tt-checkpoint-index 2\nspacing 5\nend 20 2 5\nend 30 2 5\n").hasPrefix("idx: line 4: expected one 'end"))
        XCTAssertTrue(problem("tt-checkpoint-index 2\nspacing 5\nend 20 2 5\ncheckpoint 30 3 0x1 0x0 0x0 5\n").hasPrefix("idx: line 4: a checkpoint after the 'end'"))
    }

    /// The replay time to a point, interpolated between the measured ones: by icount when
    /// known, else by branch count; past the end at the last stretch's pace.
    func testReplaySecondsInterpolateTheMeasuredTimes() throws {
        let i = Self.sample() // 0.25 s to icount 1000 (brctr 77), 1.5 s more to 2000 (150), 0.125 s more to 2500 (170)
        func near(_ a: Double?, _ b: Double, file: StaticString = #filePath, line: UInt = #line) {
            guard let a else { return XCTFail("no estimate", file: file, line: line) }
            XCTAssertEqual(a, b, accuracy: 1e-9, file: file, line: line)
        }
        near(i.replaySeconds(toICount: 0, brctr: 0), 0)
        near(i.replaySeconds(toICount: 500, brctr: 0), 0.125)
        near(i.replaySeconds(toICount: 1000, brctr: 77), 0.25)
        near(i.replaySeconds(toICount: 1500, brctr: 0), 0.25 + 0.75)
        near(i.replaySeconds(toICount: 2500, brctr: 170), 1.875)
        near(i.replaySeconds(toICount: 3000, brctr: 170), 1.875 + 0.125)
        // By branch count: 77 + (150 - 77) / 2 is half way through the second gap.
        near(i.replaySeconds(toICount: nil, brctr: 77 + 73 / 2), 0.25 + 1.5 * Double(73 / 2) / 73)
        near(i.replaySeconds(toICount: nil, brctr: 160), 1.75 + 0.0625)
    }

    /// --jobs cuts where the measured replay time (plus the records' cost) is shared out,
    /// not where the branch counts are: a long slow gap with few branches gets a segment
    /// to itself.
    func testSplitPointsBalanceReplayTime() throws {
        func checkpoint(_ icount: UInt64, _ brctr: UInt64, _ seconds: Double?) -> IndexedCheckpoint {
            IndexedCheckpoint(fingerprint: Fingerprint(landmark: Landmark(ip: 0x1000, brctr: brctr, cx: 0), icount: icount, registerHash: 0),
                              backendState: [brctr], replaySeconds: seconds)
        }
        // Five checkpoints 100 instructions apart; the second and third gaps are slow (20 s
        // each) with few branches, the last ones fast with millions (whose records cost
        // well under a second at any plausible per-record cost).
        let timeline = Timeline()
        let times: [Double] = [1, 20, 20, 1, 1]
        let brctrs: [UInt64] = [1_000, 2_000, 3_000, 2_000_000, 4_000_000]
        timeline.setIndex(CheckpointIndex(spacing: .instructions(100), checkpoints: (0..<5).map {
            checkpoint(UInt64($0 + 1) * 100, brctrs[$0], times[$0])
        }, end: IndexedEnd(icount: 600, brctr: 6_000_000, replaySeconds: 1)))
        let start = Position(landmark: Landmark(ip: 0x1000, brctr: 1_000, cx: 0), icount: 100)
        // Replay seconds from the start: 1 s there, 44 s at the end; the half, 22.5 s, is
        // nearest icount 200 (21 s) among 200, 300 (41 s), 400 (42 s) and 500 (43 s).
        XCTAssertEqual(TraceTask.splitPoints(timeline, jobs: 2, after: start, beforeBrctr: 6_000_000).map(\.icount), [200])
        // Before the start is reached only its branch count is known: the same cut.
        let early = Position(landmark: start.landmark, icount: nil)
        XCTAssertEqual(TraceTask.splitPoints(timeline, jobs: 2, after: early, beforeBrctr: 6_000_000).map(\.icount), [200])
        // Without times (format 1), the branch counts alone: the half, 3,000,500, is nearest 4 M.
        let untimed = Timeline()
        untimed.setIndex(CheckpointIndex(spacing: .instructions(100), checkpoints: (0..<5).map {
            checkpoint(UInt64($0 + 1) * 100, brctrs[$0], nil)
        }))
        XCTAssertEqual(TraceTask.splitPoints(untimed, jobs: 2, after: start, beforeBrctr: 6_000_000).map(\.icount), [500])
        // Three jobs: thirds of 43 s (15.3 s, 29.7 s) at icounts 200 and 300.
        XCTAssertEqual(TraceTask.splitPoints(timeline, jobs: 3, after: start, beforeBrctr: 6_000_000).map(\.icount), [200, 300])
        // None before the start, none at or after the end.
        XCTAssertEqual(TraceTask.splitPoints(timeline, jobs: 9, after: start, beforeBrctr: 3_000, endICount: 300).map(\.icount), [200])
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
