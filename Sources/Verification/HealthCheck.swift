import Foundation

/// The outcome of one check: pass or fail, what was measured, the limit, and a sentence why.
public struct HealthCheck: Codable, Sendable, Equatable {
  /// How the measured value must relate to the threshold for the check to pass.
  public enum Requirement: String, Codable, Sendable {
    /// value ≤ threshold.
    case atMost = "<="
    /// value ≥ threshold.
    case atLeast = ">="
  }

  /// A stable identifier, e.g. `finite`, `not_blank`, `not_noise`.
  public var name: String
  /// Whether the check passed.
  public var passed: Bool
  /// The measured value.
  public var value: Double
  /// The limit the value was compared with.
  public var threshold: Double
  /// How `value` must relate to `threshold` to pass.
  public var requirement: Requirement
  /// A human sentence: what was measured and, on failure, what it usually means.
  public var explanation: String

  /// A check result; `passed` follows from `value`, `threshold` and `requirement` unless given.
  public init(
    name: String, value: Double, threshold: Double, requirement: Requirement,
    passed: Bool? = nil, explanation: String
  ) {
    self.name = name
    self.value = value
    self.threshold = threshold
    self.requirement = requirement
    switch requirement {
    case .atMost: self.passed = passed ?? (value <= threshold)
    case .atLeast: self.passed = passed ?? (value >= threshold)
    }
    self.explanation = explanation
  }

  /// One line: `PASS not_noise 0.981 (>= 0.5): …`.
  public var line: String {
    "\(passed ? "PASS" : "FAIL") \(name) \(HealthCheck.format(value)) (\(requirement.rawValue) "
      + "\(HealthCheck.format(threshold))): \(explanation)"
  }

  static func format(_ value: Double) -> String {
    if value == value.rounded() && abs(value) < 1e9 { return String(Int(value)) }
    return String(format: abs(value) >= 100 ? "%.1f" : "%.4g", value)
  }
}
