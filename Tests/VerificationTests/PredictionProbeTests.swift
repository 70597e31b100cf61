import Checkpoint
import Diffusion
import Foundation
import Tensors
import TestSupport
import Testing

@testable import Verification

/// The probe's decision on analytic networks whose answer is known, and the verdict wording.
@Suite struct PredictionProbeTests {
  /// A smooth 4×8×8 latent with unit standard deviation.
  static func smoothLatent() -> Tensor {
    var values: [Float] = []
    for channel in 0..<4 {
      for row in 0..<8 {
        for column in 0..<8 {
          let x = Float(column) / 3.5 - 1
          let y = Float(row) / 3.5 - 1
          let patterns = [x, y, x * y, x * x + y * y - 0.6]
          values.append(patterns[channel])
        }
      }
    }
    let mean = values.reduce(0, +) / Float(values.count)
    let deviation = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(values.count))
      .squareRoot()
    return Tensor(shape: [1, 4, 8, 8], values: values.map { $0 / deviation })
  }

  /// An ideal network of either kind: recovers each draw's ε exactly from the scaled input (it
  /// knows x₀) and answers ε, or v with its guess of x₀ = `guess(x₀)`.
  static func oracle(
    _ kind: PredictionType, clean: Tensor, guess: @escaping ([Float]) -> [Float] = { $0 }
  ) -> (Tensor, Float) throws -> Tensor {
    let schedule = DiscreteNoiseSchedule.sdxl()
    let x0 = clean.scalars
    return { input, timestep in
      let sigma = schedule.sigmas[Int(timestep)]
      let scale = (sigma * sigma + 1).squareRoot()
      let alpha = 1 / scale
      let estimate = guess(x0)
      var output: [Float] = []
      for sample in 0..<input.shape[0] {
        let values = Array(input.scalars[sample * x0.count..<(sample + 1) * x0.count])
        let noise = zip(values, x0).map { ($0 * scale - $1) / sigma }
        output +=
          kind == .epsilon ? noise : zip(noise, estimate).map { alpha * $0 - sigma * alpha * $1 }
      }
      return Tensor(shape: input.shape, values: output)
    }
  }

  @Test func idealEpsilonModelIsEpsilon() throws {
    let clean = Self.smoothLatent()
    let result = try PredictionProbe.run(
      cleanLatent: clean, network: Self.oracle(.epsilon, clean: clean))
    #expect(result.behaviour == .epsilon)
    #expect(result.confidence > 0.99)
    for level in result.levels {
      #expect(abs(level.noiseCoefficient - 1) < 1e-4 && abs(level.cleanCoefficient) < 1e-4)
      #expect(level.noiseCosine > 0.9999 && level.noiseTracking > 0.9999 && level.vote == .epsilon)
    }
  }

  @Test func idealVModelIsV() throws {
    let clean = Self.smoothLatent()
    let result = try PredictionProbe.run(cleanLatent: clean, network: Self.oracle(.v, clean: clean))
    #expect(result.behaviour == .v)
    #expect(result.confidence > 0.99)
    for level in result.levels {
      #expect(abs(level.noiseCoefficient - level.alpha) < 1e-3 && level.cleanCoefficient < -0.8)
      #expect(level.vAgreement > 0.9999 && level.vRecovery > 0.8 && level.vote == .v)
    }
  }

  @Test func vModelThatOnlyPartlyRecognisesTheLatentIsStillV() throws {
    // At high noise a real v model answers with a blurred, shrunk guess: half of x₀ plus an offset.
    let clean = Self.smoothLatent()
    let result = try PredictionProbe.run(
      cleanLatent: clean, network: Self.oracle(.v, clean: clean) { $0.map { 0.5 * $0 + 0.2 } })
    #expect(result.behaviour == .v)
    #expect(result.confidence > 0.5)
  }

  @Test func inputIndependentOrZeroOutputIsUndetermined() throws {
    let clean = Self.smoothLatent()
    // An input-independent output (a UNet whose last layer is zeroed but for its bias): its v
    // reading agrees with itself across draws but does not resemble x₀.
    var generator = TorchGenerator(seed: 99)
    let constant = generator.randn(count: clean.count)
    let fixed = Tensor(shape: [2, 4, 8, 8], values: constant + constant)
    let random = try PredictionProbe.run(cleanLatent: clean) { _, _ in fixed }
    #expect(random.levels.allSatisfy { $0.vRecovery < 0.2 }, "\(random.levels)")
    #expect(random.levels.filter { $0.timestep >= 800 }.allSatisfy { $0.vAgreement > 0.9 })
    #expect(random.behaviour == nil && random.confidence == 0)
    let zero = try PredictionProbe.run(cleanLatent: clean) { input, _ in Tensor(zeros: input.shape)
    }
    #expect(zero.behaviour == nil)
    // Echoing a scrambled input explains nothing either.
    let scrambled = try PredictionProbe.run(cleanLatent: clean) { input, _ in
      Tensor(shape: input.shape, values: input.scalars.reversed())
    }
    #expect(scrambled.behaviour == nil)
  }

  @Test func smoothLatentServesAsCleanLatent() throws {
    let latent = try PredictionProbe.smoothLatent(channels: 4, height: 8, width: 8)
    let values = latent.scalars
    let mean = values.reduce(0, +) / Float(values.count)
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(values.count)
    #expect(latent.shape == [1, 4, 8, 8] && abs(mean) < 1e-5 && abs(variance - 1) < 1e-4)
    let v = try PredictionProbe.run(cleanLatent: latent, network: Self.oracle(.v, clean: latent))
    #expect(v.behaviour == .v)
    #expect(throws: VerificationError.self) {
      try PredictionProbe.smoothLatent(channels: 0, height: 8, width: 8)
    }
  }

  @Test func badInputsThrow() throws {
    let clean = Self.smoothLatent()
    #expect(throws: VerificationError.self) {
      try PredictionProbe.run(cleanLatent: Tensor(zeros: [1, 4, 8, 8])) { input, _ in input }
    }
    #expect(throws: VerificationError.self) {
      try PredictionProbe.run(cleanLatent: clean) { _, _ in Tensor(zeros: [1, 4, 8, 8]) }
    }
    var configuration = PredictionProbe.Configuration.standard
    configuration.timesteps = [1000]
    #expect(throws: VerificationError.self) {
      try PredictionProbe.run(cleanLatent: clean, configuration: configuration) { input, _ in input
      }
    }
  }

  static func report(markers: Set<String>, metadata: [String: String] = [:]) -> PredictionReport {
    PredictionDetector.detect(
      keys: markers.union(["model.diffusion_model.out.2.weight"]), metadata: metadata)
  }

  @Test func verdictFailsOnMismatchesAndExplainsLoaders() throws {
    let clean = Self.smoothLatent()
    let v = try PredictionProbe.run(cleanLatent: clean, network: Self.oracle(.v, clean: clean))
    let epsilon = try PredictionProbe.run(
      cleanLatent: clean, network: Self.oracle(.epsilon, clean: clean))

    let lostMarker = PredictionVerdict(result: v, report: Self.report(markers: []))
    #expect(!lostMarker.passed && lostMarker.declared == .epsilon)
    #expect(lostMarker.explanation.contains("ComfyUI") && lostMarker.explanation.contains("A1111"))
    #expect(
      lostMarker.explanation.contains("v_pred") && lostMarker.explanation.contains("washed-out"))

    let metadataOnly = PredictionVerdict(
      result: v, report: Self.report(markers: [], metadata: ["modelspec.prediction_type": "v"]))
    #expect(!metadataOnly.passed && metadataOnly.explanation.contains("metadata says v"))

    let falseV = PredictionVerdict(
      result: epsilon, report: Self.report(markers: ["v_pred", "ztsnr"]))
    #expect(!falseV.passed && falseV.declared == .v && falseV.explanation.contains("burned"))

    #expect(PredictionVerdict(result: v, report: Self.report(markers: ["v_pred"])).passed)
    #expect(PredictionVerdict(result: epsilon, report: Self.report(markers: [])).passed)
    let unknown = try PredictionProbe.run(cleanLatent: clean) { input, _ in
      Tensor(zeros: input.shape)
    }
    let verdict = PredictionVerdict(result: unknown, report: Self.report(markers: ["v_pred"]))
    #expect(verdict.passed && verdict.inconclusive)
  }

  @Test func randomWeightUNetIsUndetermined() throws {
    // Fixtures/tiny-sdxl: random weights, same file with and without markers.
    let weights = try ModelWeights(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"))
    let unet = try UNet(weights: weights.scoped("model.diffusion_model."), headDimension: 16)
    let context = Tensor(zeros: [1, 77, try #require(unet.contextDimension)])
    let y = Tensor(zeros: [1, try #require(unet.admChannels)])
    let result = try PredictionProbe.run(
      unet: unet, context: context, y: y, cleanLatent: Self.smoothLatent())
    #expect(result.behaviour == nil, "\(result.levels)")
    #expect(
      result.levels.allSatisfy { $0.noiseCosine < 0.3 && $0.vAgreement < 0.3 }, "\(result.levels)")
  }
}
