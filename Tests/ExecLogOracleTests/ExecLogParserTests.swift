// The exec-log parser on small hand-written logs in QEMU 7.2's format (as seen in real logs of
// the bundled guest): each test states what QEMU's messages mean and checks the oracle's reading.

import ExecLogOracle
import Foundation
import XCTest

final class ExecLogParserTests: XCTestCase {
    typealias T = ExecLogOracle.Transfer

    func analyze(_ log: String) throws -> ExecLogOracle.Run {
        let file = try Harness.tempFile("parser.log")
        defer { try? FileManager.default.removeItem(at: file) }
        try log.write(to: file, atomically: true, encoding: .utf8)
        return try ExecLogOracle.analyze(logAt: file.path, keepingInstructions: true)
    }

    func assertError(_ log: String, line: Int, contains text: String, file: StaticString = #filePath, lineNo: UInt = #line) {
        XCTAssertThrowsError(try analyze(log), file: file, line: lineNo) { error in
            guard let e = error as? ExecLogOracle.LogError else { return XCTFail("\(error)", file: file, line: lineNo) }
            XCTAssertEqual(e.line, line, "\(e)", file: file, line: lineNo)
            XCTAssertTrue(e.message.contains(text), "\(e)", file: file, line: lineNo)
        }
    }

    // A block of three instructions ending in a jump, and the block it jumps to.
    let twoBlocks = """
        ----------------
        IN: _start
        0x0010000c:  fa                       cli
        0x0010000d:  0f 01 15 50 0b 10 00     lgdtl    0x100b50
        0x00100014:  ea 30 00 10 00 08 00     ljmpl    $0x8:$0x100030

        Trace 0: 0x7f53f0161f40 [00000000/0010000c/000000b0/ff020200] _start
        ----------------
        IN: _start
        0x00100030:  66 b9 10 00              movw     $0x10, %cx

        Trace 0: 0x7f53f0162140 [00000000/00100030/000000b0/ff020200] _start

        """

    func testJumpBetweenBlocksIsOneTransfer() throws {
        let run = try analyze(twoBlocks)
        XCTAssertEqual(run.executed.map(\.address), [0x10000c, 0x10000d, 0x100014, 0x100030])
        XCTAssertEqual(run.executed.map(\.length), [1, 7, 7, 4])
        XCTAssertEqual(run.transfers, [T(from: 0x100014, to: 0x100030)])
        XCTAssertEqual(run.instructionCount, 4)
    }

    func testFallThroughIntoTheNextBlockIsNoTransfer() throws {
        let run = try analyze("""
            IN: a
            0x00001000:  90                       nop

            Trace 0: 0x7f0000000100 [00000000/00001000/000000b0/ff020200] a
            IN: b
            0x00001001:  90                       nop

            Trace 0: 0x7f0000000200 [00000000/00001001/000000b0/ff020200] b
            Trace 0: 0x7f0000000100 [00000000/00001000/000000b0/ff020200] a

            """)
        XCTAssertEqual(run.transfers, [T(from: 0x1001, to: 0x1000)])
        XCTAssertEqual(run.instructionCount, 3)
    }

    /// "Stopped execution of TB chain before P [PC]": the block logged just before never ran.
    func testStoppedExecutionDropsTheBlock() throws {
        let run = try analyze(twoBlocks + """
            Trace 0: 0x7f53f0161f40 [00000000/0010000c/000000b0/ff020200] _start
            Stopped execution of TB chain before 0x7f53f0161f40 [0010000c] _start
            Trace 0: 0x7f53f0162140 [00000000/00100030/000000b0/ff020200] _start

            """)
        XCTAssertEqual(run.executed.map(\.address), [0x10000c, 0x10000d, 0x100014, 0x100030, 0x100030])
        XCTAssertEqual(run.transfers, [T(from: 0x100014, to: 0x100030), T(from: 0x100030, to: 0x100030)])
    }

