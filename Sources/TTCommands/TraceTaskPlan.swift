import ArgumentParser
import BTS
import SystemPackage
import TTSystem
import XenBackend
import XenTT

/// `tt trace-task --plan DIR`, `--plan DIR --segment K`, `--merge DIR`: the window cut for
/// a scheduler (`TracePlan`), one segment traced, the segments joined.
extension TraceTaskCommand {
    /// The plan directory: an absolute path without `..` or control characters, created
    /// 0700 (parents too) with tt's marker, or an existing empty directory or earlier plan
    /// directory of the caller's not writable by others; never through a symlink (the
    /// state directories' rules, `StateOwnership`). Its files are 0600, written atomically.
    static func planDirectory(_ text: String) throws -> StateDirectory {
        try StateDirectory(name: "plan", explicit: text, base: "/")
    }

    /// An existing plan directory (checked as a state directory is) and its plan.
    static func existingPlan(_ text: String) throws -> (dir: StateDirectory, plan: TracePlan) {
        let dir = try planDirectory(text)
        try StateOwnership.check(dir.path)
        guard dir.exists else { throw TracePlan.Refused("\(dir.path): no such plan directory", status: ExitStatus.noInput) }
        return (dir, try TracePlan.load(dir))
    }

    func makePlan() throws {
        if backend == .xen { try XenSessions.requireAvailable() }
        _ = try Location(parsing: startText!)
        _ = try Location(parsing: endText!)
        let dir = try Self.planDirectory(plan!)
        try StateOwnership.check(dir.path)
        guard !StateOwnership.hasRecording(dir) else {
            throw StateError.refused(dir.path, "a recording's state directory; name a directory of its own for the plan")
        }
        guard let tt = readSymbolicLink("/proc/self/exe")?.string,
              tt.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw TracePlan.Refused("cannot name this tt's executable (/proc/self/exe) in the job scripts", status: ExitStatus.unavailable)
        }
        let scope = try SessionScope(state: try state.resolve(), debug: debug, choice: backend)
        divergence.apply(to: scope.session)
        try scope.run { scope in
            let (start, end) = try window(RecordingSymbols(scope.state))
            guard scope.backend.capabilities.contains(.seeking) else {
                throw SessionError.unsupported(operation: "plan a trace", backend: scope.backend.name)
            }
            try dir.create()
            try scope.attachOrBoot()
            let p = try TracePlan.make(session: scope.session, state: scope.state, start: start, end: end, jobs: jobs)
            // An earlier plan's files go: its segments do not belong to this one.
            if let old = try? TracePlan.load(dir) {
                for k in 0..<old.segmentCount { dir.remove(TracePlan.segmentFile(k)); dir.remove(TracePlan.partialSegmentFile(k)) }
            }
            for f in [TracePlan.mergedLog, TracePlan.mergedOutput] { dir.remove(f) }
            try dir.write(TracePlan.planFile, p.text)
            let files = TracePlanFiles(plan: p, tt: tt, dir: dir.path.string)
            try dir.write(TracePlan.commandsFile, files.commands)
            try dir.write(TracePlan.slurmFile, files.slurm)
            try dir.write(TracePlan.kubernetesFile, files.kubernetes(parallelism: parallelism ?? p.segmentCount, image: image))
            let n = p.segmentCount
            printLine("tt: trace plan of \(p.name) in \(dir.path): \(n) segment\(n == 1 ? "" : "s"), brctr \(p.start.landmark.brctr + 1)…\(p.end.landmark.brctr)\(n == 1 ? " (no resumable indexed checkpoint inside the window)" : ", cut at indexed checkpoints")")
            printLine("  start \(startText!): landed at \(scope.session.describe(p.start))")
            printLine("  end   \(endText!): landed at \(scope.session.describe(p.end))")
            printLine("  run the segments with one of: xargs -P N -L 1 env < \(dir.file(TracePlan.commandsFile)); sbatch \(dir.file(TracePlan.slurmFile)); kubectl create -f \(dir.file(TracePlan.kubernetesFile))")
            printLine("  then: tt trace-task --merge \(dir.path) [-o OUT] [-x]")
        }
    }

    func traceSegment() throws {
        let (dir, p) = try Self.existingPlan(plan!)
        let k = segment!
        let recording = try p.state()
        try recording.requireRecording()
        try p.check(segment: k, in: dir)
        // The segment's replay runs in a directory of its own, one job at a time.
        let work = try StateDirectory(name: p.name, explicit: recording.file(StateFile.segmentDirectory(k)).string, base: "/")
        if work.exists {
            let stale = try work.lock()  // refused while another job traces this segment
            _ = try StateOwnership.remove(work)
            withExtendedLifetime(stale) {}
        }
        try work.create()
        let lock = try work.lock()
        defer {
            _ = try? StateOwnership.remove(work)
            withExtendedLifetime(lock) {}
        }
        let session = try Self.replay(in: work, of: recording, cpu: CPUPlacement.cpu(forSegment: k), name: "\(p.name) segment \(k)", cancellation: .onSignals(),
                                      policy: divergence.policy, debug: debug)
        defer { try? session.destroy() }
        let records = try p.traceSegment(k, session: session, into: dir, guestWordSize: RecordingSymbols(recording).elfWordSize ?? 64)
        printLine("tt: trace-task segment \(k) of \(p.segmentCount) of \(p.name): \(records) records, \(p.boundaryText(k)) … \(p.boundaryText(k + 1)); \(dir.file(TracePlan.segmentFile(k)))")
    }

    func mergeSegments() throws {
        let (dir, p) = try Self.existingPlan(merge!)
        let out = output.map { FilePath($0) } ?? dir.file(TracePlan.mergedOutput)
        try SafeFiles.requireReplaceable(out)
        let recording = RecordingSymbols(try p.state())
        let window = try p.merge(dir, logPath: dir.file(TracePlan.mergedLog), guestWordSize: recording.elfWordSize ?? 64)
        guard let result = try TraceTaskOutput.write(window, to: out, extended: extended) else {
            throw TraceTask.Inexact(message: "no start position")
        }
        let range = window.brctrRange.map { "brctr \($0.lowerBound)…\($0.upperBound)" } ?? "empty"
        printLine("tt: trace-task \(p.name): \(window.records) records, \(range), merged from \(p.segmentCount) segment\(p.segmentCount == 1 ? "" : "s")")
        printLine("  start \(p.boundaryText(0))")
        printLine("  end   \(p.boundaryText(p.segmentCount))")
        printLine("  output \(result.path) (\(extended ? "extended" : "raw")); replay log \(window.logPath)")
        try printTrace(result.path, records: window.records, recording: recording)
    }
}

