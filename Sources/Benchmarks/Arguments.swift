extension [String] {
  /// The argument after `flag` (`--size 512` → "512"), or nil where the flag or its value is missing.
  func value(after flag: String) -> String? {
    guard let index = firstIndex(of: flag), index + 1 < count else { return nil }
    return self[index + 1]
  }
}
