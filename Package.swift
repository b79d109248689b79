// swift-tools-version:5.10
//
// tt — time-travel analysis of virtual machines.
//
// Dependency rule: Symbolize, BTS and the backend-neutral XenTT never import CXen;
// only XenBackend does. No C type leaks past CXen's and CLibDW's Swift wrappers.
import PackageDescription

let package = Package(
    name: "tt",
    products: [
        .executable(name: "tt", targets: ["tt"]),
        .executable(name: "bts-dump", targets: ["bts-dump"]),
        .executable(name: "bts-trace", targets: ["bts-trace"]),
        .executable(name: "bts-extract", targets: ["bts-extract"]),
        .library(name: "XenTT", targets: ["XenTT"]),
        .library(name: "BTS", targets: ["BTS"]),
        .library(name: "Symbolize", targets: ["Symbolize"]),
        // For fuzz/ReplayLogFuzz, which re-checksums mutated logs.
        .library(name: "CCRC32C", targets: ["CCRC32C"]),
        // The QEMU TCG plugin, loaded by QEMU with -plugin; QEMU resolves qemu_plugin_* at load.
        .library(name: "ttplugin", type: .dynamic, targets: ["TTQemuPlugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // C worlds, each behind a thin Swift wrapper.
        .systemLibrary(name: "CXen", path: "Sources/CXen"),
        .systemLibrary(name: "CLibDW", path: "Sources/CLibDW"),
        .target(name: "TTQemuPlugin", path: "Sources/TTQemuPlugin",
                cSettings: [.unsafeFlags(["-O2", "-fvisibility=hidden"])]),
        // CRC-32C for the replay log's entry checksums (SSE4.2 when present, a table otherwise).
        .target(name: "CCRC32C", path: "Sources/CCRC32C", cSettings: [.unsafeFlags(["-O2"])]),

        // Syscall-level helpers: mapped files, byte output buffers, errors, process spawning.
        .target(name: "TTSystem", dependencies: [
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "Symbolize", dependencies: ["CLibDW", "TTSystem"]),
        // C helpers: atomics on memory shared with the QEMU plugin, posix_spawn with GNU extensions.
        .target(name: "CTTShims", path: "Sources/CTTShims"),
        .target(name: "XenTT", dependencies: ["TTSystem", "Symbolize", "CCRC32C", "CTTShims",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "XenBackend", dependencies: [
            "CXen", "XenTT", "TTSystem", "IntelPT",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // Intel PT (Xen vmtrace) decoding into branch records, through libipt.
        .systemLibrary(name: "CIpt", path: "Sources/CIpt"),
        .target(name: "IntelPT", dependencies: ["CIpt", "XenTT", "TTSystem"]),
        .target(name: "BTS", dependencies: ["XenTT", "Symbolize", "TTSystem"]),
        // Every command type; the executables below are one-line entry points into it.
        .target(name: "TTCommands", dependencies: [
            "XenTT", "XenBackend", "BTS", "Symbolize", "TTSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "tt", dependencies: ["TTCommands"]),
        // The original XenTT tool names, as entry points into the same commands.
        .executableTarget(name: "bts-dump", dependencies: ["TTCommands"]),
        .executableTarget(name: "bts-trace", dependencies: ["TTCommands"]),
        .executableTarget(name: "bts-extract", dependencies: ["TTCommands"]),

        // Test support: QEMU's own exec log as an independent branch-trace oracle.
        .target(name: "ExecLogOracle", dependencies: ["TTSystem"], path: "Tests/ExecLogOracle",
                // Optimized even in debug builds: the tests parse logs of millions of lines.
                swiftSettings: [.unsafeFlags(["-O"])]),
        // Test support: spawning tt, QEMU and binutils from the integration tests.
        .target(name: "TestProcesses", path: "Tests/TestProcesses"),

        .testTarget(name: "TTSystemTests", dependencies: ["TTSystem"]),
        .testTarget(name: "ExecLogOracleTests", dependencies: ["ExecLogOracle"]),
        .testTarget(name: "TTCommandsTests", dependencies: ["TTCommands", "XenTT",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // CXen only for the libxl JSON oracle (libxl's own parser checks our JSON).
        .testTarget(name: "XenBackendTests", dependencies: ["TestProcesses", 
            "XenBackend", "XenTT", "TTSystem", "CXen", "CIpt",
            .product(name: "SystemPackage", package: "swift-system"),
        ], resources: [.copy("Golden")]),
        .testTarget(name: "IntelPTTests", dependencies: ["IntelPT", "CIpt", "XenTT"]),
        .testTarget(name: "SymbolizeTests", dependencies: ["TestProcesses", "Symbolize", "TTSystem",
            .product(name: "SystemPackage", package: "swift-system")], exclude: ["Fixtures"]),
        .testTarget(name: "SessionTests", dependencies: ["XenTT", "TTSystem"]),
        // tt trace-task end to end: real QEMU, the bundled guests, QEMU's exec log as the oracle.
        .testTarget(name: "TraceTaskTests", dependencies: ["ExecLogOracle", "TestProcesses"]),
        // Real QEMU and the bundled guest; needs the tt executable and libttplugin.so built.
        .testTarget(name: "SessionIntegrationTests", dependencies: ["XenTT", "TTSystem", "ExecLogOracle", "TestProcesses",
            .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "BTSTests", dependencies: ["TestProcesses", "BTS", "TTCommands", "TTSystem",
            .product(name: "SystemPackage", package: "swift-system")], exclude: ["Fixtures"]),
        .testTarget(name: "XenTTTests", dependencies: ["XenTT", "TTSystem", "CCRC32C",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
    ]
)
