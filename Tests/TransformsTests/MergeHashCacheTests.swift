import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// A merge with the hash cache: the second run takes the inputs' hashes from the cache and writes
/// the same bytes as the first.
@Suite struct MergeHashCacheTests {
  let a = TestPaths.fixture("merge/a.safetensors")
  let b = TestPaths.fixture("merge/b.safetensors")
  let c = TestPaths.fixture("merge/c.safetensors")

  func request(_ inputs: [String], alpha: Double = 0.3) -> MergeRequest {
    var request = MergeRequest(inputs: inputs, method: .weightedSum, alpha: alpha)
    request.prediction = .epsilon
    return request
  }

  @Test func secondRunUsesTheCacheAndWritesTheSameBytes() throws {
    let directory = TestPaths.temporaryDirectory("merge-hash-cache")
    let cache = HashCache(path: directory + "/hashes.json")
    let first = try Merger.merge(request([a, b]), output: directory + "/one.safetensors", hashCache: cache)
    #expect(first.hashesFromCache == 0)
    #expect(cache.stores == 2)
    // A new instance, as the next process would have.
    let again = HashCache(path: directory + "/hashes.json")
    let second = try Merger.merge(request([a, b]), output: directory + "/two.safetensors", hashCache: again)
    #expect(second.hashesFromCache == 2)
    #expect(again.hits == 2 && again.stores == 0)
    #expect(second.inputHashes == first.inputHashes)
    let one = try Data(contentsOf: URL(fileURLWithPath: directory + "/one.safetensors"))
    let two = try Data(contentsOf: URL(fileURLWithPath: directory + "/two.safetensors"))
    #expect(one == two, "metadata with cached hashes is byte for byte the computed one")
    let expected = ModelHasher.hashes(of: try MappedFile(path: b), dataOffset: nil).sha256
    #expect(
      try SafeTensorsFile(path: directory + "/two.safetensors").metadata["sd_merge_models"]?.contains(expected) == true)
    // Without a cache nothing is taken from it.
    let plain = try Merger.merge(request([a, b]), output: directory + "/three.safetensors")
    #expect(plain.hashesFromCache == 0)
  }

  @Test func onlyUncachedInputsAreHashed() throws {
    let directory = TestPaths.temporaryDirectory("merge-hash-cache-partial")
    let cache = HashCache(path: directory + "/hashes.json")
    _ = ModelHasher.hashes(of: try MappedFile(path: a), dataOffset: nil, cache: cache)
    var addDifference = request([a, b, c], alpha: 0.5)
    addDifference.method = .addDifference
    let report = try Merger.merge(addDifference, output: directory + "/out.safetensors", hashCache: cache)
    #expect(report.hashesFromCache == 1)
    #expect(cache.stores == 3)
    let fresh = try Merger.merge(addDifference, output: directory + "/fresh.safetensors")
    #expect(report.inputHashes == fresh.inputHashes)
  }
}
