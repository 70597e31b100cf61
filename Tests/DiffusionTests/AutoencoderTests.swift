import Foundation
import SafeTensors
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// The VAE against diffusers' `AutoencoderKL` on the tiny fixture (Fixtures/golden/vae.safetensors
/// and the decoded image of golden/euler.safetensors, made by Scripts/fixtures/make_goldens.py).
@Suite struct AutoencoderTests {
  static let checkpointPath = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")

  static func golden(_ name: String = "vae") throws -> ModelWeights {
    try ModelWeights(path: TestPaths.fixture("golden/\(name).safetensors"))
  }

  static func model(loadEncoder: Bool = true) throws -> AutoencoderKL {
    try AutoencoderKL(checkpoint: try ModelWeights(path: checkpointPath), loadEncoder: loadEncoder)
  }

  /// Same shape and close values (`TestSupport.expectClose`).
  func expectClose(_ actual: Tensor, _ expected: Tensor, _ label: String, nmse: Double = 1e-8) {
    #expect(actual.shape == expected.shape, "\(label): shape \(actual.shape) vs \(expected.shape)")
    guard actual.shape == expected.shape else { return }
    TestSupport.expectClose(actual.scalars, expected.scalars, label, nmse: nmse)
  }

  @Test func configurationIsReadFromTheWeights() throws {
    let vae = try Self.model()
    let configuration = vae.configuration
    #expect(configuration.baseChannels == 32)
    #expect(configuration.channelMultipliers == [1, 1, 2, 2])
    #expect(configuration.levelChannels == [32, 32, 64, 64])
    #expect(configuration.resBlockCount == 2)
    #expect(configuration.latentChannels == 4)
    #expect(configuration.imageChannels == 3)
    #expect(configuration.downsampleFactor == 8)
    #expect(vae.hasEncoder)
    #expect(try !Self.model(loadEncoder: false).hasEncoder)
  }

  @Test(arguments: ["decode", "decode_wide"])
  func decodeMatchesDiffusers(_ name: String) throws {
    let golden = try Self.golden()
    let vae = try Self.model(loadEncoder: false)
    let image = try vae.decode(try golden.tensor("eps.\(name).latent"))
    expectClose(image, try golden.tensor("eps.\(name).image"), name)
  }

  /// Up- and down-sampling in bands of one output row give the same result as whole planes.
  @Test func oneRowBandsAgree() throws {
    let golden = try Self.golden()
    let vae = try Self.model()
    vae.bandBudget = 1
    expectClose(
      try vae.decode(try golden.tensor("eps.decode_wide.latent")),
      try golden.tensor("eps.decode_wide.image"),
      "decode in one-row bands")
    let encoding = try vae.encode(try golden.tensor("eps.encode.image"))
    expectClose(encoding.mean, try golden.tensor("eps.encode.mean"), "encode in one-row bands")
  }

  /// ResnetBlocks in bands, including the level whose first block halves the width in place, give
  /// the whole-plane decode and encode of a batch of two: bit for bit with the default bands (whole
  /// Winograd tile rows), and within fp32 rounding (NMSE ≤ 1e-10) with one-row bands, whose
  /// Winograd tiles start at every row and whose narrow gemms OpenBLAS sums in another order.
  @Test func bandedResnetsEqualWholePlanes() throws {
    let golden = try Self.golden()
    let first = try golden.tensor("eps.decode_wide.latent")
    let latents = Tensor(zeros: Shape([2] + Array(first.shape.dimensions.dropFirst())))
    latents.batch(0).copy(from: first.batch(0))
    latents.batch(1).copy(from: Tensor(shape: first.batch(0).shape, values: first.scalars.map { 0.7 * $0 - 0.1 }))
    let whole = try Self.model()
    whole.wholePlanes = true
    let expected = try whole.decode(latents)
    let expectedMean = try whole.encode(expected).mean
    let banded = try Self.model()
    let image = try banded.decode(latents)
    #expect(image.scalars.map(\.bitPattern) == expected.scalars.map(\.bitPattern), "decode")
    #expect(try banded.encode(expected).mean.scalars.map(\.bitPattern) == expectedMean.scalars.map(\.bitPattern))
    banded.bandBudget = 1
    expectClose(try banded.decode(latents), expected, "decode in one-row bands", nmse: 1e-10)
    expectClose(try banded.encode(expected).mean, expectedMean, "encode in one-row bands", nmse: 1e-10)
  }

  @Test func encodeMatchesDiffusers() throws {
    let golden = try Self.golden()
    let vae = try Self.model()
    let encoding = try vae.encode(try golden.tensor("eps.encode.image"))
    expectClose(encoding.mean, try golden.tensor("eps.encode.mean"), "mean")
    expectClose(encoding.logVariance, try golden.tensor("eps.encode.logvar"), "logvar")
    expectClose(encoding.latent, try golden.tensor("eps.encode.latent"), "latent")
  }

