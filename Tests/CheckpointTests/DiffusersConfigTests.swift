import Foundation
import TestSupport
import Testing

@testable import Checkpoint

/// The diffusers config fuzz target's seed corpus (Fixtures/fuzz/diffusers-config): real
/// SDXL configs read as they should, hostile ones end in `CheckpointError.invalidConfig` or are
/// read without trapping. Crashers found by `Scripts/fuzz diffusers-config` are added here.
@Suite struct DiffusersConfigTests {
  static let directory = TestPaths.fixture("fuzz/diffusers-config")

  func read(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: Self.directory + "/" + name))
    return try DiffusersConfig.object(from: data, path: name)
  }

  @Test func realConfigsAreRead() throws {
    let claim = DiffusersConfig.unetClaim(try read("unet-config.json"))
    #expect(claim.kind == .sdxlBase)
    #expect(claim.unet?.modelChannels == 320 && claim.unet?.channelMultipliers == [1, 2, 4])
    #expect(claim.unet?.transformerDepth == [1, 2, 10] && claim.unet?.admChannels == 2816)
    let scheduler = PredictionDetector.detect(
      keys: [], metadata: [:], schedulerConfig: try read("scheduler-vpred-zsnr.json"))
    #expect(scheduler.prediction == .v && scheduler.zeroTerminalSNR)
    let epsilon = PredictionDetector.detect(keys: [], metadata: [:], schedulerConfig: try read("scheduler-eps.json"))
    #expect(epsilon.prediction == .epsilon && !epsilon.zeroTerminalSNR)
    #expect(try read("model_index.json")["_class_name"] as? String == "StableDiffusionXLPipeline")
  }

  @Test(arguments: ["deep-nesting.json", "deep-array-unclosed.json", "not-an-object.json", "truncated.json"])
  func hostileFilesAreTypedErrors(name: String) throws {
    #expect(throws: CheckpointError.self) { try read(name) }
  }

  @Test func oversizedFilesAreRefusedUnread() {
    let data = Data(repeating: UInt8(ascii: " "), count: DiffusersConfig.maximumBytes)
    #expect(throws: CheckpointError.self) { try DiffusersConfig.object(from: data, path: "big.json") }
  }

  @Test func wrongTypesAndExtremeNumbersAreEvidenceNotCrashes() throws {
    // Wrong JSON types count as absent; channel 0, negatives and Int.max do not trap.
    let wrong = DiffusersConfig.unetClaim(try read("wrong-types.json"))
    #expect(wrong.kind == .unknown && wrong.unet?.residualBlocksPerLevel == 2)
    let extreme = DiffusersConfig.unetClaim(
      try DiffusersConfig.object(
        from: Data(#"{"block_out_channels":[0,-1,9223372036854775807],"cross_attention_dim":-5}"#.utf8), path: "x"))
    #expect(extreme.unet?.channelMultipliers == [0, -1, Int.max])
    for name in ["hostile-numbers.json", "utf8-bom.json", "lone-surrogate.json", "duplicate-key.json"] {
      if let object = try? read(name) {
        _ = DiffusersConfig.unetClaim(object)
        _ = PredictionDetector.detect(keys: [], metadata: [:], schedulerConfig: object)
      }
    }
  }
}
