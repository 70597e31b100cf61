import Foundation
import Tensors

/// The SDXL UNet (sgm `UNetModel`) with its topology read from the weights, so the same code runs
/// the tiny fixtures and full SDXL: model channels from `input_blocks.0.0`, the block list from the
/// keys present (`in_layers` → ResBlock, `proj_in` → SpatialTransformer with as many
/// `transformer_blocks` as stored, `op` → downsample, `conv` → upsample), widths from shapes.
///
/// The only hyper-parameter weights cannot tell is the attention head size: SDXL uses 64
/// (`num_head_channels`), which is the default.
public final class UNet {
  /// The channel count after `input_blocks.0` (320 in SDXL).
  public let modelChannels: Int
  /// Latent channels in and out (4).
  public let inChannels: Int, outChannels: Int
  /// The cross-attention context width (2048 in SDXL), or nil for a UNet without transformers.
  public let contextDimension: Int?
  /// The adm (`y`) vector width (2816 in SDXL), or nil without `label_emb`.
  public let admChannels: Int?
  /// Channels per attention head.
  public let headDimension: Int
  /// How many times the latent is halved (2 in SDXL): sizes must be multiples of 2^this.
  public let downsampleCount: Int
  /// Seconds spent widening stored weights to Float32 so far (the cost of keeping them as stored).
  public var weightWideningSeconds: Double { weights.scratch.seconds }
  /// Number of spatial transformer blocks (70 in SDXL).
  public var transformerBlockCount: Int { transformers.reduce(0) { $0 + $1.blocks.count } }

  let compute: ComputeContext
  /// Where the layers' stored weights live (checked after each pass: they are read from the map).
  let weights: ModelWeights
  private(set) var arena = TensorArena()
  let timeEmbedding: (LinearLayer, LinearLayer)
  let labelEmbedding: (LinearLayer, LinearLayer)?
  let inputConvolution: ConvolutionLayer
  let inputBlocks: [[UNetLayer]]
  let middleBlock: [UNetLayer]
  let outputBlocks: [[UNetLayer]]
  let outNorm: NormLayer
  let outConvolution: ConvolutionLayer
  var transformers: [SpatialTransformer] {
    (inputBlocks + [middleBlock] + outputBlocks).flatMap { $0 }.compactMap {
      if case .transformer(let block) = $0 { return block } else { return nil }
    }
  }

