import XCTest
import BTS

/// Encodings written from the Intel SDM (and checked against objdump where noted).
final class CallInstructionTests: XCTestCase {
    func testDirectAndIndirectCalls64() {
        XCTAssertEqual(CallInstruction.length(of: [0xe8, 1, 2, 3, 4]), 5)                  // call rel32
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0xd0]), 2)                        // call *%rax
        XCTAssertEqual(CallInstruction.length(of: [0x41, 0xff, 0xd3]), 3)                  // call *%r11
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x15, 1, 2, 3, 4]), 6)            // call *disp32(%rip)
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x14, 0xc5, 1, 2, 3, 4]), 7)      // call *disp32(,%rax,8)
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x50, 0x08]), 3)                  // call *0x8(%rax)
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x54, 0x24, 0x08]), 4)            // call *0x8(%rsp)
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x90, 1, 2, 3, 4]), 6)            // call *disp32(%rax)
        XCTAssertEqual(CallInstruction.length(of: [0x2e, 0xe8, 1, 2, 3, 4]), 6)            // cs call (retpoline thunks)
        XCTAssertEqual(CallInstruction.length(of: [0xf2, 0xff, 0xd0]), 3)                  // bnd call *%rax
        XCTAssertEqual(CallInstruction.length(of: [0x67, 0xe8, 1, 2, 3, 4]), 6)            // addr32 call
        XCTAssertEqual(CallInstruction.length(of: [0x66, 0xe8, 1, 2, 3, 4]), 6)            // 66 ignored for near call in 64-bit
        XCTAssertEqual(CallInstruction.length(of: [0xff, 0x1c, 0x25, 1, 2, 3, 4]), 7)      // lcall *abs32 (FF /3, SIB no base)
    }

    func testNotCalls() {
        XCTAssertNil(CallInstruction.length(of: [0xe9, 1, 2, 3, 4]))     // jmp rel32
        XCTAssertNil(CallInstruction.length(of: [0xff, 0xe0]))           // jmp *%rax (FF /4)
        XCTAssertNil(CallInstruction.length(of: [0xc3]))                 // ret
        XCTAssertNil(CallInstruction.length(of: [0xe8, 1, 2]))           // truncated
        XCTAssertNil(CallInstruction.length(of: [0x9a, 1, 2, 3, 4, 5, 6])) // far call invalid in 64-bit mode
    }

    func testThirtyTwoBitForms() {
        XCTAssertEqual(CallInstruction.length(of: [0x9a, 1, 2, 3, 4, 5, 6], mode: .bits32), 7)   // lcall ptr16:32
        XCTAssertEqual(CallInstruction.length(of: [0x66, 0x9a, 1, 2, 3, 4], mode: .bits32), 6)   // lcall ptr16:16
        XCTAssertEqual(CallInstruction.length(of: [0x66, 0xe8, 1, 2], mode: .bits32), 4)         // call rel16
        XCTAssertEqual(CallInstruction.length(of: [0x67, 0xff, 0x16, 1, 2], mode: .bits32), 5)  // call *disp16 (16-bit addressing)
        XCTAssertEqual(CallInstruction.length(of: [0x67, 0xff, 0x57, 1], mode: .bits32), 4)     // call *disp8(%bx)
        XCTAssertEqual(CallInstruction.length(of: [0x40, 0xe8, 1, 2, 3, 4], mode: .bits32), nil) // 0x40 is inc %eax there
    }
}
