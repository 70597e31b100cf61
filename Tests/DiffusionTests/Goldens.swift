import Foundation
import TestSupport

/// Reads the JSON goldens written by Scripts/fixtures/make_sampling_goldens.py.
enum Goldens {
  static func json(_ name: String) throws -> [String: Any] {
    let path = TestPaths.fixture("golden/sampling/\(name)")
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw GoldenError.malformed(name)
    }
    return object
  }

  enum GoldenError: Error { case malformed(String) }
}

extension Dictionary where Key == String, Value == Any {
  func array(_ key: String) -> [Any] { self[key] as? [Any] ?? [] }
  func object(_ key: String) -> [String: Any] { self[key] as? [String: Any] ?? [:] }
  func floats(_ key: String) -> [Float] { doubles(key).map { Float($0) } }
  func doubles(_ key: String) -> [Double] {
    (self[key] as? [Any] ?? []).map { ($0 as? NSNumber)?.doubleValue ?? .nan }
  }
  func ints(_ key: String) -> [Int] { (self[key] as? [Any] ?? []).map { ($0 as? NSNumber)?.intValue ?? -1 } }
  func string(_ key: String) -> String { self[key] as? String ?? "" }
  func double(_ key: String) -> Double { (self[key] as? NSNumber)?.doubleValue ?? .nan }
}

/// Worst |a − b| / max(1, |b|) over two arrays (∞ when the sizes differ).
func worstRelativeError(_ actual: [Float], _ expected: [Float]) -> Double {
  guard actual.count == expected.count else { return .infinity }
  var worst = 0.0
  for (a, b) in zip(actual, expected) {
    let error = abs(Double(a) - Double(b)) / max(1, abs(Double(b)))
    if error.isNaN { return .infinity }
    worst = max(worst, error)
  }
  return worst
}