  /// Builds the UNet from `weights` scoped to its prefix (`model.diffusion_model.` in a
  /// single-file checkpoint). Weights stay as stored in the map; each layer's matrix is widened to
  /// Float32 into one reused scratch while it runs (norms and biases, a few MB, are widened here).
  public init(weights: ModelWeights, headDimension: Int = 64, compute: ComputeContext = ComputeContext()) throws {
    let weights = weights.withOwnScratch()
    self.weights = weights
    self.compute = compute
    self.headDimension = headDimension
    inputConvolution = try ConvolutionLayer(weights, "input_blocks.0.0")
    modelChannels = inputConvolution.outChannels
    inChannels = inputConvolution.inChannels
    timeEmbedding = (try LinearLayer(weights, "time_embed.0"), try LinearLayer(weights, "time_embed.2"))
    guard timeEmbedding.0.inFeatures == modelChannels, modelChannels % 2 == 0 else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason: "time_embed.0 takes \(timeEmbedding.0.inFeatures) features but the UNet has \(modelChannels) channels")
    }
    if weights.contains("label_emb.0.0.weight") {
      labelEmbedding = (try LinearLayer(weights, "label_emb.0.0"), try LinearLayer(weights, "label_emb.0.2"))
      admChannels = labelEmbedding?.0.inFeatures
    } else {
      labelEmbedding = nil
      admChannels = nil
    }
    let loader = LayerLoader(weights: weights, headDimension: headDimension)
    var blocks: [[UNetLayer]] = []
    var index = 1
    while weights.contains("input_blocks.\(index).0.in_layers.0.weight")
      || weights.contains("input_blocks.\(index).0.op.weight")
    {
      blocks.append(try loader.block("input_blocks.\(index)"))
      index += 1
    }
    inputBlocks = blocks
    middleBlock = try loader.block("middle_block")
    blocks = []
    index = 0
    while weights.contains("output_blocks.\(index).0.in_layers.0.weight") {
      blocks.append(try loader.block("output_blocks.\(index)"))
      index += 1
    }
    outputBlocks = blocks
    outNorm = try NormLayer(weights, "out.0", epsilon: 1e-5)
    outConvolution = try ConvolutionLayer(weights, "out.2")
    outChannels = outConvolution.outChannels
    downsampleCount =
      inputBlocks.flatMap { $0 }.filter { if case .downsample = $0 { return true } else { return false } }.count
    guard !inputBlocks.isEmpty, outputBlocks.count == inputBlocks.count + 1 else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason: "UNet has \(inputBlocks.count + 1) input blocks but \(outputBlocks.count) output blocks")
    }
    let allLayers = (inputBlocks + [middleBlock] + outputBlocks).flatMap { $0 }
    let widths = Set(
      allLayers.flatMap { layer -> [Int] in
        if case .transformer(let block) = layer { return block.blocks.map { $0.crossKey.inFeatures } }
        return []
      })
    guard widths.count <= 1 else {
      throw ModelError.unsupportedModel(
        file: weights.file.path, reason: "cross-attention context widths differ: \(widths.sorted())")
    }
    contextDimension = widths.first
    try checkChannelFlow(file: weights.file.path)
  }

  /// Follows the channel counts through the block list (skips included) so a file whose blocks
  /// do not connect fails here, not with a kernel precondition mid-forward.
  private func checkChannelFlow(file: String) throws {
    var channels = modelChannels
    var skips = [channels]
    func run(_ layers: [UNetLayer], _ where_: String) throws {
      for layer in layers {
        switch layer {
        case .residual(let block):
          guard block.inChannels == channels else {
            throw ModelError.unsupportedModel(
              file: file, reason: "\(where_): ResBlock takes \(block.inChannels) channels, gets \(channels)")
          }
          channels = block.outChannels
        case .transformer(let block):
          guard block.channels == channels else {
            throw ModelError.unsupportedModel(
              file: file, reason: "\(where_): transformer has \(block.channels) channels, gets \(channels)")
          }
        case .downsample(let conv), .upsample(let conv):
          guard conv.inChannels == channels else {
            throw ModelError.unsupportedModel(
              file: file, reason: "\(where_): resampler takes \(conv.inChannels) channels, gets \(channels)")
          }
          channels = conv.outChannels
        }
      }
    }
    for (index, block) in inputBlocks.enumerated() {
      try run(block, "input_blocks.\(index + 1)")
      skips.append(channels)
    }
    try run(middleBlock, "middle_block")
    for (index, block) in outputBlocks.enumerated() {
      channels += skips.removeLast()
      try run(block, "output_blocks.\(index)")
    }
    guard channels == outNorm.channels, channels == outConvolution.inChannels else {
      throw ModelError.unsupportedModel(file: file, reason: "out.0 has \(outNorm.channels) channels, gets \(channels)")
    }
  }

  /// Cross-attention keys and values of every transformer block for each context: they depend
  /// only on the prompt, so they are computed once and reused at every step.
  public struct CrossAttentionCache {
    /// `keys[block][sample]`, `values[block][sample]`: `[1, tokens, channels]`.
    let keys: [[Tensor]]
    let values: [[Tensor]]
    /// Number of contexts (the batch size the cache serves).
    public var sampleCount: Int { keys.first?.count ?? 0 }
  }

  /// Precomputes cross-attention K/V for `contexts` (each `[1, tokens, contextDimension]`; tokens
  /// may differ between them, e.g. a long prompt and a short negative). Equal contexts (the same
  /// negative prompt of several images, the probe's one empty prompt) share one K/V.
  public func crossAttention(for contexts: [Tensor]) throws -> CrossAttentionCache {
    for (index, context) in contexts.enumerated() {
      guard context.shape.rank == 3, context.shape[0] == 1, context.shape[1] > 0,
        contextDimension == nil || context.shape[2] == contextDimension
      else {
        throw ModelError.invalidInput(
          reason:
            "context \(index) is \(context.shape), the UNet needs [1, tokens, \(contextDimension ?? 0)]")
      }
    }
    // Each sample's index into the distinct contexts.
    var distinct: [Tensor] = []
    let slots = contexts.map { context -> Int in
      if let index = distinct.firstIndex(where: { Self.sameValues($0, context) }) { return index }
      distinct.append(context)
      return distinct.count - 1
    }
    var keys: [[Tensor]] = [], values: [[Tensor]] = []
    for block in transformers.flatMap({ $0.blocks }) {
      var blockKeys: [Tensor] = [], blockValues: [Tensor] = []
      for context in distinct {
        let tokens = context.shape[1]
        let key = Tensor(zeros: [1, tokens, block.crossKey.outFeatures])
        let value = Tensor(zeros: [1, tokens, block.crossValue.outFeatures])
        block.crossKey(compute, context, into: key)
        block.crossValue(compute, context, into: value)
        blockKeys.append(key)
        blockValues.append(value)
      }
      keys.append(slots.map { blockKeys[$0] })
      values.append(slots.map { blockValues[$0] })
    }
    return CrossAttentionCache(keys: keys, values: values)
  }

  /// Bytes of the cross-attention keys and values of one context of `tokens` tokens.
  public func crossAttentionBytes(tokens: Int) -> Int {
    4 * tokens * transformers.flatMap(\.blocks).reduce(0) { $0 + $1.crossKey.outFeatures + $1.crossValue.outFeatures }
  }

  /// Whether two tensors have the same shape and bit-identical values.
  static func sameValues(_ a: Tensor, _ b: Tensor) -> Bool {
    a.shape == b.shape && memcmp(a.pointer, b.pointer, a.count * MemoryLayout<Float>.size) == 0
  }

  /// Floats the activation arena holds at its peak during a forward pass of `batch` latents of
  /// `height`×`width`: the same requests in the same order as `callAsFunction` (checked against
  /// the arena's own count by the tests), so callers can size a batch to a memory budget before
  /// running it. Grows linearly with the batch and the latent area.
  public func activationPeak(batch: Int, height: Int, width: Int) -> Int {
    var counter = ArenaCounter()
    let b = batch
    var shape = inputConvolution.outputShape(for: [b, inChannels, height, width])
    counter.take(shape.count)
    var skips = [shape[1]]
    func run(_ layers: [UNetLayer]) {
      for layer in layers {
        let plane = shape[2] * shape[3]
        switch layer {
        case .residual(let block):
          let output = Shape(b, block.outChannels, shape[2], shape[3])
          counter.take(output.count)
          let mark = counter.live
          counter.take(shape.count)
          counter.take(output.count)
          counter.take(b * block.outChannels)
          counter.live = mark
          shape = output
        case .transformer(let block):
          let inner = block.projectIn.outFeatures, feedForward = block.blocks[0]
          counter.take(shape.count)
          let mark = counter.live
          counter.take(shape.count)
          counter.take(shape.count)
          for _ in 0..<6 { counter.take(b * plane * inner) }
          counter.take(b * plane * feedForward.feedForwardIn.outFeatures)
          counter.take(b * plane * feedForward.feedForwardOut.inFeatures)
          counter.live = mark
        case .downsample(let conv):
          shape = conv.outputShape(for: shape)
          counter.take(shape.count)
        case .upsample(let conv):
          let doubled = Shape(b, shape[1], 2 * shape[2], 2 * shape[3])
          counter.take(doubled.count)
          shape = conv.outputShape(for: doubled)
          counter.take(shape.count)
        }
      }
    }
    for block in inputBlocks {
      run(block)
      skips.append(shape[1])
    }
    run(middleBlock)
    for block in outputBlocks {
      shape = Shape(b, shape[1] + skips.removeLast(), shape[2], shape[3])
      counter.take(shape.count)
      run(block)
    }
    counter.take(shape.count)
    return counter.peak
  }

  /// The model output (ε or v, by how the model was trained) for latents `x` `[N, C, H, W]` at
  /// (possibly fractional) DDPM `timesteps` (one per sample), with the cross-attention cache of N
  /// contexts and the adm vectors `y` `[N, admChannels]`.
  public func callAsFunction(_ x: Tensor, timesteps: [Float], crossAttention cache: CrossAttentionCache, y: Tensor?)
    throws -> Tensor
  {
    let batch = x.shape[0]
    let factor = 1 << downsampleCount
    guard x.shape.rank == 4, x.shape[1] == inChannels, batch > 0, x.shape[2] > 0, x.shape[3] > 0,
      x.shape[2] % factor == 0, x.shape[3] % factor == 0
    else {
      throw ModelError.invalidInput(
        reason:
          "latent \(x.shape): the UNet needs [N, \(inChannels), H, W] with H and W multiples of \(factor)")
    }
    guard timesteps.count == batch else {
      throw ModelError.invalidInput(reason: "\(timesteps.count) timesteps for a batch of \(batch)")
    }
    guard transformerBlockCount == 0 || cache.sampleCount == batch else {
      throw ModelError.invalidInput(
        reason: "cross-attention prepared for \(cache.sampleCount) contexts, batch is \(batch)")
    }
    if let labelEmbedding {
      guard let y, y.shape == Shape(batch, labelEmbedding.0.inFeatures) else {
        throw ModelError.invalidInput(
          reason:
            "adm vector \(y.map { "\($0.shape)" } ?? "missing"), the UNet needs [\(batch), \(labelEmbedding.0.inFeatures)]"
        )
      }
    }
    arena.reset()
    let embedding = embed(timesteps: timesteps, y: y)
    let state = ForwardState(compute: compute, arena: arena, embedding: embedding, cache: cache)
    var h = arena.tensor(inputConvolution.outputShape(for: x.shape))
    inputConvolution(compute, x, into: h)
    var skips = [h]
    for block in inputBlocks {
      h = state.run(block, h)
      skips.append(h)
    }
    h = state.run(middleBlock, h)
    for block in outputBlocks {
      let skip = skips.removeLast()
      let joined = arena.tensor([batch, h.shape[1] + skip.shape[1], h.shape[2], h.shape[3]])
      compute.concatenate(h, skip, axis: 1, into: joined)
      h = state.run(block, joined)
    }
    let normalised = arena.tensor(h.shape)
    outNorm.groupNorm(compute, h, silu: true, into: normalised)
    let output = Tensor(zeros: outConvolution.outputShape(for: normalised.shape))
    outConvolution(compute, normalised, into: output)
    try weights.file.checkIntact()
    return output
  }

  /// Frees the activation memory kept between passes (it is allocated again on the next pass):
  /// the pipeline calls it once an image's steps are done, before the VAE needs memory.
  public func releaseWorkingMemory() {
    releasedPeak = Swift.max(releasedPeak, arena.peakCount)
    arena = TensorArena()
  }

  /// The most activation floats held at once by any pass since the UNet was built (for tests and
  /// reports: it should follow the batch, not the number of images or steps).
  public var activationPeakFloats: Int { Swift.max(releasedPeak, arena.peakCount) }
  private var releasedPeak = 0

  /// `time_embed(t_emb) + label_emb(y)` `[N, 4·modelChannels]` with `t_emb` the sinusoidal
  /// timestep embedding; returned after SiLU, the form every ResBlock's `emb_layers` consumes.
  func embed(timesteps: [Float], y: Tensor?) -> Tensor {
    let raw = rawEmbedding(timesteps: timesteps, y: y)
    compute.silu(raw, into: raw)
    return raw
  }

  /// `time_embed(t_emb) + label_emb(y)` before the SiLU (for tests against diffusers' `emb`).
  func rawEmbedding(timesteps: [Float], y: Tensor?) -> Tensor {
    let batch = timesteps.count
    let sinusoid = sinusoidalEmbedding(timesteps, dimension: modelChannels)
    let hidden = Tensor(zeros: [batch, timeEmbedding.0.outFeatures])
    timeEmbedding.0(compute, sinusoid, into: hidden)
    compute.silu(hidden, into: hidden)
    let embedding = Tensor(zeros: [batch, timeEmbedding.1.outFeatures])
    timeEmbedding.1(compute, hidden, into: embedding)
    if let labelEmbedding, let y {
      let labelHidden = Tensor(zeros: [batch, labelEmbedding.0.outFeatures])
      labelEmbedding.0(compute, y, into: labelHidden)
      compute.silu(labelHidden, into: labelHidden)
      labelEmbedding.1(compute, labelHidden, into: embedding, accumulate: true)
    }
    return embedding
  }
}

