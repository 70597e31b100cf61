import Foundation
import Tensors

/// The hyper-parameters of an LDM `AutoencoderKL`, read from the shapes of its weights (sgm
/// `Encoder`/`Decoder` with `ch`, `ch_mult`, `num_res_blocks`, `z_channels`).
public struct AutoencoderConfiguration: Sendable, Equatable, CustomStringConvertible {
  /// `ch`: the channels after the encoder's `conv_in` (128 in SDXL).
  public let baseChannels: Int
  /// `ch · ch_mult[i]` for every level, highest resolution first ([128, 256, 512, 512] in SDXL).
  public let levelChannels: [Int]
  /// `num_res_blocks` (2): the encoder has this many ResnetBlocks per level, the decoder one more.
  public let resBlockCount: Int
  /// `z_channels` (4).
  public let latentChannels: Int
  /// Image channels (3).
  public let imageChannels: Int

  /// `ch_mult` ([1, 2, 4, 4] in SDXL).
  public var channelMultipliers: [Int] { levelChannels.map { $0 / baseChannels } }
  /// Image pixels per latent pixel along each side (8 in SDXL).
  public var downsampleFactor: Int { 1 << (levelChannels.count - 1) }

  /// `ch 128, ch_mult [1, 2, 4, 4], num_res_blocks 2, z_channels 4`.
  public var description: String {
    "ch \(baseChannels), ch_mult \(channelMultipliers), num_res_blocks \(resBlockCount), "
      + "z_channels \(latentChannels)"
  }

  /// Reads the configuration from weights scoped to the VAE root (`encoder.*`, `decoder.*`,
  /// `quant_conv.*`, `post_quant_conv.*`).
  /// - Throws: `ModelError` naming the key that is missing or has an unusable shape.
  public init(weights: ModelWeights) throws {
    let file = weights.file.path
    func bad(_ key: String, _ shape: [Int], _ expected: String) -> ModelError {
      .badShape(file: file, key: weights.prefix + key, shape: shape, expected: expected)
    }
    let inputKey = "decoder.conv_in.weight"
    let input = try weights.requireShape(inputKey)
    guard input.count == 4, input[1] > 0 else { throw bad(inputKey, input, "[C, z, 3, 3]") }
    latentChannels = input[1]
    var levels: [Int] = []
    while let shape = weights.shape("decoder.up.\(levels.count).block.0.conv1.weight") {
      guard shape.count == 4, shape[0] > 0 else {
        throw bad("decoder.up.\(levels.count).block.0.conv1.weight", shape, "[C, C_in, 3, 3]")
      }
      levels.append(shape[0])
    }
    guard !levels.isEmpty else {
      throw ModelError.missingWeight(
        file: file, key: weights.prefix + "decoder.up.0.block.0.conv1.weight")
    }
    // SDXL has 4 levels; more than 8 (a ×128 latent) is no VAE this engine knows.
    guard levels.count <= 8 else {
      throw ModelError.unsupportedModel(
        file: file,
        reason: "\(weights.prefix)decoder.up.*: \(levels.count) levels (at most 8 supported)")
    }
    levelChannels = levels
    var decoderBlocks = 0
    while weights.contains("decoder.up.0.block.\(decoderBlocks).conv1.weight") {
      decoderBlocks += 1
    }
    resBlockCount = decoderBlocks - 1
    let outputKey = "decoder.conv_out.weight"
    let output = try weights.requireShape(outputKey)
    guard output.count == 4, output[0] > 0 else { throw bad(outputKey, output, "[3, C, 3, 3]") }
    guard output[0] == 3 else {
      throw ModelError.unsupportedModel(
        file: file,
        reason: "\(weights.prefix)\(outputKey): \(output[0]) image channels (RGB VAEs have 3)")
    }
    imageChannels = output[0]
    if let encoderInput = weights.shape("encoder.conv_in.weight") {
      guard encoderInput.count == 4, encoderInput[0] > 0 else {
        throw bad("encoder.conv_in.weight", encoderInput, "[ch, 3, 3, 3]")
      }
      baseChannels = encoderInput[0]
    } else {
      baseChannels = levels[0]
    }
    // Every GroupNorm has 32 groups (sgm `Normalize`), so each width must split into them.
    for (index, channels) in ([baseChannels] + levels).enumerated() where channels % 32 != 0 {
      let key =
        index == 0 ? "encoder.conv_in.weight" : "decoder.up.\(index - 1).block.0.conv1.weight"
      throw ModelError.unsupportedModel(
        file: file,
        reason:
          "\(weights.prefix)\(key): \(channels) channels cannot be split into 32 GroupNorm groups")
    }
  }
}

