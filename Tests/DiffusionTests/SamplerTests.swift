import Checkpoint
import Foundation
import Testing

@testable import Diffusion

@Suite struct SamplerTests {
  static let golden = (try? Goldens.json("samplers.json")) ?? [:]

  /// The exact denoiser for Gaussian data N(μ, s²): D = (x·s² + μ·σ²)/(s² + σ²).
  static func gaussian(mu: [Float], s2: Float) -> Denoiser {
    { x, sigma in
      (0..<x.count).map { i in (x[i] * s2 + mu[i] * sigma * sigma) / (s2 + sigma * sigma) }
    }
  }

  /// The script's toy network: tanh(x_in·0.7 + bias)·(0.5 + t/2000) + 0.1·x_in.
  static func network(bias: [Float]) -> NetworkFunction {
    { input, t in
      (0..<input.count).map { i in
        Foundation.tanh(input[i] * 0.7 + bias[i]) * (0.5 + t / 2000) + 0.1 * input[i]
      }
    }
  }

  static func denoiser(for item: [String: Any]) throws -> Denoiser {
    let name = item.string("denoiser")
    if name == "gaussian" {
      let settings = golden.object("gaussian")
      return gaussian(mu: settings.floats("mu"), s2: Float(settings.double("s2")))
    }
    let prediction = try #require(PredictionDetector.parse(item.string("prediction")))
    let schedule = DiscreteNoiseSchedule.sdxl(
      zeroTerminalSNR: prediction == .v ? .comfyUI : nil)
    let wrapper = NetworkDenoiser(prediction: prediction, schedule: schedule)
    let conditional = network(bias: golden.floats("biasConditional"))
    let unconditional = network(bias: golden.floats("biasUnconditional"))
    let guidance = ClassifierFreeGuidance(
      scale: Float(item.double("cfg")), rescale: Float(item.double("rescale")))
    return guidance.guided(
      conditional: { x, sigma in try wrapper.denoise(x, sigma: sigma, network: conditional) },
      unconditional: { x, sigma in try wrapper.denoise(x, sigma: sigma, network: unconditional) })
  }

  @Test func goldenRuns() throws {
    let cases = Self.golden.array("cases")
    #expect(cases.count >= 9)
    for case let item as [String: Any] in cases {
      let label = "\(item.string("denoiser")) \(item.string("sampler"))"
      let sigmas = item.floats("sigmas")
      let x0 = item.floats("x0")
      let expectedInputs = item.array("inputs").compactMap {
        ($0 as? [Any])?.compactMap { goldenDouble($0).map(Float.init) }
      }
      #expect(x0.count == 64 && expectedInputs.count == sigmas.count - 1, "\(label)")
      let inner = try Self.denoiser(for: item)
      var inputs = [[Float]]()
      let recording: Denoiser = { x, sigma in
        inputs.append(x)
        return try inner(x, sigma)
      }
      let sampler: any Sampler
      switch item.string("sampler") {
      case "euler": sampler = EulerSampler()
      case "euler_ancestral": sampler = EulerAncestralSampler(eta: Float(item.double("eta")))
      default: sampler = DPMPP2MSampler()
      }
      let seed = try #require(item.int("noiseSeed"))
      let noise = TorchNoiseSource(seed: UInt64(seed))
      let output = try sampler.sample(
        x0, sigmas: sigmas, denoiser: recording, noise: noise, onStep: nil)
      #expect(inputs.count == expectedInputs.count, "\(label)")
      for (step, (actual, expected)) in zip(inputs, expectedInputs).enumerated() {
        let error = worstRelativeError(actual, expected)
        #expect(error < 1e-5, "\(label) step \(step): \(error)")
      }
      let error = worstRelativeError(output, item.floats("output"))
      #expect(error < 1e-5, "\(label) output: \(error)")
    }
  }

