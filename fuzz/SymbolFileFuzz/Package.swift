// swift-tools-version:5.10
//
// libFuzzer target for the ELF and DWARF readers (Symbolize's SymbolFile: loading, then
// every kind of lookup). Built only by scripts/fuzz-elf.sh (`swift build --sanitize=fuzzer`),
// never by the main package's build or tests.
import PackageDescription

let package = Package(
    name: "SymbolFileFuzz",
    dependencies: [.package(name: "tt", path: "../..")],
    targets: [
        .executableTarget(
            name: "SymbolFileFuzz",
            dependencies: [.product(name: "Symbolize", package: "tt")],
            // libFuzzer supplies main(); the target only defines LLVMFuzzerTestOneInput.
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