/// SDXL's VAE, an LDM `AutoencoderKL` (sgm `sgm/modules/diffusionmodules/model.py` `Encoder`,
/// `Decoder`, `ResnetBlock`, `AttnBlock`, `Upsample`, `Downsample`), built from its weights under
/// the single-file names (`first_stage_model.` in a checkpoint), with its shape read from them.
///
/// `decode` turns a sampler latent into an image in [-1, 1]: latent / scale → `post_quant_conv`
/// → decoder. `encode` is the reverse: encoder → `quant_conv` → the distribution's mean and
/// log-variance, and the mean · scale as a sampler latent. Both match diffusers' `AutoencoderKL`
/// in Float32.
///
/// Memory: large activations come from a pool of reusable blocks (a block's input is released as
/// soon as its output is complete); the up- and down-sampling convolutions run in bands of rows, and
/// so do the ResnetBlocks (`VAEBands.swift`: the normalised input of each convolution exists only a
/// band at a time, and a block that halves the width works inside its input's block), bit-identical
/// to whole planes. An SDXL decode to 1024×1024 holds about two and a half 128-channel
/// full-resolution planes (1.25 GB) at its peak, not one per layer; the mid-block attention over
/// 16 384 tokens keeps its score blocks bounded (`ComputeContext.attentionTile`). A second decode of the same size allocates
/// nothing. Not thread-safe: one decode or encode at a time per instance.
public final class AutoencoderKL {
  /// The prefix of the VAE in a single-file SDXL checkpoint.
  public static let checkpointPrefix = "first_stage_model."
  /// SDXL's latent scale factor (`scale_factor` in sgm, `scaling_factor` in diffusers).
  public static let sdxlScaleFactor: Float = 0.13025

  /// The shape of the network.
  public let configuration: AutoencoderConfiguration
  /// Latents are divided by this before decoding and encoded means multiplied by it.
  public let scaleFactor: Float
  /// Whether the encoder was loaded (`encode` needs it).
  public var hasEncoder: Bool { encoder != nil }

  let compute: ComputeContext
  /// Where the layers' stored weights live (checked after each pass: they are read from the map).
  let weights: ModelWeights
  let decoder: Decoder
  let encoder: Encoder?
  let pool = ActivationPool()
  private(set) var arena = TensorArena(minimumBlockCapacity: 1 << 20)
  /// Floats of input rows per band of the up- and down-sampling convolutions (16 MB); small
  /// values force many bands (tests).
  var bandBudget = 4 << 20
  /// Runs every ResnetBlock on whole planes: the path the banded one reproduces bit for bit, kept
  /// for tests and `Scripts/bench vae`; it holds more memory.
  public var wholePlanes = false

  /// Builds the VAE from `weights` scoped to its root (keys `decoder.conv_in.weight`, …).
  /// - Parameters:
  ///   - scaleFactor: the latent scale (0.13025 for SDXL).
  ///   - loadEncoder: whether to widen the encoder's weights too (only `encode` needs them; a file
  ///     without an encoder loads with this set either way).
  ///   - compute: where the kernels run.
  /// - Throws: `ModelError` naming the weight that is missing or misshaped.
  public init(
    weights: ModelWeights, scaleFactor: Float = AutoencoderKL.sdxlScaleFactor,
    loadEncoder: Bool = true, compute: ComputeContext = ComputeContext()
  ) throws {
    guard scaleFactor.isFinite, scaleFactor > 0 else {
      throw ModelError.invalidInput(
        reason: "VAE scale factor \(scaleFactor) must be finite and positive")
    }
    let configuration = try AutoencoderConfiguration(weights: weights)
    self.configuration = configuration
    self.scaleFactor = scaleFactor
    self.compute = compute
    let weights = weights.withOwnScratch()
    self.weights = weights
    let loader = VAELoader(weights: weights)
    decoder = try Decoder(loader, configuration)
    if loadEncoder && weights.contains("encoder.conv_in.weight") {
      encoder = try Encoder(loader, configuration)
    } else {
      encoder = nil
    }
  }