  @Test func ancestralStepMatchesReference() {
    // sdxl-inference.md §10: 14.6146 → 10.0 gives σ_down = 6.8425, σ_up = 7.2925.
    let (down, up) = EulerAncestralSampler().ancestralStep(from: 14.6146, to: 10)
    #expect(abs(down - 6.8425) < 1e-3 && abs(up - 7.2925) < 1e-3)
    let (down0, up0) = EulerAncestralSampler(eta: 0).ancestralStep(from: 14.6146, to: 10)
    #expect(down0 == 10 && up0 == 0)
  }

  @Test func lastStepLandsOnDenoised() throws {
    let mu: [Float] = (0..<16).map { Float($0) / 8 - 1 }
    let denoiser = Self.gaussian(mu: mu, s2: 0)
    let x: [Float] = (0..<16).map { Float($0) }
    for kind in SamplerKind.allCases {
      let noise = TorchNoiseSource(seed: 3)
      let out = try kind.sampler.sample(
        x, sigmas: [2, 0], denoiser: denoiser, noise: noise, onStep: nil)
      #expect(worstRelativeError(out, mu) < 1e-6, "\(kind)")
    }
  }

  @Test func invalidInputsThrow() {
    let identity: Denoiser = { x, _ in x }
    #expect(throws: DiffusionError.self) {
      try EulerSampler().sample([1], sigmas: [1], denoiser: identity)
    }
    #expect(throws: DiffusionError.self) {
      try EulerSampler().sample([1], sigmas: [1, 0, 0], denoiser: identity)
    }
    #expect(throws: DiffusionError.self) {
      try EulerSampler().sample([], sigmas: [1, 0], denoiser: identity)
    }
    #expect(throws: DiffusionError.self) {
      try EulerSampler().sample([1, 2], sigmas: [1, 0], denoiser: { _, _ in [1] })
    }
    #expect(throws: DiffusionError.self) {
      try EulerAncestralSampler().sample([1], sigmas: [2, 1, 0], denoiser: identity)
    }
  }
}

@Suite struct DenoiserTests {
  @Test func epsilonAndVFormulas() {
    let schedule = DiscreteNoiseSchedule.sdxl()
    let x: [Float] = [1, -2, 3]
    let output: [Float] = [0.5, 0.25, -1]
    let sigma: Float = 2
    let eps = NetworkDenoiser(prediction: .epsilon, schedule: schedule)
    #expect(eps.denoised(output: output, x: x, sigma: sigma) == [0, -2.5, 5])
    let v = NetworkDenoiser(prediction: .v, schedule: schedule)
    let d = v.denoised(output: output, x: x, sigma: sigma)
    let root5 = Float(5).squareRoot()
    let expected = zip(x, output).map { $0 / 5 - $1 * 2 / root5 }
    #expect(worstRelativeError(d, expected) < 1e-6)
    #expect(eps.scaledInput([5], sigma: 2) == [5 / root5])
    #expect(eps.timestep(sigma: schedule.sigmaMax) == 999)
    #expect(
      eps.initialNoiseScale(firstSigma: schedule.sigmaMax)
        == (1 + schedule.sigmaMax * schedule.sigmaMax).squareRoot())
    #expect(eps.initialNoiseScale(firstSigma: 3) == 3)
  }

  @Test func guidance() {
    let c: [Float] = [1, 2, 3, 4]
    let u: [Float] = [0, 1, 1, 1]
    let x: [Float] = [2, 2, 2, 2]
    let plain = ClassifierFreeGuidance(scale: 3)
    #expect(plain.combine(conditional: c, unconditional: u, x: x, sigma: 1) == [3, 4, 7, 10])
    #expect(!ClassifierFreeGuidance(scale: 1).needsUnconditional)
    // φ = 1 in ε space: the result's ε has the conditional's standard deviation.
    let rescaled = ClassifierFreeGuidance(scale: 3, rescale: 1, rescaleSpace: .epsilon)
    let d = rescaled.combine(conditional: c, unconditional: u, x: x, sigma: 1)
    let eps = zip(x, d).map { $0 - $1 }
    let conditionalEps = zip(x, c).map { $0 - $1 }
    let ratio =
      ClassifierFreeGuidance.standardDeviation(eps)
      / ClassifierFreeGuidance.standardDeviation(conditionalEps)
    #expect(abs(ratio - 1) < 1e-6)
  }
}