/// The files of a plan directory that run its segments: text only, for the user's
/// scheduler; tt itself never runs them or any shell.
struct TracePlanFiles {
    let plan: TracePlan
    /// tt's executable, absolute; the plan directory, absolute.
    let tt: String
    let dir: String

    /// `text` as one word for a POSIX shell or xargs: in single quotes, each `'` as `'\''`.
    static func shellWord(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// One command line per segment, for `xargs -P N -L 1 env < commands`.
    var commands: String {
        (0..<plan.segmentCount).map { "\(Self.shellWord(tt)) trace-task --plan \(Self.shellWord(dir)) --segment \($0)\n" }.joined()
    }

    /// A Slurm job array, one task per segment (`sbatch slurm.sh`).
    var slurm: String {
        """
        #!/bin/bash
        # tt trace-task plan of the recording \(plan.name): \(plan.segmentCount) segments, one array task each.
        # Submit with: sbatch \(Self.shellWord(dir + "/" + TracePlan.slurmFile))
        # Every node must see the recording and this directory at the same paths; then merge with
        # tt trace-task --merge \(Self.shellWord(dir))
        #SBATCH --job-name=tt-trace-\(plan.name)
        #SBATCH --array=0-\(plan.segmentCount - 1)
        set -eu
        exec \(Self.shellWord(tt)) trace-task --plan \(Self.shellWord(dir)) --segment "${SLURM_ARRAY_TASK_ID:?not a Slurm array task}"

        """
    }

    /// A Kubernetes Indexed Job, one completion per segment; the index from the Job's
    /// completion-index annotation (JOB_COMPLETION_INDEX, declared so `$(…)` expands).
    func kubernetes(parallelism: Int, image: String?) -> String {
        func q(_ s: String) -> String { JSONString.quoted(s) }
        let state = plan.statePath
        var name = String(plan.name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" })
        name = String(("tt-trace-" + name).prefix(63))
        while name.hasSuffix("-") { name.removeLast() }
        let argv = [tt, "trace-task", "--plan", dir, "--segment", "$(JOB_COMPLETION_INDEX)"].map(q).joined(separator: ", ")
        return """
        # tt trace-task plan of the recording \(plan.name): \(plan.segmentCount) segments, one completion each.
        # The image must hold tt (at the path below) and its QEMU; the recording and the plan are
        # mounted at the same paths from the nodes (a shared filesystem mounted on every node).
        # Create with: kubectl create -f k8s-job.yaml; then merge with tt trace-task --merge.
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: \(q(name))
        spec:
          completionMode: Indexed
          completions: \(plan.segmentCount)
          parallelism: \(min(parallelism, plan.segmentCount))
          backoffLimit: \(plan.segmentCount)
          template:
            spec:
              restartPolicy: Never
              containers:
                - name: tt
                  image: \(q(image ?? "IMAGE-WITH-TT-AND-QEMU"))
                  command: [\(argv)]
                  env:
                    - name: JOB_COMPLETION_INDEX
                      valueFrom:
                        fieldRef:
                          fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                  volumeMounts:
                    - name: recording
                      mountPath: \(q(state))
                    - name: plan
                      mountPath: \(q(dir))
              volumes:
                - name: recording
                  hostPath:
                    path: \(q(state))
                    type: Directory
                - name: plan
                  hostPath:
                    path: \(q(dir))
                    type: Directory

        """
    }
}