/// Follows a `TensorArena`'s count of live floats without allocating (`UNet.activationPeak`).
struct ArenaCounter {
  var live = 0
  private(set) var peak = 0

  /// Takes `count` floats, rounded up as the arena rounds them.
  mutating func take(_ count: Int) {
    live += (count + 15) & ~15
    peak = Swift.max(peak, live)
  }
}

/// One layer of a UNet block, in the order sgm's `TimestepEmbedSequential` runs them.
enum UNetLayer {
  case residual(ResidualBlock)
  case transformer(SpatialTransformer)
  case downsample(ConvolutionLayer)
  case upsample(ConvolutionLayer)
}

/// Reads blocks of layers by key.
struct LayerLoader {
  let weights: ModelWeights
  let headDimension: Int

  func block(_ prefix: String) throws -> [UNetLayer] {
    var layers: [UNetLayer] = []
    var index = 0
    while true {
      let key = "\(prefix).\(index)"
      if weights.contains(key + ".in_layers.0.weight") {
        layers.append(.residual(try ResidualBlock(weights.scoped(key + "."))))
      } else if weights.contains(key + ".proj_in.weight") {
        layers.append(.transformer(try SpatialTransformer(weights.scoped(key + "."), headDimension: headDimension)))
      } else if weights.contains(key + ".op.weight") {
        layers.append(.downsample(try ConvolutionLayer(weights, key + ".op", stride: 2, padding: 1)))
      } else if weights.contains(key + ".conv.weight") {
        layers.append(.upsample(try ConvolutionLayer(weights, key + ".conv")))
      } else {
        break
      }
      index += 1
    }
    guard !layers.isEmpty else {
      throw ModelError.missingWeight(file: weights.file.path, key: weights.prefix + prefix + ".0.*")
    }
    return layers
  }
}