  /// Builds the VAE of a whole checkpoint: under `first_stage_model.` when the file has it there,
  /// else at the root (a standalone LDM-named VAE file).
  public convenience init(
    checkpoint: ModelWeights, scaleFactor: Float = AutoencoderKL.sdxlScaleFactor,
    loadEncoder: Bool = true, compute: ComputeContext = ComputeContext()
  ) throws {
    let scoped = checkpoint.scoped(AutoencoderKL.checkpointPrefix)
    let weights = scoped.contains("decoder.conv_in.weight") ? scoped : checkpoint
    try self.init(
      weights: weights, scaleFactor: scaleFactor, loadEncoder: loadEncoder, compute: compute)
  }

  /// Decodes sampler latents `[N, z, h, w]` into images `[N, 3, h·f, w·f]` (f = 8 for SDXL), raw
  /// decoder output in about [-1, 1], unclamped (see `RGBImage.images(decoded:)`).
  /// - Throws: `ModelError.invalidInput` when the latent does not have the model's channels.
  public func decode(_ latent: Tensor) throws -> Tensor {
    let shape = latent.shape
    guard shape.rank == 4, shape[1] == configuration.latentChannels, shape[0] > 0, shape[2] > 0,
      shape[3] > 0
    else {
      throw ModelError.invalidInput(
        reason:
          "VAE latent \(shape) must be [N, \(configuration.latentChannels), h, w] with N, h, w ≥ 1")
    }
    let image = decoder.run(latent, scaleFactor: scaleFactor, self)
    try weights.file.checkIntact()
    return image
  }

  /// Encodes images `[N, 3, H, W]` in [-1, 1] (H and W multiples of the downsample factor, 8 for
  /// SDXL).
  /// - Throws: `ModelError.invalidInput` for a wrong shape, `ModelError.unsupportedModel` when the
  ///   encoder was not loaded.
  public func encode(_ image: Tensor) throws -> Encoding {
    guard let encoder else {
      throw ModelError.unsupportedModel(
        file: "VAE", reason: "the encoder was not loaded (or the file has none)")
    }
    let shape = image.shape
    let factor = configuration.downsampleFactor
    guard shape.rank == 4, shape[0] > 0, shape[1] == configuration.imageChannels, shape[2] > 0,
      shape[3] > 0, shape[2] % factor == 0, shape[3] % factor == 0
    else {
      throw ModelError.invalidInput(
        reason: "VAE image \(shape) must be [N, \(configuration.imageChannels), H, W] with H and W "
          + "positive multiples of \(factor)")
    }
    let encoding = encoder.run(image, scaleFactor: scaleFactor, self)
    try weights.file.checkIntact()
    return encoding
  }

  /// What the encoder gives for a batch of images (diffusers' `DiagonalGaussianDistribution`).
  public struct Encoding {
    /// The distribution's mean `[N, z, h, w]` (its mode).
    public let mean: Tensor
    /// The log-variance `[N, z, h, w]`, clamped to [-30, 20] as sgm and diffusers do.
    public let logVariance: Tensor
    /// mean · scale factor: the latent a sampler works on.
    public let latent: Tensor
  }

  /// Frees the reusable activation memory kept between calls (it is allocated again on the next).
  public func releaseWorkingMemory() {
    pool.trim()
    arena = TensorArena(minimumBlockCapacity: 1 << 20)
  }

  /// Floats of activation memory allocated by the pool so far (for tests and reports).
  var activationAllocations: Int { pool.allocationCount }
}

// MARK: - Loading

/// Loads VAE layers with the shapes the configuration implies; every error names the key.
struct VAELoader {
  let weights: ModelWeights
  // sgm `Normalize`: GroupNorm(32, C, eps=1e-6, affine=True).
  static let epsilon: Float = 1e-6

