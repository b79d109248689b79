import CXen
#if canImport(Glibc)
import Glibc
#endif

/// One message a Xen library logged through tt's logger.
public struct XenLibraryMessage: Codable, Equatable, Sendable, CustomStringConvertible {
    public enum Level: Int, Codable, Sendable, Comparable {
        case debug = 1, verbose, detail, progress, info, notice, warning, error, critical
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }
    public let level: Level
    /// The library's own context tag ("xencall", "libxl", ...), may be empty.
    public let context: String
    public let text: String

    public var description: String { context.isEmpty ? text : "\(context): \(text)" }
}

/// tt's xentoollog logger: every handle of libxenctrl, libxl, xenforeignmemory and
/// xenevtchn is opened with it, so the libraries never write to stderr themselves
/// (they do when given NULL, and libxl crashes when given NULL). Messages are
/// collected; callers decide what to show.
final class XenLibraryLog: @unchecked Sendable {
    /// Kept messages are capped: libxl at debug level can be chatty.
    static let capacity = 512

    private var mutex = pthread_mutex_t()
    private var kept: [XenLibraryMessage] = []
    private(set) var dropped = 0
    private let cLogger: UnsafeMutablePointer<tt_xtl_logger>

    init() {
        pthread_mutex_init(&mutex, nil)
        // calloc failing here means the process is out of memory; nothing sensible remains.
        guard let l = tt_xtl_logger_new(xenLibraryLogSink, nil) else {
            fatalError("out of memory allocating the Xen library logger")
        }
        cLogger = l
        // The context is set after init so the C side holds a pointer to a complete object.
        cLogger.pointee.context = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        tt_xtl_logger_free(cLogger)
        pthread_mutex_destroy(&mutex)
    }

    /// The logger to hand to the C libraries; valid for this object's lifetime.
    var logger: UnsafeMutablePointer<xentoollog_logger> { tt_xtl_as_logger(cLogger) }

    fileprivate func append(level: Int32, context: String, text: String) {
        let level = XenLibraryMessage.Level(rawValue: Int(level)) ?? .error
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if kept.count < Self.capacity {
            kept.append(XenLibraryMessage(level: level, context: context, text: text))
        } else {
            dropped += 1
        }
    }

    /// Everything logged so far.
    var messages: [XenLibraryMessage] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return kept
    }

    /// Messages at or above `level`, e.g. to explain a failure.
    func messages(atLeast level: XenLibraryMessage.Level) -> [XenLibraryMessage] {
        messages.filter { $0.level >= level }
    }

    /// The most recent error-level message, which usually names the failing call.
    var lastError: XenLibraryMessage? { messages(atLeast: .error).last }
}

private func xenLibraryLogSink(_ context: UnsafeMutableRawPointer?, _ level: Int32,
                               _ name: UnsafePointer<CChar>?, _ message: UnsafePointer<CChar>?) {
    guard let context else { return }
    let log = Unmanaged<XenLibraryLog>.fromOpaque(context).takeUnretainedValue()
    var text = message.map { String(cString: $0) } ?? ""
    while text.last == "\n" { text.removeLast() }
    log.append(level: level, context: name.map { String(cString: $0) } ?? "", text: text)
}