/// sgm `ResBlock`: GN→SiLU→conv, + Linear(SiLU(emb)), GN→SiLU→conv, + skip (identity or 1×1 conv).
struct ResidualBlock {
  let inNorm: NormLayer
  let inConvolution: ConvolutionLayer
  let embedding: LinearLayer
  let outNorm: NormLayer
  let outConvolution: ConvolutionLayer
  let skip: ConvolutionLayer?
  var inChannels: Int { inConvolution.inChannels }
  var outChannels: Int { outConvolution.outChannels }

  init(_ weights: ModelWeights) throws {
    inNorm = try NormLayer(weights, "in_layers.0", epsilon: 1e-5)
    inConvolution = try ConvolutionLayer(weights, "in_layers.2")
    embedding = try LinearLayer(weights, "emb_layers.1")
    outNorm = try NormLayer(weights, "out_layers.0", epsilon: 1e-5, channels: inConvolution.outChannels)
    outConvolution = try ConvolutionLayer(weights, "out_layers.3")
    skip = weights.contains("skip_connection.weight") ? try ConvolutionLayer(weights, "skip_connection") : nil
    let path = weights.file.path, prefix = weights.prefix
    guard inNorm.channels == inConvolution.inChannels, embedding.outFeatures == inConvolution.outChannels,
      outConvolution.inChannels == inConvolution.outChannels,
      skip.map({ $0.inChannels == inChannels && $0.outChannels == outChannels }) ?? (inChannels == outChannels)
    else {
      throw ModelError.unsupportedModel(file: path, reason: "\(prefix)*: ResBlock widths do not fit together")
    }
  }
}

