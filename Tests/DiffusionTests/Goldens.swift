import Foundation
import TestSupport

/// Reads the JSON goldens written by Scripts/fixtures/make_sampling_goldens.py.
enum Goldens {
  /// The file as nested `[String: Any]` / `[Any]` / `Double` / `String` / `Bool` values.
  /// (JSONDecoder, not JSONSerialization: on Linux the latter rounds some doubles wrongly.)
  static func json(_ name: String) throws -> [String: Any] {
    let path = TestPaths.fixture("golden/sampling/\(name)")
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    guard let object = try JSONDecoder().decode(JSONValue.self, from: data).plain as? [String: Any]
    else { throw GoldenError.malformed(name) }
    return object
  }

  enum GoldenError: Error { case malformed(String) }
}

/// Any JSON value, decoded exactly.
enum JSONValue: Decodable {
  case number(Double)
  case string(String)
  case bool(Bool)
  case array([JSONValue])
  case object([String: JSONValue])
  case null

  init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Double.self) {
      self = .number(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }

  var plain: Any {
    switch self {
    case .number(let value): return value
    case .string(let value): return value
    case .bool(let value): return value
    case .array(let values): return values.map(\.plain)
    case .object(let values): return values.mapValues(\.plain)
    case .null: return NSNull()
    }
  }
}

extension Dictionary where Key == String, Value == Any {
  func array(_ key: String) -> [Any] { self[key] as? [Any] ?? [] }
  func object(_ key: String) -> [String: Any] { self[key] as? [String: Any] ?? [:] }
  func floats(_ key: String) -> [Float] { doubles(key).map { Float($0) } }
  func doubles(_ key: String) -> [Double] {
    (self[key] as? [Any] ?? []).map { goldenDouble($0) ?? .nan }
  }
  func ints(_ key: String) -> [Int] { (self[key] as? [Any] ?? []).map { goldenInt($0) ?? -1 } }
  func string(_ key: String) -> String { self[key] as? String ?? "" }
  func double(_ key: String) -> Double { self[key].flatMap(goldenDouble) ?? .nan }
  func int(_ key: String) -> Int? { self[key].flatMap(goldenInt) }
}

/// A number from a golden: JSON numbers, or "inf", "-inf", "nan" for what JSON cannot hold.
func goldenDouble(_ value: Any) -> Double? {
  if let number = value as? Double { return number }
  switch value as? String {
  case "inf": return .infinity
  case "-inf": return -.infinity
  case "nan": return .nan
  default: return nil
  }
}

/// An integer from a golden.
func goldenInt(_ value: Any) -> Int? {
  guard let number = value as? Double, number == number.rounded(), abs(number) < 1e15 else {
    return nil
  }
  return Int(number)
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