  /// A batch of two (the same latent twice, and a different one) decodes like its members alone,
  /// and a second decode of the same size reuses every activation block.
  @Test func batchesAndRepeatedDecodes() throws {
    let golden = try Self.golden()
    let vae = try Self.model(loadEncoder: false)
    let first = try golden.tensor("eps.decode.latent")
    let second = Tensor(shape: first.shape, values: first.scalars.map { -0.5 * $0 })
    let batch = Tensor(zeros: [2, 4, 8, 8])
    batch.batch(0).copy(from: first.batch(0))
    batch.batch(1).copy(from: second.batch(0))
    let images = try vae.decode(batch)
    let allocations = vae.activationAllocations
    let alone = try vae.decode(second)
    #expect(vae.activationAllocations == allocations, "a repeated decode allocated activations")
    expectClose(images.slice(0..<1), try golden.tensor("eps.decode.image"), "batch member 0")
    expectClose(images.slice(1..<2), alone, "batch member 1", nmse: 1e-12)
  }

  /// Activation memory stays a few full-resolution planes: decoding a 32×32 latent to 256×256 holds
  /// at most two 32-channel 256×256 planes in the pool (on whole planes: four). SDXL's last levels
  /// differ in width (see `VAEBands.swift`): three 128-channel 1024² planes, 1.5 GB.
  @Test func activationMemoryIsBounded() throws {
    let vae = try Self.model(loadEncoder: false)
    let latent = Tensor(zeros: [1, 4, 32, 32])
    for index in 0..<latent.count {
      latent.pointer[index] = Float((index * 7919) % 211) / 105.5 - 1
    }
    let image = try vae.decode(latent)
    #expect(image.shape == [1, 3, 256, 256])
    let finite = image.scalars.allSatisfy { $0.isFinite }
    #expect(finite)
    let plane = 32 * 256 * 256
    #expect(
      vae.pool.peakHeldCount > plane && vae.pool.peakHeldCount <= 2 * plane,
      "pool peak \(vae.pool.peakHeldCount) floats = \(Double(vae.pool.peakHeldCount) / Double(plane)) planes"
    )
    vae.releaseWorkingMemory()
    #expect(vae.pool.heldCount == 0)
  }

  /// The 8-step Euler run's final latent decodes to diffusers' image, and its bytes (truncated like
  /// ComfyUI/A1111) match the golden uint8 image.
  @Test func eulerImageMatchesTheGoldenBytes() throws {
    let golden = try Self.golden("euler")
    let vae = try Self.model(loadEncoder: false)
    let decoded = try vae.decode(try golden.tensor("eps.final"))
    let unit = RGBImage.unitRange(decoded: decoded)
    expectClose(unit, try golden.tensor("eps.image"), "image in [0, 1]")
    let expected = try Self.goldenBytes(golden, "eps.image_u8")
    // Quantising diffusers' own [0, 1] image reproduces its bytes exactly …
    let fromGolden = RGBImage.images(unitRange: try golden.tensor("eps.image"))[0]
    #expect(fromGolden.pixels == expected)
    // … and ours differs by at most one step, on a tiny fraction of values (truncation boundaries).
    let ours = RGBImage.images(decoded: decoded)[0]
    #expect(ours.width == 64 && ours.height == 64)
    let differences = zip(ours.pixels, expected).map { abs(Int($0) - Int($1)) }
    #expect(differences.max() ?? 0 <= 1)
    #expect(differences.filter { $0 != 0 }.count * 100 <= expected.count)
  }

  static func goldenBytes(_ weights: ModelWeights, _ key: String) throws -> [UInt8] {
    let file = try SafeTensorsFile(path: weights.file.path)
    let info = try #require(file.info(key))
    #expect(info.dtype == .u8)
    return try withExtendedLifetime(file) { Array(try file.data(named: key)) }
  }

  @Test func quantizationConventions() {
    let values: [Float] = [-1, -0.5, 0, 0.999, 1, 2, .nan, 0.0039215689]
    let tensor = Tensor(zeros: [1, 3, 1, values.count])
    for (index, value) in values.enumerated() {
      for channel in 0..<3 { tensor[0, channel, 0, index] = value }
    }
    let truncated = RGBImage.images(decoded: tensor)[0].pixels
    let rounded = RGBImage.images(decoded: tensor, quantization: .round)[0].pixels
    // (x+1)/2·255: 0, 63.75, 127.5, 254.87, 255, clamp, NaN, 128.0
    #expect(
      stride(from: 0, to: truncated.count, by: 3).map { truncated[$0] } == [
        0, 63, 127, 254, 255, 255, 0, 128,
      ])
    #expect(
      stride(from: 0, to: rounded.count, by: 3).map { rounded[$0] } == [
        0, 64, 128, 255, 255, 255, 0, 128,
      ])
    let image = RGBImage(width: 2, height: 1, pixels: [0, 255, 51, 102, 153, 204])
    let input = image.encoderInput()
    #expect(input.shape == [1, 3, 1, 2])
    #expect(input[0, 0, 0, 0] == -1 && input[0, 1, 0, 0] == 1 && input[0, 2, 0, 1] == 0.6)
  }

  @Test func badInputsAreTypedErrors() throws {
    let vae = try Self.model(loadEncoder: false)
    #expect(throws: ModelError.self) { try vae.decode(Tensor(zeros: [1, 3, 8, 8])) }
    #expect(throws: ModelError.self) { try vae.encode(Tensor(zeros: [1, 3, 64, 64])) }
    let full = try Self.model()
    #expect(throws: ModelError.self) { try full.encode(Tensor(zeros: [1, 3, 60, 64])) }
    #expect(throws: ModelError.self) {
      try AutoencoderKL(checkpoint: try ModelWeights(path: Self.checkpointPath), scaleFactor: 0)
    }
  }

  // MARK: damaged weights

  /// Writes the fixture's VAE tensors (at the root, no prefix) to a temporary file, without `drop`
  /// and with `reshape`'s tensor given another shape of the same size.
  static func damagedVAE(drop: String? = nil, reshape: (String, [Int])? = nil) throws -> String {
    let source = try SafeTensorsFile(path: checkpointPath)
    let prefix = AutoencoderKL.checkpointPrefix
    var entries: [TensorEntry] = []
    for info in source.tensors where info.name.hasPrefix(prefix) {
      let name = String(info.name.dropFirst(prefix.count))
      if name == drop { continue }
      let shape = reshape?.0 == name ? reshape?.1 ?? info.shape : info.shape
      entries.append(
        TensorEntry(spec: TensorSpec(name: name, dtype: info.dtype, shape: shape)) { sink in
          try sink.write(source.data(info))
        })
    }
    let path = TestPaths.temporaryDirectory("vae") + "/vae.safetensors"
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: nil)
    return path
  }

  @Test func aStandaloneVAEFileLoadsAtTheRoot() throws {
    let path = try Self.damagedVAE()
    let vae = try AutoencoderKL(checkpoint: try ModelWeights(path: path))
    let golden = try Self.golden()
    expectClose(
      try vae.decode(try golden.tensor("eps.decode.latent")), try golden.tensor("eps.decode.image"),
      "root")
  }

  @Test(arguments: [
    "decoder.mid.attn_1.proj_out.weight", "decoder.up.2.upsample.conv.bias",
    "decoder.up.1.block.0.nin_shortcut.weight", "post_quant_conv.weight",
    "encoder.down.0.downsample.conv.weight",
    "quant_conv.bias", "decoder.norm_out.weight",
  ])
  func missingWeightIsNamed(_ key: String) throws {
    let path = try Self.damagedVAE(drop: key)
    do {
      _ = try AutoencoderKL(weights: try ModelWeights(path: path))
      Issue.record("loading without \(key) succeeded")
    } catch let error as ModelError {
      guard case .missingWeight(let file, let missing) = error else {
        Issue.record("expected missingWeight, got \(error)")
        return
      }
      #expect(file == path && missing == key)
      #expect(error.description.contains(key))
    }
  }

  @Test func misshapedWeightIsNamed() throws {
    // Same element count, wrong layout: [64, 64, 3, 3] stored as [64, 576, 1, 1].
    let key = "decoder.mid.block_1.conv1.weight"
    let path = try Self.damagedVAE(reshape: (key, [64, 576, 1, 1]))
    do {
      _ = try AutoencoderKL(weights: try ModelWeights(path: path), loadEncoder: false)
      Issue.record("a misshaped \(key) was accepted")
    } catch let error as ModelError {
      guard case .badShape(_, let named, let shape, let expected) = error else {
        Issue.record("expected badShape, got \(error)")
        return
      }
      #expect(named == key && shape == [64, 576, 1, 1] && expected == "[64, 64, 3, 3]")
    }
    // The attention projections accept the linear form [C, C] that some converters write.
    let linear = try Self.damagedVAE(reshape: ("decoder.mid.attn_1.q.weight", [64, 64]))
    let vae = try AutoencoderKL(weights: try ModelWeights(path: linear), loadEncoder: false)
    let golden = try Self.golden()
    expectClose(
      try vae.decode(try golden.tensor("eps.decode.latent")), try golden.tensor("eps.decode.image"),
      "linear q")
  }

  /// Shapes the engine cannot run are refused with the key that shows it, not a crash later.
  @Test func unsupportedShapesAreRefused() throws {
    // conv_out [3, 32, 3, 3] stored as [4, 24, 3, 3]: a four-channel image.
    let path = try Self.damagedVAE(reshape: ("decoder.conv_out.weight", [4, 24, 3, 3]))
    #expect {
      try AutoencoderKL(weights: try ModelWeights(path: path))
    } throws: { error in
      guard let error = error as? ModelError, case .unsupportedModel = error else { return false }
      return error.description.contains("decoder.conv_out.weight")
    }
  }

  @Test func missingDecoderIsNamed() throws {
    let path = try Self.damagedVAE(drop: "decoder.conv_in.weight")
    #expect {
      try AutoencoderKL(weights: try ModelWeights(path: path))
    } throws: { error in
      guard let error = error as? ModelError, case .missingWeight(_, let key) = error else {
        return false
      }
      return key == "decoder.conv_in.weight"
    }
  }
}