/// sgm `SpatialTransformer` with linear `proj_in`/`proj_out`.
struct SpatialTransformer {
  let norm: NormLayer
  let projectIn: LinearLayer
  let blocks: [TransformerBlock]
  let projectOut: LinearLayer
  let headCount: Int
  var channels: Int { norm.channels }

  init(_ weights: ModelWeights, headDimension: Int) throws {
    norm = try NormLayer(weights, "norm", epsilon: 1e-6)
    projectIn = try LinearLayer(weights, "proj_in")
    projectOut = try LinearLayer(weights, "proj_out")
    var blocks: [TransformerBlock] = []
    while weights.contains("transformer_blocks.\(blocks.count).attn1.to_q.weight") {
      blocks.append(try TransformerBlock(weights.scoped("transformer_blocks.\(blocks.count).")))
    }
    self.blocks = blocks
    let inner = projectIn.outFeatures
    guard !blocks.isEmpty, projectIn.inFeatures == norm.channels, projectOut.inFeatures == inner,
      projectOut.outFeatures == norm.channels, blocks.allSatisfy({ $0.width == inner })
    else {
      throw ModelError.unsupportedModel(
        file: weights.file.path, reason: "\(weights.prefix)*: transformer widths do not fit together")
    }
    guard headDimension > 0, inner % headDimension == 0 else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason: "\(weights.prefix)*: width \(inner) is not a multiple of the head size \(headDimension)")
    }
    headCount = inner / headDimension
  }
}

