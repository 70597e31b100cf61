import Foundation

/// Shell-style globs with `*` (any run of characters) and `?` (one character).
public enum Glob {
  public static func matches(_ text: String, pattern: String) -> Bool {
    let t = Array(text.utf8), p = Array(pattern.utf8)
    var ti = 0, pi = 0, star = -1, mark = 0
    while ti < t.count {
      if pi < p.count && (p[pi] == UInt8(ascii: "?") || p[pi] == t[ti]) {
        ti += 1; pi += 1
      } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
        star = pi; mark = ti; pi += 1
      } else if star >= 0 {
        pi = star + 1; mark += 1; ti = mark
      } else {
        return false
      }
    }
    while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
    return pi == p.count
  }
}