  private func check(_ key: String, _ expected: [Int]) throws {
    let shape = try weights.requireShape(key)
    guard shape == expected else {
      throw ModelError.badShape(
        file: weights.file.path, key: weights.prefix + key, shape: shape, expected: "\(expected)")
    }
  }

  func convolution(_ key: String, in inChannels: Int, out outChannels: Int, kernel: Int) throws
    -> ConvolutionLayer
  {
    try check(key + ".weight", [outChannels, inChannels, kernel, kernel])
    try check(key + ".bias", [outChannels])
    return try ConvolutionLayer(weights, key)
  }

  func norm(_ key: String, channels: Int) throws -> NormLayer {
    try check(key + ".weight", [channels])
    try check(key + ".bias", [channels])
    return try NormLayer(weights, key, epsilon: VAELoader.epsilon, channels: channels)
  }

  /// A 1×1 convolution `[C, C, 1, 1]` (LDM) or a linear `[C, C]` (some converted files) as a
  /// linear layer on tokens.
  func projection(_ key: String, channels: Int) throws -> VAEProjection {
    let shape = try weights.requireShape(key + ".weight")
    guard shape == [channels, channels, 1, 1] || shape == [channels, channels] else {
      throw ModelError.badShape(
        file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: "[\(channels), \(channels), 1, 1]")
    }
    let weight = try weights.tensor(key + ".weight", shape: shape).reshaped([channels, channels])
    return VAEProjection(weight: weight, bias: try weights.tensor(key + ".bias", shape: [channels]))
  }
}

/// A 1×1 convolution applied to `[N, T, C]` tokens as the linear map it is.
struct VAEProjection {
  let weight: Tensor
  let bias: Tensor

  func callAsFunction(_ context: ComputeContext, _ x: Tensor, into output: Tensor) {
    context.linear(x, weight: weight, bias: bias, into: output)
  }
}

/// sgm `ResnetBlock` (no time embedding, dropout 0): x + conv2(silu(norm2(conv1(silu(norm1 x))))),
/// the skip through the 1×1 `nin_shortcut` when the width changes.
struct VAEResnetBlock {
  let norm1: NormLayer, conv1: ConvolutionLayer, norm2: NormLayer, conv2: ConvolutionLayer
  let shortcut: ConvolutionLayer?
  var outChannels: Int { conv1.outChannels }

  init(_ loader: VAELoader, _ key: String, in inChannels: Int, out outChannels: Int) throws {
    norm1 = try loader.norm(key + ".norm1", channels: inChannels)
    conv1 = try loader.convolution(key + ".conv1", in: inChannels, out: outChannels, kernel: 3)
    norm2 = try loader.norm(key + ".norm2", channels: outChannels)
    conv2 = try loader.convolution(key + ".conv2", in: outChannels, out: outChannels, kernel: 3)
    shortcut =
      inChannels == outChannels
      ? nil
      : try loader.convolution(key + ".nin_shortcut", in: inChannels, out: outChannels, kernel: 1)
  }
}

/// sgm `AttnBlock`: single-head self-attention over the H·W positions with q, k, v and
/// `proj_out` stored as 1×1 convolutions, plus the residual.
struct VAEAttentionBlock {
  let norm: NormLayer
  let query: VAEProjection, key: VAEProjection, value: VAEProjection, projection: VAEProjection

  init(_ loader: VAELoader, _ prefix: String, channels: Int) throws {
    norm = try loader.norm(prefix + ".norm", channels: channels)
    query = try loader.projection(prefix + ".q", channels: channels)
    key = try loader.projection(prefix + ".k", channels: channels)
    value = try loader.projection(prefix + ".v", channels: channels)
    projection = try loader.projection(prefix + ".proj_out", channels: channels)
  }
}

/// The middle of both halves: block_1, attn_1, block_2 at the lowest resolution.
struct VAEMiddle {
  let block1: VAEResnetBlock, attention: VAEAttentionBlock, block2: VAEResnetBlock