/// sgm `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each
/// pre-LayerNorm with a residual.
struct TransformerBlock {
  let norm1: NormLayer, selfQuery: LinearLayer, selfKey: LinearLayer, selfValue: LinearLayer, selfOut: LinearLayer
  let norm2: NormLayer, crossQuery: LinearLayer, crossKey: LinearLayer, crossValue: LinearLayer, crossOut: LinearLayer
  let norm3: NormLayer, feedForwardIn: LinearLayer, feedForwardOut: LinearLayer
  var width: Int { selfQuery.inFeatures }

  init(_ weights: ModelWeights) throws {
    norm1 = try NormLayer(weights, "norm1", epsilon: 1e-5)
    selfQuery = try LinearLayer(weights, "attn1.to_q")
    selfKey = try LinearLayer(weights, "attn1.to_k")
    selfValue = try LinearLayer(weights, "attn1.to_v")
    selfOut = try LinearLayer(weights, "attn1.to_out.0")
    norm2 = try NormLayer(weights, "norm2", epsilon: 1e-5)
    crossQuery = try LinearLayer(weights, "attn2.to_q")
    crossKey = try LinearLayer(weights, "attn2.to_k")
    crossValue = try LinearLayer(weights, "attn2.to_v")
    crossOut = try LinearLayer(weights, "attn2.to_out.0")
    norm3 = try NormLayer(weights, "norm3", epsilon: 1e-5)
    feedForwardIn = try LinearLayer(weights, "ff.net.0.proj")
    feedForwardOut = try LinearLayer(weights, "ff.net.2")
    let c = selfQuery.inFeatures
    let consistent = [
      norm1.channels, norm2.channels, norm3.channels, selfQuery.outFeatures, selfKey.inFeatures,
      selfKey.outFeatures, selfValue.inFeatures, selfValue.outFeatures, selfOut.inFeatures, selfOut.outFeatures,
      crossQuery.inFeatures, crossQuery.outFeatures, crossKey.outFeatures, crossValue.outFeatures,
      crossOut.inFeatures, crossOut.outFeatures, feedForwardIn.inFeatures, feedForwardOut.outFeatures,
    ].allSatisfy { $0 == c }
    guard consistent, crossKey.inFeatures == crossValue.inFeatures,
      feedForwardIn.outFeatures == 2 * feedForwardOut.inFeatures
    else {
      throw ModelError.unsupportedModel(
        file: weights.file.path, reason: "\(weights.prefix)*: transformer block widths do not fit together")
    }
  }
}

/// What one forward pass shares between blocks: where to compute, the activation arena, the
/// (SiLU'd) embedding and the cross-attention cache with a cursor over its blocks.
final class ForwardState {
  let compute: ComputeContext
  let arena: TensorArena
  let embedding: Tensor
  let cache: UNet.CrossAttentionCache
  var transformerIndex = 0

  init(compute: ComputeContext, arena: TensorArena, embedding: Tensor, cache: UNet.CrossAttentionCache) {
    self.compute = compute
    self.arena = arena
    self.embedding = embedding
    self.cache = cache
  }

