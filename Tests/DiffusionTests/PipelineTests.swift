import Checkpoint
import Foundation
import SafeTensors
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// txt2img end to end (tokenizer, both encoders, UNet, sampler, VAE) against the diffusers run in
/// Fixtures/golden/euler.safetensors: same prompt, seed, steps and sampler.
@Suite struct PipelineTests {
  static let golden = try! ModelWeights(path: TestPaths.fixture("golden/euler.safetensors"))

  static func pipeline(_ variant: String) throws -> SDXLPipeline {
    let weights = try ModelWeights(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-\(variant).safetensors"))
    let behaviour =
      variant == "vpred"
      ? ModelBehaviour(prediction: .v, zeroTerminalSNR: true)
      : ModelBehaviour(prediction: .epsilon, zeroTerminalSNR: false)
    return try SDXLPipeline(weights: weights, behaviour: behaviour, headDimension: 16)
  }

  @Test(arguments: ["eps", "vpred"])
  func textToImageMatchesDiffusers(variant: String) throws {
    let pipeline = try Self.pipeline(variant)
    var settings = GenerationSettings(prompt: "red circle, white background")
    settings.steps = 8
    settings.cfg = 5
    settings.sampler = .euler
    settings.seed = 42
    settings.width = 64
    settings.height = 64
    var reported: [Int] = []
    let result = try pipeline.generate(settings) { step, _ in reported.append(step) }
    #expect(reported == Array(1...8))
    #expect(result.timesteps == (try Self.golden.tensor("\(variant).timesteps").scalars))
    let latent = Closeness(result.latent.scalars, try Self.golden.tensor("\(variant).final").scalars)
    #expect(latent.nmse <= 1e-8, "final latent \(latent)")
    let image = Closeness(result.image.scalars, try Self.golden.tensor("\(variant).image").scalars)
    #expect(image.nmse <= 1e-8, "image \(image)")
    // The bar for images: within 1/255 on ≥ 99 % of the 8-bit values.
    let ours = RGBImage.images(unitRange: result.image)[0].pixels
    let goldenFile = try SafeTensorsFile(path: Self.golden.file.path)
    let theirs = try withExtendedLifetime(goldenFile) { Array(try goldenFile.data(named: "\(variant).image_u8")) }
    #expect(ours.count == theirs.count)
    let close = zip(ours, theirs).filter { abs(Int($0) - Int($1)) <= 1 }.count
    #expect(Double(close) >= 0.99 * Double(theirs.count), "\(close) of \(theirs.count) values within 1/255")
  }

  @Test func seedsAncestralNoiseAndSizeChecks() throws {
    let pipeline = try Self.pipeline("eps")
    var settings = GenerationSettings(prompt: "red circle")
    settings.steps = 3
    settings.width = 64
    settings.height = 64
    settings.sampler = .eulerAncestral
    settings.seed = 7
    let first = try pipeline.generate(settings)
    let again = try pipeline.generate(settings)
    #expect(first.latent.scalars == again.latent.scalars, "same seed, same image")
    settings.seed = 8
    let other = try pipeline.generate(settings)
    #expect(first.latent.scalars != other.latent.scalars)
    // Initial noise from the caller replaces the seed's.
    settings.initialNoise = first.initialNoise
    let given = try pipeline.generate(settings)
    #expect(given.initialNoise == first.initialNoise)
    settings.width = 48  // not a multiple of 32
    #expect(throws: ModelError.self) { _ = try pipeline.generate(settings) }
    settings.width = 64
    settings.initialNoise = [0, 1]
    #expect(throws: ModelError.self) { _ = try pipeline.generate(settings) }
  }
}

/// The trained tiny models (Fixtures/trained) through our pipeline against the renders diffusers'
/// UNet and VAE made with the same noise (Fixtures/trained/renders.safetensors): 20 Euler steps,
/// CFG 5, the empty negative encoded.
@Suite struct TrainedRenderTests {
  static let renders = try! ModelWeights(path: TestPaths.fixture("trained/renders.safetensors"))

  @Test(arguments: [
    ("eps", 0, "red circle, white background"), ("eps", 1, "blue square, black background"),
    ("vpred", 0, "red circle, white background"), ("vpred", 1, "blue square, black background"),
  ])
  func rendersMatchDiffusers(variant: String, index: Int, prompt: String) throws {
    let weights = try ModelWeights(path: TestPaths.fixture("trained/tiny-shapes-\(variant).safetensors"))
    let behaviour =
      variant == "vpred"
      ? ModelBehaviour(prediction: .v, zeroTerminalSNR: true)
      : ModelBehaviour(prediction: .epsilon, zeroTerminalSNR: false)
    let pipeline = try SDXLPipeline(weights: weights, behaviour: behaviour, headDimension: 16)
    var settings = GenerationSettings(prompt: prompt)
    settings.steps = 20
    settings.cfg = 5
    settings.sampler = .euler
    settings.width = 64
    settings.height = 64
    settings.initialNoise = try Self.renders.tensor("\(variant).\(index).noise").scalars
    let result = try pipeline.generate(settings)
    #expect(Closeness(result.sigmas, try Self.renders.tensor("\(variant).\(index).sigmas").scalars).nmse <= 1e-12)
    let latent = Closeness(result.latent.scalars, try Self.renders.tensor("\(variant).\(index).final").scalars)
    #expect(latent.nmse <= 1e-6, "final latent \(latent)")
    let ours = RGBImage.images(unitRange: result.image)[0].pixels
    let theirs = RGBImage.images(unitRange: try Self.renders.tensor("\(variant).\(index).image"))[0].pixels
    let close = zip(ours, theirs).filter { abs(Int($0) - Int($1)) <= 1 }.count
    #expect(Double(close) >= 0.99 * Double(theirs.count), "\(close) of \(theirs.count) 8-bit values within 1/255")
  }
}