  init(_ loader: VAELoader, _ prefix: String, channels: Int) throws {
    block1 = try VAEResnetBlock(loader, prefix + ".block_1", in: channels, out: channels)
    attention = try VAEAttentionBlock(loader, prefix + ".attn_1", channels: channels)
    block2 = try VAEResnetBlock(loader, prefix + ".block_2", in: channels, out: channels)
  }
}

/// sgm `Decoder` plus `post_quant_conv`.
struct Decoder {
  let postQuant: ConvolutionLayer
  let input: ConvolutionLayer
  let middle: VAEMiddle
  /// `up.i` for i = L−1 … 0 (the order they run in): its blocks and, except for level 0, the
  /// upsampling convolution.
  let levels: [(blocks: [VAEResnetBlock], upsample: ConvolutionLayer?)]
  let outNorm: NormLayer
  let output: ConvolutionLayer

  init(_ loader: VAELoader, _ configuration: AutoencoderConfiguration) throws {
    let z = configuration.latentChannels
    let widths = configuration.levelChannels
    let deepest = widths[widths.count - 1]
    postQuant = try loader.convolution("post_quant_conv", in: z, out: z, kernel: 1)
    input = try loader.convolution("decoder.conv_in", in: z, out: deepest, kernel: 3)
    middle = try VAEMiddle(loader, "decoder.mid", channels: deepest)
    var levels: [(blocks: [VAEResnetBlock], upsample: ConvolutionLayer?)] = []
    var channels = deepest
    for level in stride(from: widths.count - 1, through: 0, by: -1) {
      var blocks: [VAEResnetBlock] = []
      for index in 0...configuration.resBlockCount {
        blocks.append(
          try VAEResnetBlock(
            loader, "decoder.up.\(level).block.\(index)", in: channels, out: widths[level]))
        channels = widths[level]
      }
      let upsample =
        level == 0
        ? nil
        : try loader.convolution(
          "decoder.up.\(level).upsample.conv", in: channels, out: channels, kernel: 3)
      levels.append((blocks, upsample))
    }
    self.levels = levels
    outNorm = try loader.norm("decoder.norm_out", channels: channels)
    output = try loader.convolution(
      "decoder.conv_out", in: channels, out: configuration.imageChannels, kernel: 3)
  }

  func run(_ latent: Tensor, scaleFactor: Float, _ model: AutoencoderKL) -> Tensor {
    let pass = VAEPass(model)
    let shape = latent.shape
    // latent / scale_factor, a division as in diffusers' `latents / vae.config.scaling_factor`.
    let unscaled = pass.pool.tensor(shape)
    for index in 0..<latent.count { unscaled.pointer[index] = latent.pointer[index] / scaleFactor }
    let z = pass.pool.tensor(shape)
    postQuant(pass.compute, unscaled, into: z)
    pass.pool.release(unscaled)
    var x = pass.pool.tensor([shape[0], input.outChannels, shape[2], shape[3]])
    input(pass.compute, z, into: x)
    pass.pool.release(z)
    x = pass.middle(middle, x)
    for level in levels {
      var blocks = level.blocks[...]
      if let first = blocks.first, pass.halvesInPlace(first) {
        x = pass.halvingResnet(first, x)
        blocks = blocks.dropFirst()
      }
      for block in blocks { x = pass.resnet(block, x) }
      if let upsample = level.upsample { x = pass.upsample(upsample, x) }
    }
    outNorm.groupNorm(pass.compute, x, silu: true, into: x)
    // The result is the caller's: fresh memory, not a pool block.
    let image = Tensor(zeros: output.outputShape(for: x.shape))
    output(pass.compute, x, into: image)
    pass.pool.release(x)
    return image
  }
}

/// sgm `Encoder` (double_z) plus `quant_conv`.
struct Encoder {
  let input: ConvolutionLayer
  /// `down.i` for i = 0 … L−1: its blocks and, except for the last level, the stride-2 convolution.
  let levels: [(blocks: [VAEResnetBlock], downsample: ConvolutionLayer?)]
  let middle: VAEMiddle
  let outNorm: NormLayer
  let output: ConvolutionLayer
  let quant: ConvolutionLayer