  func run(_ layers: [UNetLayer], _ input: Tensor) -> Tensor {
    var h = input
    for layer in layers {
      switch layer {
      case .residual(let block): h = residual(block, h)
      case .transformer(let block): h = transformer(block, h)
      case .downsample(let conv):
        let output = arena.tensor(conv.outputShape(for: h.shape))
        conv(compute, h, into: output)
        h = output
      case .upsample(let conv):
        let doubled = arena.tensor([h.shape[0], h.shape[1], 2 * h.shape[2], 2 * h.shape[3]])
        compute.upsampleNearest2x(h, into: doubled)
        let output = arena.tensor(conv.outputShape(for: doubled.shape))
        conv(compute, doubled, into: output)
        h = output
      }
    }
    return h
  }

  func residual(_ block: ResidualBlock, _ x: Tensor) -> Tensor {
    let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
    let output = arena.tensor([batch, block.outChannels, height, width])
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let normalised = arena.tensor(x.shape)
    block.inNorm.groupNorm(compute, x, silu: true, into: normalised)
    let h = arena.tensor(output.shape)
    block.inConvolution(compute, normalised, into: h)
    let shift = arena.tensor([batch, block.outChannels])
    block.embedding(compute, embedding, into: shift)
    compute.addChannelBias(h, bias: shift, into: h)
    block.outNorm.groupNorm(compute, h, silu: true, into: h)
    if let skip = block.skip {
      skip(compute, x, into: output)
    } else {
      output.copy(from: x)
    }
    block.outConvolution(compute, h, into: output, accumulate: true)
    return output
  }

  func transformer(_ block: SpatialTransformer, _ x: Tensor) -> Tensor {
    let (batch, channels) = (x.shape[0], x.shape[1])
    let tokens = x.shape[2] * x.shape[3]
    let inner = block.projectIn.outFeatures
    let output = arena.tensor(x.shape)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let normalised = arena.tensor(x.shape)
    block.norm.groupNorm(compute, x, into: normalised)
    let tokensIn = arena.tensor([batch, tokens, channels])
    compute.transposeLastTwo(normalised.reshaped([batch, channels, tokens]), into: tokensIn)
    let h = arena.tensor([batch, tokens, inner])
    block.projectIn(compute, tokensIn, into: h)
    let normed = arena.tensor(h.shape), query = arena.tensor(h.shape), key = arena.tensor(h.shape)
    let value = arena.tensor(h.shape), attended = arena.tensor(h.shape)
    let feedForward = arena.tensor([batch, tokens, block.blocks[0].feedForwardIn.outFeatures])
    let gated = arena.tensor([batch, tokens, block.blocks[0].feedForwardOut.inFeatures])
    for layer in block.blocks {
      layer.norm1.layerNorm(compute, h, into: normed)
      layer.selfQuery(compute, normed, into: query)
      layer.selfKey(compute, normed, into: key)
      layer.selfValue(compute, normed, into: value)
      compute.attention(query: query, key: key, value: value, headCount: block.headCount, into: attended)
      layer.selfOut(compute, attended, into: h, accumulate: true)

      layer.norm2.layerNorm(compute, h, into: normed)
      layer.crossQuery(compute, normed, into: query)
      let keys = cache.keys[transformerIndex], values = cache.values[transformerIndex]
      transformerIndex += 1
      for sample in 0..<batch {
        compute.attention(
          query: query.slice(sample..<sample + 1), key: keys[sample], value: values[sample],
          headCount: block.headCount, into: attended.slice(sample..<sample + 1))
      }
      layer.crossOut(compute, attended, into: h, accumulate: true)

      layer.norm3.layerNorm(compute, h, into: normed)
      layer.feedForwardIn(compute, normed, into: feedForward)
      compute.geglu(feedForward, into: gated)
      layer.feedForwardOut(compute, gated, into: h, accumulate: true)
    }
    block.projectOut(compute, h, into: tokensIn)
    compute.transposeLastTwo(tokensIn, into: output.reshaped([batch, channels, tokens]))
    compute.add(output, x, into: output)
    return output
  }
}
