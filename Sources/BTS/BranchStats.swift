/// Counts over a branch stream: records, distinct targets, hottest targets and edges.
/// Memory grows with the number of *distinct* addresses and edges, not with records.
public struct BranchStats {
    public struct Edge: Hashable, Sendable {
        public var from: UInt64
        public var to: UInt64
        public init(from: UInt64, to: UInt64) { self.from = from; self.to = to }
    }

    public private(set) var records = 0
    public private(set) var targetCounts: [UInt64: Int] = [:]
    public private(set) var edgeCounts: [Edge: Int] = [:]
    /// Smallest and largest format field (the branch counter range in extended files).
    public private(set) var formatRange: ClosedRange<UInt64>?

    public init() {}

    public mutating func add(_ r: BranchRecord) {
        records += 1
        targetCounts[r.to, default: 0] += 1
        edgeCounts[Edge(from: r.from, to: r.to), default: 0] += 1
        if let f = formatRange {
            formatRange = min(f.lowerBound, r.format)...max(f.upperBound, r.format)
        } else {
            formatRange = r.format...r.format
        }
    }

    public var uniqueTargets: Int { targetCounts.count }
    public var uniqueEdges: Int { edgeCounts.count }

    /// The `n` most frequent targets, ties broken by address so output is stable.
    public func hottestTargets(_ n: Int) -> [(address: UInt64, count: Int)] {
        top(targetCounts.map { ($0.key, $0.value) }, n).map { (address: $0.0, count: $0.1) }
    }

    public func hottestEdges(_ n: Int) -> [(edge: Edge, count: Int)] {
        top(edgeCounts.map { ($0.key, $0.value) }, n, key: { ($0.from, $0.to) }).map { (edge: $0.0, count: $0.1) }
    }

    /// Group target counts by a key (e.g. the containing function's entry), hottest first.
    public func hottest<K: Hashable & Comparable>(_ n: Int, groupedBy key: (UInt64) -> K?) -> [(key: K, count: Int)] {
        var groups: [K: Int] = [:]
        for (a, c) in targetCounts { if let k = key(a) { groups[k, default: 0] += c } }
        return top(groups.map { ($0.key, $0.value) }, n).map { (key: $0.0, count: $0.1) }
    }

    private func top<K: Comparable>(_ items: [(K, Int)], _ n: Int) -> [(K, Int)] {
        Array(items.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(n))
    }

    private func top<K>(_ items: [(K, Int)], _ n: Int, key: (K) -> (UInt64, UInt64)) -> [(K, Int)] {
        Array(items.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : key($0.0) < key($1.0) }.prefix(n))
    }
}
