import Foundation
import XCTest
import TTSystem

final class JSONStringTests: XCTestCase {
    /// Expected texts written by hand from RFC 8259 §7.
    func testEscapesWhatJSONRequiresAndNothingElse() {
        XCTAssertEqual(JSONString.quoted("plain"), #""plain""#)
        XCTAssertEqual(JSONString.quoted(#"a"b\c"#), #""a\"b\\c""#)
        XCTAssertEqual(JSONString.quoted("l1\nl2\r\t\u{8}\u{c}"), #""l1\nl2\r\t\b\f""#)
        XCTAssertEqual(JSONString.quoted("\u{0}\u{1f}\u{1}"), #""\u0000\u001f\u0001""#)
        XCTAssertEqual(JSONString.quoted("/ é ∂ 🙂 \u{7f}"), "\"/ é ∂ 🙂 \u{7f}\"")
        XCTAssertEqual(JSONString.quoted(""), #""""#)
    }

    /// Foundation's parser, an independent reader, gets every string back.
    func testFoundationParsesTheEscapedFormBackToTheOriginal() throws {
        let all = String(decoding: (0..<0x80).map { UInt8($0) }, as: UTF8.self) + "f\"x\\ ≠"
        for s in [all, "\n", "a\u{1}b", "std::vector<int>::operator[]"] {
            let parsed = try JSONSerialization.jsonObject(with: Data(JSONString.quoted(s).utf8), options: [.fragmentsAllowed])
            XCTAssertEqual(parsed as? String, s)
        }
    }
}
