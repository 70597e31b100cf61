import Foundation
import TestSupport
import Testing

/// `merge` and `info --hash` with the hash cache (`ROUWEI_HASH_CACHE`, `--no-hash-cache`).
@Suite struct HashCacheCommandTests {
  let a = TestPaths.fixture("merge/a.safetensors")
  let b = TestPaths.fixture("merge/b.safetensors")

  func json(_ run: BinaryRun) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stderr)")
  }

  /// This process's environment with a private cache at `path`.
  func environment(cache path: String) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["ROUWEI_HASH_CACHE"] = path
    return environment
  }

  @Test func mergeTwiceTakesHashesFromTheCache() throws {
    let directory = TestPaths.temporaryDirectory("cli-hash-cache")
    let env = environment(cache: directory + "/cache/hashes.json")
    let args = ["merge", a, b, "--prediction", "eps", "--json", "-o"]
    let first = try BinaryRun.run(args + [directory + "/one.safetensors"], environment: env)
    #expect(first.status == 0, "\(first.stderr)")
    #expect(try json(first)["hashesFromCache"] as? Int == 0)
    #expect(FileManager.default.fileExists(atPath: directory + "/cache/hashes.json"))
    let second = try BinaryRun.run(args + [directory + "/two.safetensors"], environment: env)
    #expect(try json(second)["hashesFromCache"] as? Int == 2)
    #expect(second.stderr.isEmpty, "\(second.stderr)")
    let one = try Data(contentsOf: URL(fileURLWithPath: directory + "/one.safetensors"))
    let two = try Data(contentsOf: URL(fileURLWithPath: directory + "/two.safetensors"))
    #expect(one == two)
    let off = try BinaryRun.run(args + [directory + "/three.safetensors", "--no-hash-cache"], environment: env)
    #expect(try json(off)["hashesFromCache"] as? Int == 0)
    let human = try BinaryRun.run(
      ["merge", a, b, "--prediction", "eps", "-o", directory + "/four.safetensors"], environment: env)
    #expect(human.stdout.contains("input hashes: 2 of 2 from the hash cache"), "\(human.stdout)")
  }

  @Test func disabledCacheIsNeitherReadNorWritten() throws {
    let directory = TestPaths.temporaryDirectory("cli-hash-cache-off")
    let cachePath = directory + "/hashes.json"
    for _ in 0..<2 {
      let run = try BinaryRun.run(
        ["merge", a, b, "--prediction", "eps", "--json", "--no-hash-cache", "-o", directory + "/o.safetensors"],
        environment: environment(cache: cachePath))
      #expect(try json(run)["hashesFromCache"] as? Int == 0)
    }
    #expect(!FileManager.default.fileExists(atPath: cachePath))
    var off = ProcessInfo.processInfo.environment
    off["ROUWEI_HASH_CACHE"] = "off"
    for _ in 0..<2 {
      let run = try BinaryRun.run(["info", "--hash", "--json", a], environment: off)
      #expect(try json(run)["hashesFromCache"] as? Bool == false)
    }
  }

  @Test func infoHashTwice() throws {
    let directory = TestPaths.temporaryDirectory("cli-hash-cache-info")
    let env = environment(cache: directory + "/hashes.json")
    // Without --hash the cache is not touched.
    let plain = try BinaryRun.run(["info", "--json", a], environment: env)
    #expect(try json(plain)["hashesFromCache"] == nil)
    #expect(!FileManager.default.fileExists(atPath: directory + "/hashes.json"))
    let first = try json(try BinaryRun.run(["info", "--hash", "--json", a], environment: env))
    let second = try json(try BinaryRun.run(["info", "--hash", "--json", a], environment: env))
    #expect(first["hashesFromCache"] as? Bool == false)
    #expect(second["hashesFromCache"] as? Bool == true)
    let firstHashes = try #require(first["hashes"] as? [String: String])
    #expect(firstHashes == second["hashes"] as? [String: String])
    #expect(firstHashes["autoV3"] != nil, "info asks for the data digest, and the cache keeps it")
    let human = try BinaryRun.run(["info", "--hash", a], environment: env)
    #expect(human.stdout.contains("Hashes (from the hash cache)"))
    #expect(human.stdout.contains(try #require(firstHashes["sha256"])))
    let bypass = try json(try BinaryRun.run(["info", "--hash", "--json", "--no-hash-cache", a], environment: env))
    #expect(bypass["hashesFromCache"] as? Bool == false)
    #expect(bypass["hashes"] as? [String: String] == firstHashes)
  }
}
