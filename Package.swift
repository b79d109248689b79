// swift-tools-version:5.10
//
// tt — time-travel analysis of virtual machines.
//
// Dependency rule (docs/architecture.md): TTSystem at the bottom; XenTT, the backend-neutral
// core, on it; the backends (QEMUBackend, XenBackend) beside each other on XenTT; BTS and
// Symbolize never depend on a backend; TTCommands on top. Only XenBackend imports CXen, only
// QEMUBackend and the plugin import CTTPluginABI. No C type leaks past the thin wrappers.
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
        // 1.7 for Stat (fstat) and FileDescriptor.pipe; resolved at 1.8.1.
        .package(url: "https://github.com/apple/swift-system", from: "1.7.0"),
    ],
    targets: [
        // C worlds, each behind a thin Swift wrapper.
        .systemLibrary(name: "CXen", path: "Sources/CXen"),
        .systemLibrary(name: "CLibDW", path: "Sources/CLibDW"),
        // The plugin's shared-memory control file: one C header that the plugin and
        // QEMUBackend both import.
        .target(name: "CTTPluginABI", path: "Sources/CTTPluginABI"),
        .target(name: "TTQemuPlugin", dependencies: ["CTTPluginABI"], path: "Sources/TTQemuPlugin", publicHeadersPath: ".",
                cSettings: [.unsafeFlags(["-O2", "-fvisibility=hidden"])]),
        // CRC-32C for the replay log's entry checksums (SSE4.2 when present, a table otherwise).
        .target(name: "CCRC32C", path: "Sources/CCRC32C", cSettings: [.unsafeFlags(["-O2"])]),

        // C helpers for TTSystem: posix_spawn with GNU extensions, pidfd_open.
        .target(name: "CTTShims", path: "Sources/CTTShims"),
        // Syscall-level helpers: files, mapped files, output, errors, processes, signals, sockets.
        .target(name: "TTSystem", dependencies: ["CTTShims",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "Symbolize", dependencies: ["CLibDW", "TTSystem"]),
        // The backend-neutral core: locations, landmarks, the ReplayBackend and Recorder
        // contracts, replay sessions, the state directory, the replay log. No QEMU, no Xen.
        .target(name: "XenTT", dependencies: ["TTSystem", "CCRC32C",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // QEMU's icount record/replay over QMP and the gdbstub, with tt's TCG plugin.
        .target(name: "QEMUBackend", dependencies: ["XenTT", "TTSystem", "CTTPluginABI",
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
            "XenTT", "QEMUBackend", "XenBackend", "BTS", "Symbolize", "TTSystem",
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
        // Test support: running tt, QEMU, gcc and binutils from the tests (TTSystem's Subprocess).
        .target(name: "TestProcesses", dependencies: ["TTSystem", .product(name: "SystemPackage", package: "swift-system")],
                path: "Tests/TestProcesses"),

        .testTarget(name: "TTSystemTests", dependencies: ["TTSystem"]),
        .testTarget(name: "ExecLogOracleTests", dependencies: ["ExecLogOracle", "TestProcesses"]),
        .testTarget(name: "TTCommandsTests", dependencies: ["TTCommands", "XenTT", "TestProcesses",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // CXen only for the libxl JSON oracle (libxl's own parser checks our JSON).
        .testTarget(name: "XenBackendTests", dependencies: ["TestProcesses", 
            "XenBackend", "XenTT", "TTSystem", "CXen", "CIpt",
            .product(name: "SystemPackage", package: "swift-system"),
        ], resources: [.copy("Golden")]),
        .testTarget(name: "IntelPTTests", dependencies: ["IntelPT", "CIpt", "XenTT", "TestProcesses"]),
        .testTarget(name: "SymbolizeTests", dependencies: ["TestProcesses", "Symbolize", "TTSystem",
            .product(name: "SystemPackage", package: "swift-system")], exclude: ["Fixtures"]),
        .testTarget(name: "SessionTests", dependencies: ["XenTT", "QEMUBackend", "CTTPluginABI", "TTSystem"]),
        // tt trace-task end to end: real QEMU, the bundled guests, QEMU's exec log as the oracle.
        .testTarget(name: "TraceTaskTests", dependencies: ["ExecLogOracle", "TestProcesses"]),
        // Real QEMU and the bundled guest; needs the tt executable and libttplugin.so built.
        .testTarget(name: "SessionIntegrationTests", dependencies: ["XenTT", "QEMUBackend", "TTSystem", "ExecLogOracle", "TestProcesses",
            .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "BTSTests", dependencies: ["TestProcesses", "BTS", "TTCommands", "TTSystem",
            .product(name: "SystemPackage", package: "swift-system")], exclude: ["Fixtures"]),
        // Hostile inputs against the built tt and bts-dump: decoy files must come out unchanged.
        .testTarget(name: "HostileInputTests", dependencies: ["TestProcesses"]),
        .testTarget(name: "XenTTTests", dependencies: ["XenTT", "TTSystem", "CCRC32C", "TestProcesses",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
    ]
)
