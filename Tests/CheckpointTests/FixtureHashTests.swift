import TestSupport
import Testing

@testable import Checkpoint

@Suite struct FixtureHashTests {
  /// Digests of the committed fixture computed with coreutils, independently of our code:
  ///   sha256sum tiny-sdxl-eps.safetensors
  ///   tail -c +$((8 + 120712 + 1)) tiny-sdxl-eps.safetensors | sha256sum   (header is 120712 bytes)
  ///   dd if=tiny-sdxl-eps.safetensors bs=65536 skip=16 count=1 | sha256sum
  @Test func epsilonFixtureMatchesCoreutils() throws {
    let report = try Inspector.inspect(
      path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"), options: .init(hashes: true))
    let hashes = try #require(report.hashes)
    #expect(report.headerBytes == 120712)
    #expect(hashes.sha256 == "8e79cceb965239992eee3bfe153c50d12093dc703d1bc30ebc86f335b4418368")
    #expect(hashes.autoV2 == "8e79cceb96")
    #expect(hashes.dataSHA256 == "258f8d01a12c9540383f5abe9e135702a548b094b99c9132cd020d8cf0413c25")
    #expect(hashes.autoV3 == "258f8d01a12c")
    #expect(hashes.autoV1 == "318babda")
  }

  /// The v-pred fixture has the same tensor data plus two zero-byte markers and other metadata:
  /// AutoV3 (data only) is unchanged, the whole-file hashes are not.
  @Test func autoV3SurvivesMarkersAndMetadata() throws {
    let eps = try #require(
      try Inspector.inspect(
        path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"), options: .init(hashes: true)
      ).hashes)
    let v = try #require(
      try Inspector.inspect(
        path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"), options: .init(hashes: true)
      ).hashes)
    #expect(eps.autoV3 == v.autoV3)
    #expect(eps.autoV2 != v.autoV2)
  }
}
