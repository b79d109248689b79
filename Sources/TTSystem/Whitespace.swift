extension String {
    /// The string without leading and trailing white space (blanks, tabs, newlines): how
    /// one-line state files, /sys and /proc files and `key = value` lines are read.
    public var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
