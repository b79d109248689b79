// Branch records: reading, extraction, dumping, call trees, exports.
