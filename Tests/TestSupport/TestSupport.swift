import Foundation
import SafeTensors
import Testing

/// Paths and helpers shared by every test target.
public enum TestPaths {
  /// The package root, found from this file's location.
  public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// `Fixtures/<relative>`.
  public static func fixture(_ relative: String) -> String {
    packageRoot.appendingPathComponent("Fixtures").appendingPathComponent(relative).path
  }

  /// A fresh empty directory under the system temporary directory.
  public static func temporaryDirectory(_ label: String = "test") -> String {
    let path = NSTemporaryDirectory() + "rouwei-\(label)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }
}

/// Normalised mean squared error `Σ(a−b)² / Σb²` and the worst element, for closeness checks.
public struct Closeness: CustomStringConvertible {
  public let nmse: Double
  public let maxAbs: Double
  public let worstIndex: Int
  public let actual: Float
  public let expected: Float

  public init(_ actual: [Float], _ expected: [Float]) {
    precondition(actual.count == expected.count, "length \(actual.count) vs \(expected.count)")
    var error = 0.0, power = 0.0, worst = 0.0, worstIndex = 0
    for index in 0..<actual.count {
      let difference = Double(actual[index]) - Double(expected[index])
      error += difference * difference
      power += Double(expected[index]) * Double(expected[index])
      if abs(difference) > worst || difference.isNaN {
        worst = abs(difference)
        worstIndex = index
      }
    }
    nmse = power > 0 ? error / power : error
    maxAbs = worst
    self.worstIndex = worstIndex
    self.actual = actual.isEmpty ? 0 : actual[worstIndex]
    self.expected = expected.isEmpty ? 0 : expected[worstIndex]
  }

  public var description: String {
    "nmse \(nmse), max |Δ| \(maxAbs) at [\(worstIndex)]: got \(actual), expected \(expected)"
  }
}

/// Expects `actual` to be close to `expected`: the same count and a normalised mean squared error
/// (`Closeness.nmse`) of at most `nmse`; the message names `what` and the worst element. The one
/// closeness check of every test target.
public func expectClose(
  _ actual: [Float], _ expected: [Float], _ what: String, nmse: Double = 1e-8,
  sourceLocation: SourceLocation = #_sourceLocation
) {
  guard actual.count == expected.count else {
    Issue.record("\(what): \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
    return
  }
  let closeness = Closeness(actual, expected)
  #expect(closeness.nmse <= nmse, "\(what): \(closeness)", sourceLocation: sourceLocation)
}

/// Runs the built `rouwei-ckpt` binary and captures its output.
public struct BinaryRun {
  public let status: Int32
  public let stdout: String
  public let stderr: String

  /// The built executable beside the test bundle (`.build/<config>/rouwei-ckpt`).
  public static var executable: String {
    var url = Bundle.main.bundleURL
    for _ in 0..<4 {
      let candidate = url.appendingPathComponent("rouwei-ckpt").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      url = url.deletingLastPathComponent()
    }
    return TestPaths.packageRoot.appendingPathComponent(".build/debug/rouwei-ckpt").path
  }

  /// A hash cache private to this test process, so tests never read or write the user's
  /// `~/.cache/rouwei-ckpt/hashes.json`.
  public static let testHashCache = TestPaths.temporaryDirectory("hash-cache") + "/hashes.json"

  /// `environment` (default: this process's) with `ROUWEI_HASH_CACHE` pointing at
  /// `testHashCache` unless it is already set.
  public static func environment(_ environment: [String: String]? = nil) -> [String: String] {
    var result = environment ?? ProcessInfo.processInfo.environment
    if result["ROUWEI_HASH_CACHE"] == nil { result["ROUWEI_HASH_CACHE"] = testHashCache }
    return result
  }

  /// Runs the binary with `arguments`, waiting for it to finish. The environment is
  /// `environment(environment)`: the hash cache is the test process's own unless given.
  public static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> BinaryRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = Self.environment(environment)
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes before waiting so a large output cannot block the child.
    final class Box: @unchecked Sendable { var data = Data() }
    let outBox = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
      outBox.data = out.fileHandleForReading.readDataToEndOfFile()
      group.leave()
    }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    let outData = outBox.data
    process.waitUntilExit()
    return BinaryRun(
      status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errData, as: UTF8.self))
  }
}
