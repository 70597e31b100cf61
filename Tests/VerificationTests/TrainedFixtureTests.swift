import Checkpoint
import Diffusion
import Foundation
import Tensors
import Testing
import TestSupport
@testable import Verification

/// The checks and the probe on the trained tiny models (`Fixtures/trained`, made by
/// `Scripts/fixtures/train_tiny.py`): good renders pass, deliberately broken ones fail with the
/// right reason, and the probe tells the two models apart.
@Suite(.serialized) struct TrainedFixtureTests {
  static let epsPath = TestPaths.fixture("trained/tiny-shapes-eps.safetensors")
  static let vPath = TestPaths.fixture("trained/tiny-shapes-vpred.safetensors")

  static func pipeline(_ path: String, _ prediction: Diffusion.PredictionType, zsnr: Bool) throws -> SDXLPipeline {
    try SDXLPipeline(
      weights: ModelWeights(path: path),
      behaviour: ModelBehaviour(prediction: prediction, zeroTerminalSNR: zsnr), headDimension: 16)
  }

  /// Renders like train_tiny.py's evaluation (Euler, 20 steps, CFG 5, 64×64) and checks the result.
  static func verify(_ pipeline: SDXLPipeline, _ prompt: String, seed: UInt64, cfg: Float = 5) throws
    -> VerifyReport.Image
  {
    var settings = GenerationSettings(prompt: prompt)
    settings.sampler = .euler
    settings.steps = 20
    settings.cfg = cfg
    settings.seed = seed
    settings.width = 64
    settings.height = 64
    let result = try pipeline.generate(settings)
    return try VerifyReport.Image(
      prompt: prompt, seed: seed, image: FloatImage(tensor: result.image), stepLatents: result.stepLatents)
  }

  static func probe(_ pipeline: SDXLPipeline) throws -> PredictionProbe.Result {
    let encoder = try AutoencoderKL(checkpoint: pipeline.weights, loadEncoder: true)
    let image = try PredictionProbe.testImage(width: 64, height: 64)
    let clean = try encoder.encode(image.encoderInput()).latent
    let empty = try pipeline.text.encode("")
    let y = empty.admVector(originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64))
    return try PredictionProbe.run(unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean)
  }

  static func failed(_ image: VerifyReport.Image) -> Set<String> {
    Set(image.checks.filter { !$0.passed }.map(\.name))
  }

  @Test func epsilonModelRendersPassAndProbesAsEpsilon() throws {
    let pipeline = try Self.pipeline(Self.epsPath, .epsilon, zsnr: false)
    for (index, prompt) in ["blue triangle, black background", "yellow circle, white background"].enumerated() {
      let image = try Self.verify(pipeline, prompt, seed: UInt64(1000 + index))
      #expect(image.passed, "\(prompt): \(image.checks.filter { !$0.passed }.map(\.line))")
    }
    let result = try Self.probe(pipeline)
    #expect(result.behaviour == .epsilon && result.confidence > 0.9, "\(result.levels)")
    let file = try ModelWeights(path: Self.epsPath).file
    let report = PredictionDetector.detect(keys: Set(file.tensors.map(\.name)), metadata: file.metadata)
    #expect(PredictionVerdict(result: result, report: report).passed)
    // The same UNet falsely marked v (a merge that copied `v_pred` from the wrong parent).
    let falseV = PredictionDetector.detect(
      keys: Set(file.tensors.map(\.name)).union(["v_pred", "ztsnr"]), metadata: file.metadata)
    let verdict = PredictionVerdict(result: result, report: falseV)
    #expect(!verdict.passed && verdict.explanation.contains("behaves like epsilon"))
  }
}

extension TrainedFixtureTests {
  @Test func vModelRendersPassAndProbesAsV() throws {
    let pipeline = try Self.pipeline(Self.vPath, .vPrediction, zsnr: true)
    for (index, prompt) in ["blue triangle, black background", "yellow circle, white background"].enumerated() {
      let image = try Self.verify(pipeline, prompt, seed: UInt64(1000 + index))
      #expect(image.passed, "\(prompt): \(image.checks.filter { !$0.passed }.map(\.line))")
    }
    let result = try Self.probe(pipeline)
    #expect(result.behaviour == .v && result.confidence > 0.8, "\(result.levels)")
    let file = try ModelWeights(path: Self.vPath).file
    let keys = Set(file.tensors.map(\.name))
    let marked = PredictionDetector.detect(keys: keys, metadata: file.metadata)
    #expect(PredictionVerdict(result: result, report: marked).passed)
    // The merge that lost its markers: no `v_pred`/`ztsnr`, no metadata.
    let stripped = PredictionDetector.detect(keys: keys.subtracting(["v_pred", "ztsnr"]), metadata: [:])
    let verdict = PredictionVerdict(result: result, report: stripped)
    #expect(!verdict.passed && verdict.declared == "epsilon")
    #expect(verdict.explanation.contains("marked epsilon") && verdict.explanation.contains("behaves like v"))
  }

  @Test func vModelSampledWrongFailsTheRightChecks() throws {
    // Lost markers: ComfyUI samples the v model as epsilon on the ordinary schedule.
    let asEpsilon = try Self.pipeline(Self.vPath, .epsilon, zsnr: false)
    let lost = try Self.verify(asEpsilon, "yellow circle, white background", seed: 1001)
    #expect(!lost.passed)
    print("v as eps:", lost.checks.map(\.line))
    // Lost `ztsnr` only: v sampling on the ordinary schedule cannot reach black.
    let noZSNR = try Self.pipeline(Self.vPath, .vPrediction, zsnr: false)
    let grey = try Self.verify(noZSNR, "blue triangle, black background", seed: 1000)
    print("v no zsnr:", grey.checks.map(\.line))
  }
}