  init(_ loader: VAELoader, _ configuration: AutoencoderConfiguration) throws {
    let z = configuration.latentChannels
    let widths = configuration.levelChannels
    input = try loader.convolution(
      "encoder.conv_in", in: configuration.imageChannels, out: configuration.baseChannels, kernel: 3
    )
    var channels = configuration.baseChannels
    var levels: [(blocks: [VAEResnetBlock], downsample: ConvolutionLayer?)] = []
    for level in widths.indices {
      var blocks: [VAEResnetBlock] = []
      for index in 0..<configuration.resBlockCount {
        blocks.append(
          try VAEResnetBlock(
            loader, "encoder.down.\(level).block.\(index)", in: channels, out: widths[level]))
        channels = widths[level]
      }
      let downsample =
        level == widths.count - 1
        ? nil
        : try loader.convolution(
          "encoder.down.\(level).downsample.conv", in: channels, out: channels, kernel: 3)
      levels.append((blocks, downsample))
    }
    self.levels = levels
    middle = try VAEMiddle(loader, "encoder.mid", channels: channels)
    outNorm = try loader.norm("encoder.norm_out", channels: channels)
    output = try loader.convolution("encoder.conv_out", in: channels, out: 2 * z, kernel: 3)
    quant = try loader.convolution("quant_conv", in: 2 * z, out: 2 * z, kernel: 1)
  }

  func run(_ image: Tensor, scaleFactor: Float, _ model: AutoencoderKL) -> AutoencoderKL.Encoding {
    let pass = VAEPass(model)
    let (batch, height, width) = (image.shape[0], image.shape[2], image.shape[3])
    var x = pass.pool.tensor([batch, input.outChannels, height, width])
    input(pass.compute, image, into: x)
    for level in levels {
      for block in level.blocks { x = pass.resnet(block, x) }
      if let downsample = level.downsample { x = pass.downsample(downsample, x) }
    }
    x = pass.middle(middle, x)
    outNorm.groupNorm(pass.compute, x, silu: true, into: x)
    let moments = pass.pool.tensor(output.outputShape(for: x.shape))
    output(pass.compute, x, into: moments)
    pass.pool.release(x)
    let quantised = pass.pool.tensor(moments.shape)
    quant(pass.compute, moments, into: quantised)
    pass.pool.release(moments)
    // Moments split as [mean ‖ logvar] along channels (diffusers `torch.chunk(parameters, 2, dim=1)`).
    let z = moments.shape[1] / 2
    let plane = moments.shape[2] * moments.shape[3]
    let halfShape: Shape = [batch, z, moments.shape[2], moments.shape[3]]
    let mean = Tensor(zeros: halfShape)
    let logVariance = Tensor(zeros: halfShape)
    let latent = Tensor(zeros: halfShape)
    for sample in 0..<batch {
      let source = quantised.pointer + sample * 2 * z * plane
      let offset = sample * z * plane
      (mean.pointer + offset).update(from: source, count: z * plane)
      for index in 0..<(z * plane) {
        logVariance.pointer[offset + index] = Swift.min(
          Swift.max(source[z * plane + index], -30), 20)
        latent.pointer[offset + index] = source[index] * scaleFactor
      }
    }
    pass.pool.release(quantised)
    return AutoencoderKL.Encoding(mean: mean, logVariance: logVariance, latent: latent)
  }
}

// MARK: - Forward pass

/// One decode or encode: the kernels' context, the pool for activations and the arena for the
/// short-lived buffers of one layer.
struct VAEPass {
  let compute: ComputeContext
  let pool: ActivationPool
  let arena: TensorArena
  /// Band buffers hold about this many floats of input rows.
  let bandBudget: Int
  /// Whether ResnetBlocks run in bands (`VAEBands.swift`); the reference kernels use whole planes.
  let banded: Bool

  init(_ model: AutoencoderKL) {
    compute = model.compute
    pool = model.pool
    arena = model.arena
    bandBudget = model.bandBudget
    banded = !model.wholePlanes && !model.compute.usesReferenceKernels
    arena.reset()
  }

  func middle(_ block: VAEMiddle, _ x: Tensor) -> Tensor {
    var h = resnet(block.block1, x)
    attention(block.attention, h)
    h = resnet(block.block2, h)
    return h
  }

