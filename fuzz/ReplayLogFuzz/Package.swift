// swift-tools-version:5.10
//
// libFuzzer target for the replay-log reader. Built only by scripts/fuzz-log.sh
// (`swift build --sanitize=fuzzer`), never by the main package's build or tests.
import PackageDescription

let package = Package(
    name: "ReplayLogFuzz",
    dependencies: [.package(name: "tt", path: "../..")],
    targets: [
        .executableTarget(
            name: "ReplayLogFuzz",
            dependencies: [.product(name: "XenTT", package: "tt"), .product(name: "CCRC32C", package: "tt")],
            // libFuzzer supplies main(); the target only defines LLVMFuzzerTestOneInput.
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
