import Diffusion
import Foundation
import TestSupport
import Testing

@testable import Verification

/// `verify` with its images and the probe's levels in UNet batches gives what it gives one image
/// (and one level) at a time: the same PNG bytes and the same probe numbers.
@Suite struct BatchedVerifyTests {
  func run(batchBytes: Int, folder: String) throws -> VerifyReport {
    var request = VerifyRequest(
      model: TestPaths.fixture("trained/tiny-shapes-vpred.safetensors"),
      load: ModelLoadOptions(threads: 2, batchBytes: batchBytes))
    request.preset = .standard  // the four tiny prompts
    request.steps = 4
    request.outputFolder = TestPaths.temporaryDirectory(folder)
    return try request.run()
  }

  @Test func batchedVerifyEqualsOneAtATime() throws {
    let batched = try run(batchBytes: ModelLoadOptions.defaultBatchBytes, folder: "verify-batched")
    let alone = try run(batchBytes: 0, folder: "verify-alone")
    #expect(batched.timings?.batches == [4])
    #expect(alone.timings?.batches == [1, 1, 1, 1])
    #expect(batched.images.count == 4)
    for (a, b) in zip(batched.images, alone.images) {
      let bytesA = try Data(contentsOf: URL(fileURLWithPath: try #require(a.file)))
      let bytesB = try Data(contentsOf: URL(fileURLWithPath: try #require(b.file)))
      #expect(bytesA == bytesB, "PNG of seed \(a.seed)")
    }
    #expect(batched.probe == alone.probe, "probe levels")
    #expect(batched.probe?.behaviour == .v)
    let timings = try #require(batched.timings)
    #expect(timings.gemmOperations > 0 && timings.steps > 0 && timings.total >= timings.steps)
    #expect(batched.text.contains("in batches of 4"))
  }

  /// The probe's levels in one batch or one at a time: the same numbers.
  @Test func probeLevelsPerCallDoNotChangeTheResult() throws {
    let model = try LoadedModel(path: TestPaths.fixture("trained/tiny-shapes-eps.safetensors"))
    let pipeline = model.pipeline
    let empty = try pipeline.text.encode("")
    let y = empty.admVector(originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64))
    let clean = try PredictionProbe.smoothLatent(channels: 4, height: 8, width: 8)
    let together = try PredictionProbe.run(
      unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean, batchBytes: 1 << 30)
    let single = try PredictionProbe.run(unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean)
    #expect(
      PredictionProbe.levelsPerBatch(
        unet: pipeline.unet, latentShape: clean.shape, contextTokens: empty.context.shape[1], levels: 4,
        batchBytes: 1 << 30) == 4)
    // A budget of three levels over five: calls of three and of two (a smaller last batch).
    let three =
      GuidedUNet.workingBytes(unet: pipeline.unet, rows: 6, latentShape: clean.shape)
      + pipeline.unet.crossAttentionBytes(tokens: empty.context.shape[1])
    #expect(
      PredictionProbe.levelsPerBatch(
        unet: pipeline.unet, latentShape: clean.shape, contextTokens: empty.context.shape[1], levels: 5,
        batchBytes: three) == 3)
    var configuration = PredictionProbe.Configuration.standard
    configuration.timesteps = [500, 650, 800, 950, 300]
    let uneven = try PredictionProbe.run(
      unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean, configuration: configuration,
      batchBytes: three)
    #expect(together == single)
    #expect(Array(uneven.levels.prefix(4)) == single.levels)
  }
}