  /// Runs a ResnetBlock on `x` (a pool tensor, consumed) and returns its output (a pool tensor).
  func resnet(_ block: VAEResnetBlock, _ x: Tensor) -> Tensor {
    let outShape: Shape = [x.shape[0], block.outChannels, x.shape[2], x.shape[3]]
    if let shortcut = block.shortcut {
      // The skip first, so that x can then be normalised in place and released early.
      let output = pool.tensor(outShape)
      shortcut(compute, x, into: output)
      block.norm1.groupNorm(compute, x, silu: true, into: x)
      let h = pool.tensor(outShape)
      block.conv1(compute, x, into: h)
      pool.release(x)
      block.norm2.groupNorm(compute, h, silu: true, into: h)
      block.conv2(compute, h, into: output, accumulate: true)
      pool.release(h)
      return output
    }
    let h = pool.tensor(outShape)
    if banded {
      // Both convolutions' normalised inputs are made a band at a time, never whole; the residual
      // is fused into conv2: x += conv2(silu(norm2(h))).
      normalizedConvolutions(block.norm1, block.conv1, x, into: h)
      normalizedConvolutions(block.norm2, block.conv2, h, into: x, accumulate: true)
    } else {
      let normalised = pool.tensor(x.shape)
      block.norm1.groupNorm(compute, x, silu: true, into: normalised)
      block.conv1(compute, normalised, into: h)
      pool.release(normalised)
      block.norm2.groupNorm(compute, h, silu: true, into: h)
      block.conv2(compute, h, into: x, accumulate: true)
    }
    pool.release(h)
    return x
  }

  /// x += proj_out(attention(q, k, v)) over the H·W tokens of each sample, in place.
  func attention(_ block: VAEAttentionBlock, _ x: Tensor) {
    let (batch, channels) = (x.shape[0], x.shape[1])
    let tokens = x.shape[2] * x.shape[3]
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let normalised = arena.tensor(x.shape)
    block.norm.groupNorm(compute, x, into: normalised)
    let sequence = arena.tensor([batch, tokens, channels])
    compute.transposeLastTwo(normalised.reshaped([batch, channels, tokens]), into: sequence)
    let query = arena.tensor(sequence.shape)
    let key = arena.tensor(sequence.shape)
    let value = arena.tensor(sequence.shape)
    block.query(compute, sequence, into: query)
    block.key(compute, sequence, into: key)
    block.value(compute, sequence, into: value)
    // One head as wide as the block: softmax(q·kᵀ/√C)·v.
    compute.attention(query: query, key: key, value: value, headCount: 1, into: sequence)
    block.projection(compute, sequence, into: query)
    let projected = normalised.reshaped([batch, channels, tokens])
    compute.transposeLastTwo(query, into: projected)
    compute.add(x, normalised, into: x)
  }

  /// sgm `Upsample`: nearest ×2 then a 3×3 convolution, computed in bands of output rows so the
  /// ×2 input is never held whole. Consumes `x`.
  func upsample(_ conv: ConvolutionLayer, _ x: Tensor) -> Tensor {
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let outHeight = 2 * height
    let outWidth = 2 * width
    let paddedWidth = outWidth + 2
    let outChannels = conv.outChannels
    let output = pool.tensor([batch, outChannels, outHeight, outWidth])
    let bandRows = ComputeContext.tileAlignedBandRows(
      Swift.max(1, Swift.min(outHeight, bandBudget / (channels * paddedWidth) - 2)))
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let bandInput = arena.tensor([1, channels, bandRows + 2, paddedWidth])
    let weight = conv.weight.convolutionView(compute, stride: 1)
    var bandOutput: Tensor? = nil  // only where the kernel cannot write into the output
    for sample in 0..<batch {
      let source = x.pointer + sample * channels * height * width
      var first = 0
      while first < outHeight {
        let rows = Swift.min(bandRows, outHeight - first)
        let input = bandInput.view(offset: 0, shape: [1, channels, rows + 2, paddedWidth])
        let start = first
        // Upsampled rows start−1 … start+rows with a zero border (the convolution's padding 1).
        compute.pool.forEachChunk(channels) { range in
          for channel in range {
            let plane = source + channel * height * width
            let target = input.pointer + channel * (rows + 2) * paddedWidth
            for line in 0..<(rows + 2) {
              let row = target + line * paddedWidth
              let upsampledRow = start - 1 + line
              guard upsampledRow >= 0, upsampledRow < outHeight else {
                row.update(repeating: 0, count: paddedWidth)
                continue
              }
              let origin = plane + (upsampledRow / 2) * width
              row[0] = 0
              for column in 0..<width {
                row[1 + 2 * column] = origin[column]
                row[2 + 2 * column] = origin[column]
              }
              row[paddedWidth - 1] = 0
            }
          }
        }
        // Straight into the output's rows where the kernel can; else a band buffer and a copy.
        if !compute.convolveBand(
          input, weight: weight, bias: conv.bias, intoRows: first, of: output.slice(sample..<(sample + 1)),
          accumulate: false)
        {
          if bandOutput == nil { bandOutput = arena.tensor([1, outChannels, bandRows, outWidth]) }
          let result = bandOutput!.view(offset: 0, shape: [1, outChannels, rows, outWidth])
          compute.conv2d(input, weight: weight, bias: conv.bias, stride: 1, padding: 0, into: result)
          copyBand(result, into: output, sample: sample, firstRow: first)
        }
        first += rows
      }
    }
    pool.release(x)
    return output
  }

