// Branch records: reading, extraction, dumping, call trees, exports.
//
// Files here: BranchRecord (the 24-byte record), BTSFile (streaming reader),
// BTSWriter, BTSError, RecordFormatter (byte-level line output), CallInstruction
// (x86 call-length decoding), BranchStats, and, on top of the replay log and
// Symbolize, the extractor, the call tree and the exports.