    func testLandmarksCountTheTransfersBeforeThem() throws {
        let run = try analyze(twoBlocks + """
            Trace 0: 0x7f53f0161f40 [00000000/0010000c/000000b0/ff020200] _start
            Trace 0: 0x7f53f0162140 [00000000/00100030/000000b0/ff020200] _start

            """)
        // 0x10000c 0x10000d 0x100014 → 0x100030 → 0x10000c 0x10000d 0x100014 → 0x100030
        let first = try XCTUnwrap(run.execution(of: 0x100030, occurrence: 1))
        XCTAssertEqual(first, .init(index: 3, address: 0x100030, counter: 1))
        XCTAssertEqual(run.execution(of: 0x10000c, occurrence: 2), .init(index: 4, address: 0x10000c, counter: 2))
        let second = try XCTUnwrap(run.execution(of: 0x100030, occurrence: 2))
        XCTAssertEqual(second.counter, 3)
        XCTAssertNil(run.execution(of: 0x100030, occurrence: 3))
        XCTAssertEqual(run.execution(of: 0x100030, atCounter: 3), second)
        XCTAssertNil(run.execution(of: 0x100030, atCounter: 2))
        XCTAssertEqual(Array(run.transfers(from: first, to: second)),
                       [T(from: 0x100030, to: 0x10000c), T(from: 0x100014, to: 0x100030)])
    }

    func testStoppedExecutionOfAnotherBlockIsAnError() {
        assertError(twoBlocks + """
            Stopped execution of TB chain before 0x7f53f0161f40 [0010000c] _start

            """, line: 13, contains: "last executed block")
    }

    /// "cpu_io_recompile: rewound execution of TB to PC": the block ran up to, not including,
    /// the instruction at PC, which runs again in a block of its own.
    func testIoRecompileCutsTheBlockBeforeTheIoInstruction() throws {
        let run = try analyze("""
            IN:
            0x000ee28b:  89 c1                    movl     %eax, %ecx
            0x000ee28d:  a1 f0 00 e0 fe           movl     0xfee000f0, %eax
            0x000ee292:  90                       nop

            Trace 0: 0x7f78e80757c0 [00000000/000ee28b/000000b0/ff020200]
            cpu_io_recompile: rewound execution of TB to 000ee28d
            ----------------
            IN:
            0x000ee28d:  a1 f0 00 e0 fe           movl     0xfee000f0, %eax

            Trace 0: 0x7f78e8075d40 [00000000/000ee28d/000000b0/ff038201]

            """)
        XCTAssertEqual(run.executed.map(\.address), [0xee28b, 0xee28d])
        XCTAssertEqual(run.transfers, [])
    }

    func testIoRecompileOutsideTheBlockIsAnError() {
        assertError(twoBlocks + "cpu_io_recompile: rewound execution of TB to 00100020\n",
                    line: 13, contains: "not an instruction of the last executed block")
    }

    /// Instructions longer than 8 bytes continue on a line of bytes only.
    func testLongInstructionsContinueOnTheNextLine() throws {
        let run = try analyze("""
            IN:
            0x000ee2a2:  c7 05 50 03 e0 fe 00 87  movl     $0x8700, 0xfee00350
            0x000ee2aa:  00 00
            0x000ee2ac:  c3                       retl

            Trace 0: 0x7f78e80766c0 [00000000/000ee2a2/000000b0/ff038201]

            """)
        XCTAssertEqual(run.executed.map(\.length), [10, 1])
    }