  /// sgm `Downsample` (with_conv): pad right and bottom by one (`F.pad(x, (0, 1, 0, 1))`), then a
  /// 3×3 convolution with stride 2, in bands of output rows. Consumes `x`.
  func downsample(_ conv: ConvolutionLayer, _ x: Tensor) -> Tensor {
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let paddedWidth = width + 1
    let outHeight = (height - 2) / 2 + 1
    let outWidth = (width - 2) / 2 + 1
    let outChannels = conv.outChannels
    let output = pool.tensor([batch, outChannels, outHeight, outWidth])
    let bandRows = Swift.max(
      1, Swift.min(outHeight, (bandBudget / (channels * paddedWidth) - 1) / 2))
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let bandInput = arena.tensor([1, channels, 2 * bandRows + 1, paddedWidth])
    let weight = conv.weight.view(compute)
    let bandOutput = arena.tensor([1, outChannels, bandRows, outWidth])
    for sample in 0..<batch {
      let source = x.pointer + sample * channels * height * width
      var first = 0
      while first < outHeight {
        let rows = Swift.min(bandRows, outHeight - first)
        let inputRows = 2 * rows + 1
        let input = bandInput.view(offset: 0, shape: [1, channels, inputRows, paddedWidth])
        let start = 2 * first
        compute.pool.forEachChunk(channels) { range in
          for channel in range {
            let plane = source + channel * height * width
            let target = input.pointer + channel * inputRows * paddedWidth
            for line in 0..<inputRows {
              let row = target + line * paddedWidth
              let sourceRow = start + line
              guard sourceRow < height else {
                row.update(repeating: 0, count: paddedWidth)
                continue
              }
              row.update(from: plane + sourceRow * width, count: width)
              row[width] = 0
            }
          }
        }
        let result = bandOutput.view(offset: 0, shape: [1, outChannels, rows, outWidth])
        compute.conv2d(
          input, weight: weight, bias: conv.bias, stride: 2, padding: 0, into: result)
        copyBand(result, into: output, sample: sample, firstRow: first)
        first += rows
      }
    }
    pool.release(x)
    return output
  }

  /// Copies a `[1, C, rows, W]` band into rows `firstRow…` of sample `sample` of `[N, C, H, W]`.
  func copyBand(_ band: Tensor, into output: Tensor, sample: Int, firstRow: Int) {
    let (channels, rows, width) = (band.shape[1], band.shape[2], band.shape[3])
    let height = output.shape[2]
    let destination = output.pointer + sample * channels * height * width
    compute.pool.forEachChunk(
      channels, minimumChunk: Swift.max(1, (1 << 14) / Swift.max(1, rows * width))
    ) {
      range in
      for channel in range {
        (destination + (channel * height + firstRow) * width)
          .update(from: band.pointer + channel * rows * width, count: rows * width)
      }
    }
  }
}
