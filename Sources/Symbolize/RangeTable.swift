/// Non-overlapping address segments, each naming the innermost item that covers it,
/// built once from possibly nested intervals and answered by binary search.
struct RangeTable {
    struct Interval {
        var start: UInt64
        var end: UInt64
        var item: Int32
        /// Nesting depth: where intervals overlap, the deepest wins.
        var depth: Int32
        /// Among intervals with the same start, depth and end, the highest rank wins.
        var rank: Int32
    }

    private(set) var starts: [UInt64] = []
    private(set) var ends: [UInt64] = []
    private(set) var items: [Int32] = []

    init() {}

    init(_ input: [Interval]) {
        var intervals = input.filter { $0.start < $0.end }
        intervals.sort {
            if $0.start != $1.start { return $0.start < $1.start }
            if $0.depth != $1.depth { return $0.depth < $1.depth }
            if $0.end != $1.end { return $0.end > $1.end }
            return $0.rank < $1.rank
        }
        starts.reserveCapacity(intervals.count)
        ends.reserveCapacity(intervals.count)
        items.reserveCapacity(intervals.count)
        // Sweep with a stack of open intervals; the top is the innermost one that is
        // still open. Entries that ended under the top are dropped when reached.
        var stack: [Interval] = []
        var cursor: UInt64 = 0
        func emit(upTo limit: UInt64, _ item: Int32) {
            guard cursor < limit else { return }
            if let last = ends.last, last == cursor, items.last == item {
                ends[ends.count - 1] = limit
            } else {
                starts.append(cursor)
                ends.append(limit)
                items.append(item)
            }
            cursor = limit
        }
        for iv in intervals {
            while let top = stack.last, top.end <= iv.start {
                emit(upTo: top.end, top.item)
                stack.removeLast()
            }
            if let top = stack.last { emit(upTo: iv.start, top.item) }
            cursor = max(cursor, iv.start)
            stack.append(iv)
        }
        while let top = stack.popLast() {
            emit(upTo: top.end, top.item)
        }
    }

    /// The segment index containing `address`.
    @inline(__always)
    func segment(containing address: UInt64) -> Int? {
        var lo = 0, hi = starts.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if starts[mid] <= address { lo = mid + 1 } else { hi = mid }
        }
        let i = lo - 1
        guard i >= 0, address < ends[i] else { return nil }
        return i
    }

    @inline(__always)
    func item(containing address: UInt64) -> Int32? {
        guard let i = segment(containing: address) else { return nil }
        return items[i]
    }

    var count: Int { starts.count }
}
