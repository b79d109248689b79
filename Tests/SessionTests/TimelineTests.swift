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