    /// A rep-prefixed string instruction executing again is its next iteration; an interrupt
    /// in the middle is a transfer out of it, and the iret one back into it.
    func testRepIterationsAreNotTransfersButInterruptsAre() throws {
        let run = try analyze("""
            IN: copy_block
            0x001003c6:  fc                       cld
            0x001003c7:  f3 a4                    rep movsb (%esi), %es:(%edi)

            Trace 0: 0x7f0000001000 [00000000/001003c6/000000b0/ff020200] copy_block
            IN: copy_block
            0x001003c7:  f3 a4                    rep movsb (%esi), %es:(%edi)

            Trace 0: 0x7f0000001100 [00000000/001003c7/000000b0/ff020200] copy_block
            IN: irq0_entry
            0x00100043:  cf                       iretl

            Trace 0: 0x7f0000001200 [00000000/00100043/000000b0/ff020200] irq0_entry
            Trace 0: 0x7f0000001100 [00000000/001003c7/000000b0/ff020200] copy_block
            Trace 0: 0x7f0000001100 [00000000/001003c7/000000b0/ff020200] copy_block
            IN: copy_block
            0x001003c9:  90                       nop

            Trace 0: 0x7f0000001300 [00000000/001003c9/000000b0/ff020200] copy_block

            """)
        XCTAssertEqual(run.instructionCount, 7)
        XCTAssertEqual(run.transfers, [T(from: 0x1003c7, to: 0x100043), T(from: 0x100043, to: 0x1003c7)])
    }

    /// The same pc translated again (here a one-instruction block near an icount limit): each
    /// execution runs the instructions of the translation at its host address.
    func testRetranslationsAreToldApartByHostAddress() throws {
        let run = try analyze("""
            IN: f
            0x00002000:  90                       nop
            0x00002001:  90                       nop
            0x00002002:  eb fc                    jmp      0x2000

            Trace 0: 0x7f0000002000 [00000000/00002000/000000b0/ff020200] f
            IN: f
            0x00002000:  90                       nop

            Trace 0: 0x7f0000002100 [00000000/00002000/000000b0/ff020201] f
            IN: f
            0x00002001:  90                       nop
            0x00002002:  eb fc                    jmp      0x2000

            Trace 0: 0x7f0000002200 [00000000/00002001/000000b0/ff020200] f
            Trace 0: 0x7f0000002000 [00000000/00002000/000000b0/ff020200] f

            """)
        XCTAssertEqual(run.executed.map(\.address), [0x2000, 0x2001, 0x2002, 0x2000, 0x2001, 0x2002, 0x2000, 0x2001, 0x2002])
        XCTAssertEqual(run.transfers, [T(from: 0x2002, to: 0x2000), T(from: 0x2002, to: 0x2000)])
    }

    func testBlockWithoutListingIsAnError() {
        assertError(twoBlocks + "Trace 0: 0x7f0000009999 [00000000/00100040/000000b0/ff020200]\n",
                    line: 13, contains: "translation is not in the log")
    }

    func testListingWithoutBytesIsAnError() {
        assertError("IN:\n0x00001000:  nop\n", line: 2, contains: "no bytes")
    }

    func testUnreadableTraceLineIsAnError() {
        assertError(twoBlocks + "Trace 0: garbage\n", line: 13, contains: "Trace line")
    }

    func testMissingFileIsAnError() {
        XCTAssertThrowsError(try ExecLogOracle.analyze(logAt: "/nonexistent/exec.log"))
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(at: Harness.scratch)
        super.tearDown()
    }

    func testRepStringDetection() {
        XCTAssertTrue(ExecLogOracle.isRepString([0xF3, 0xA4]))              // rep movsb
        XCTAssertTrue(ExecLogOracle.isRepString([0xF3, 0x48, 0xA5]))        // rep movsq
        XCTAssertTrue(ExecLogOracle.isRepString([0x66, 0xF3, 0xAB]))        // rep stosw
        XCTAssertTrue(ExecLogOracle.isRepString([0xF2, 0xAE]))              // repne scasb
        XCTAssertTrue(ExecLogOracle.isRepString([0xF3, 0x6C]))              // rep insb
        XCTAssertFalse(ExecLogOracle.isRepString([0xA4]))                   // movsb
        XCTAssertFalse(ExecLogOracle.isRepString([0xF3, 0xC3]))             // repz ret
        XCTAssertFalse(ExecLogOracle.isRepString([0xF3, 0x0F, 0xB8, 0xC0])) // popcnt
        XCTAssertFalse(ExecLogOracle.isRepString([0xF3, 0x90]))             // pause
    }
}
