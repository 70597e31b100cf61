/// One tensor of a model template: its single-file key, shape and component.
public struct TemplateTensor: Sendable, Equatable {
  public let key: String
  public let shape: [Int]
  public let component: Component
  /// Whether the tensor is an integer buffer (CLIP `position_ids`) rather than a weight.
  public let isInteger: Bool

  /// Elements in the tensor (1 for the scalar `logit_scale`).
  public var parameterCount: Int { shape.reduce(1, *) }

  /// Creates an entry (templates normally come from `SDXLTemplate`).
  public init(key: String, shape: [Int], component: Component, isInteger: Bool = false) {
    self.key = key
    self.shape = shape
    self.component = component
    self.isInteger = isInteger
  }
}

/// The SDXL UNet's hyper-parameters (sgm `openaimodel.UNetModel`).
public struct UNetConfig: Sendable, Equatable, Codable {
  public var modelChannels: Int
  public var channelMultipliers: [Int]
  public var residualBlocksPerLevel: Int
  /// Transformer blocks per level (SDXL: `[0, 2, 10]`); the middle block uses the last level's.
  public var transformerDepth: [Int]
  public var contextDimension: Int
  /// Width of the `label_emb` input (pooled text embedding + 6 × 256 size embeddings); nil for SD1/SD2.
  public var admChannels: Int?
  public var inChannels: Int
  public var outChannels: Int
  public var headDimension: Int
  /// Transformer blocks in `middle_block.1`; nil means the last level's depth (the SDXL base
  /// convention). The refiner (4 with a last level of 0) and SD1/SD2 (1 with 0) set it.
  public var middleTransformerDepth: Int?
  /// Whether `proj_in`/`proj_out` are Linear (SDXL, SD2) rather than 1×1 convolutions (SD1).
  public var linearProjection: Bool

  /// SDXL base 1.0.
  public static let sdxl = UNetConfig(
    modelChannels: 320, channelMultipliers: [1, 2, 4], residualBlocksPerLevel: 2,
    transformerDepth: [0, 2, 10], contextDimension: 2048, admChannels: 2816, inChannels: 4,
    outChannels: 4, headDimension: 64)

  /// SDXL refiner 1.0 (sgm `sd_xl_refiner.yaml`): 4 levels, depth 4, context 1280, ADM 2560.
  public static let sdxlRefiner = UNetConfig(
    modelChannels: 384, channelMultipliers: [1, 2, 4, 4], residualBlocksPerLevel: 2,
    transformerDepth: [0, 4, 4, 0], contextDimension: 1280, admChannels: 2560, inChannels: 4,
    outChannels: 4, headDimension: 64, middleTransformerDepth: 4)

  /// SD 1.x (`v1-inference.yaml`): 1×1-conv projections, CLIP-L context 768, no ADM.
  public static let sd1 = UNetConfig(
    modelChannels: 320, channelMultipliers: [1, 2, 4, 4], residualBlocksPerLevel: 2,
    transformerDepth: [1, 1, 1, 0], contextDimension: 768, admChannels: nil, inChannels: 4,
    outChannels: 4, headDimension: 40, middleTransformerDepth: 1, linearProjection: false)

  /// SD 2.x (`v2-inference.yaml`): linear projections, OpenCLIP-H context 1024.
  public static let sd2 = UNetConfig(
    modelChannels: 320, channelMultipliers: [1, 2, 4, 4], residualBlocksPerLevel: 2,
    transformerDepth: [1, 1, 1, 0], contextDimension: 1024, admChannels: nil, inChannels: 4,
    outChannels: 4, headDimension: 64, middleTransformerDepth: 1)

  public init(
    modelChannels: Int, channelMultipliers: [Int], residualBlocksPerLevel: Int, transformerDepth: [Int],
    contextDimension: Int, admChannels: Int?, inChannels: Int, outChannels: Int, headDimension: Int,
    middleTransformerDepth: Int? = nil, linearProjection: Bool = true
  ) {
    self.modelChannels = modelChannels
    self.channelMultipliers = channelMultipliers
    self.residualBlocksPerLevel = residualBlocksPerLevel
    self.transformerDepth = transformerDepth
    self.contextDimension = contextDimension
    self.admChannels = admChannels
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.headDimension = headDimension
    self.middleTransformerDepth = middleTransformerDepth
    self.linearProjection = linearProjection
  }

  /// Transformer blocks in the middle block, resolved.
  public var middleDepth: Int { middleTransformerDepth ?? transformerDepth.last ?? 0 }

  /// Width of the timestep embedding (4 × model channels).
  public var timeEmbedDimension: Int { modelChannels * 4 }
}

/// A CLIP-style text transformer's hyper-parameters.
public struct TextEncoderConfig: Sendable, Equatable, Codable {
  public var vocabularySize: Int
  public var contextLength: Int
  public var width: Int
  public var layers: Int
  public var mlpWidth: Int
  /// Output width of `text_projection` (OpenCLIP only).
  public var projectionDimension: Int?

  public static let clipL = TextEncoderConfig(
    vocabularySize: 49408, contextLength: 77, width: 768, layers: 12, mlpWidth: 3072, projectionDimension: nil)
  public static let clipG = TextEncoderConfig(
    vocabularySize: 49408, contextLength: 77, width: 1280, layers: 32, mlpWidth: 5120, projectionDimension: 1280)

  public init(
    vocabularySize: Int, contextLength: Int, width: Int, layers: Int, mlpWidth: Int, projectionDimension: Int?
  ) {
    self.vocabularySize = vocabularySize
    self.contextLength = contextLength
    self.width = width
    self.layers = layers
    self.mlpWidth = mlpWidth
    self.projectionDimension = projectionDimension
  }
}

/// The autoencoder's hyper-parameters (sgm `model.Encoder`/`Decoder`).
public struct VAEConfig: Sendable, Equatable, Codable {
  public var baseChannels: Int
  public var channelMultipliers: [Int]
  public var residualBlocks: Int
  public var latentChannels: Int
  public var imageChannels: Int

  public static let sdxl = VAEConfig(
    baseChannels: 128, channelMultipliers: [1, 2, 4, 4], residualBlocks: 2, latentChannels: 4, imageChannels: 3)

  public init(
    baseChannels: Int, channelMultipliers: [Int], residualBlocks: Int, latentChannels: Int, imageChannels: Int
  ) {
    self.baseChannels = baseChannels
    self.channelMultipliers = channelMultipliers
    self.residualBlocks = residualBlocks
    self.latentChannels = latentChannels
    self.imageChannels = imageChannels
  }
}

/// The full list of tensors an SDXL-topology single-file checkpoint holds, generated from the
/// hyper-parameters rather than pasted, so the same code describes full SDXL and the tiny fixtures.
public struct SDXLTemplate: Sendable {
  public var unet: UNetConfig
  public var clipL: TextEncoderConfig
  public var clipG: TextEncoderConfig
  public var vae: VAEConfig
  /// Whether the file carries CLIP-L. The refiner has none: its only text encoder is bigG, stored
  /// as embedder 0 (`conditioner.embedders.0.model.`).
  public var hasClipL: Bool

  /// SDXL base 1.0 (and every finetune of it: Pony, Illustrious, NoobAI, RouWei).
  public static let sdxlBase = SDXLTemplate(unet: .sdxl, clipL: .clipL, clipG: .clipG, vae: .sdxl)

  /// SDXL refiner 1.0: refiner UNet, bigG as embedder 0, the same VAE; no CLIP-L.
  public static let sdxlRefiner = SDXLTemplate(
    unet: .sdxlRefiner, clipL: .clipL, clipG: .clipG, vae: .sdxl, hasClipL: false)

  public init(
    unet: UNetConfig, clipL: TextEncoderConfig, clipG: TextEncoderConfig, vae: VAEConfig,
    hasClipL: Bool = true
  ) {
    self.unet = unet
    self.clipL = clipL
    self.clipG = clipG
    self.vae = vae
    self.hasClipL = hasClipL
  }

  /// Every tensor, in a stable order: UNet, CLIP-L, OpenCLIP-G, VAE.
  public var tensors: [TemplateTensor] {
    Component.allCases.flatMap { tensors(of: $0) }
  }

  /// The tensors of one component (empty for markers, EMA, buffers and "other").
  public func tensors(of component: Component) -> [TemplateTensor] {
    switch component {
    case .unet: return SDXLTemplate.unetTensors(unet)
    case .clipL: return hasClipL ? SDXLTemplate.clipLTensors(clipL) : []
    case .clipG:
      return SDXLTemplate.clipGTensors(
        clipG, prefix: hasClipL ? SingleFilePrefix.clipG : SingleFilePrefix.refinerClipG)
    case .vae: return SDXLTemplate.vaeTensors(vae)
    case .markers, .ema, .trainingBuffers, .other: return []
    }
  }

  /// The prefix of the OpenCLIP-G keys in this template's files.
  public var clipGPrefix: String { hasClipL ? SingleFilePrefix.clipG : SingleFilePrefix.refinerClipG }

  // MARK: - UNet (sgm openaimodel.UNetModel)

  /// The UNet's tensors for any `UNetConfig` (SDXL, refiner, SD1/SD2, reduced test widths).
  public static func unetTensors(_ c: UNetConfig) -> [TemplateTensor] {
    var b = Builder(prefix: SingleFilePrefix.unet, component: .unet)
    let time = c.timeEmbedDimension
    b.linear("time_embed.0", c.modelChannels, time)
    b.linear("time_embed.2", time, time)
    if let adm = c.admChannels {
      b.linear("label_emb.0.0", adm, time)
      b.linear("label_emb.0.2", time, time)
    }
    b.conv("input_blocks.0.0", c.inChannels, c.modelChannels, 3)
    var skipChannels = [c.modelChannels]
    var channels = c.modelChannels
    var block = 1
    for (level, multiplier) in c.channelMultipliers.enumerated() {
      for _ in 0..<c.residualBlocksPerLevel {
        let out = c.modelChannels * multiplier
        b.resBlock("input_blocks.\(block).0", channels, out, time)
        channels = out
        if c.transformerDepth[level] > 0 {
          b.spatialTransformer(
            "input_blocks.\(block).1", channels, c.transformerDepth[level], c.contextDimension,
            linear: c.linearProjection)
        }
        skipChannels.append(channels)
        block += 1
      }
      if level < c.channelMultipliers.count - 1 {
        b.conv("input_blocks.\(block).0.op", channels, channels, 3)
        skipChannels.append(channels)
        block += 1
      }
    }
    b.resBlock("middle_block.0", channels, channels, time)
    b.spatialTransformer(
      "middle_block.1", channels, c.middleDepth, c.contextDimension, linear: c.linearProjection)
    b.resBlock("middle_block.2", channels, channels, time)
    block = 0
    for (level, multiplier) in c.channelMultipliers.enumerated().reversed() {
      for index in 0...c.residualBlocksPerLevel {
        let skip = skipChannels.removeLast()
        let out = c.modelChannels * multiplier
        b.resBlock("output_blocks.\(block).0", channels + skip, out, time)
        channels = out
        var next = 1
        if c.transformerDepth[level] > 0 {
          b.spatialTransformer(
            "output_blocks.\(block).1", channels, c.transformerDepth[level], c.contextDimension,
            linear: c.linearProjection)
          next = 2
        }
        if level > 0 && index == c.residualBlocksPerLevel {
          b.conv("output_blocks.\(block).\(next).conv", channels, channels, 3)
        }
        block += 1
      }
    }
    b.norm("out.0", channels)
    b.conv("out.2", channels, c.outChannels, 3)
    return b.tensors
  }

  // MARK: - Text encoders

  /// CLIP-L in Hugging Face `CLIPTextModel` naming under the SDXL embedder-0 prefix.
  public static func clipLTensors(_ c: TextEncoderConfig) -> [TemplateTensor] {
    var b = Builder(prefix: SingleFilePrefix.clipL + "text_model.", component: .clipL)
    b.add("embeddings.token_embedding.weight", [c.vocabularySize, c.width])
    b.add("embeddings.position_embedding.weight", [c.contextLength, c.width])
    b.add("embeddings.position_ids", [1, c.contextLength], integer: true)
    for layer in 0..<c.layers {
      let p = "encoder.layers.\(layer)."
      for projection in ["k_proj", "v_proj", "q_proj", "out_proj"] {
        b.linear(p + "self_attn." + projection, c.width, c.width)
      }
      b.norm(p + "layer_norm1", c.width)
      b.linear(p + "mlp.fc1", c.width, c.mlpWidth)
      b.linear(p + "mlp.fc2", c.mlpWidth, c.width)
      b.norm(p + "layer_norm2", c.width)
    }
    b.norm("final_layer_norm", c.width)
    return b.tensors
  }

  /// OpenCLIP-G in open_clip naming (fused `in_proj`, `text_projection`, `logit_scale`).
  public static func clipGTensors(
    _ c: TextEncoderConfig, prefix: String = SingleFilePrefix.clipG
  ) -> [TemplateTensor] {
    var b = Builder(prefix: prefix, component: .clipG)
    b.add("token_embedding.weight", [c.vocabularySize, c.width])
    b.add("positional_embedding", [c.contextLength, c.width])
    for layer in 0..<c.layers {
      let p = "transformer.resblocks.\(layer)."
      b.add(p + "attn.in_proj_weight", [3 * c.width, c.width])
      b.add(p + "attn.in_proj_bias", [3 * c.width])
      b.linear(p + "attn.out_proj", c.width, c.width)
      b.norm(p + "ln_1", c.width)
      b.norm(p + "ln_2", c.width)
      b.linear(p + "mlp.c_fc", c.width, c.mlpWidth)
      b.linear(p + "mlp.c_proj", c.mlpWidth, c.width)
    }
    b.norm("ln_final", c.width)
    // Stored [width, projection] and applied as x @ text_projection (open_clip).
    b.add("text_projection", [c.width, c.projectionDimension ?? c.width])
    b.add("logit_scale", [])
    return b.tensors
  }

  // MARK: - VAE (sgm model.Encoder / Decoder)

  /// The autoencoder (encoder, decoder, quant convs) in LDM naming.
  public static func vaeTensors(_ c: VAEConfig) -> [TemplateTensor] {
    var b = Builder(prefix: SingleFilePrefix.vae, component: .vae)
    let widths = c.channelMultipliers.map { $0 * c.baseChannels }
    let top = widths.last ?? c.baseChannels
    b.conv("encoder.conv_in", c.imageChannels, c.baseChannels, 3)
    var channels = c.baseChannels
    for (level, width) in widths.enumerated() {
      for block in 0..<c.residualBlocks {
        b.vaeResBlock("encoder.down.\(level).block.\(block)", channels, width)
        channels = width
      }
      if level < widths.count - 1 { b.conv("encoder.down.\(level).downsample.conv", channels, channels, 3) }
    }
    b.vaeMid("encoder.mid", top)
    b.norm("encoder.norm_out", top)
    b.conv("encoder.conv_out", top, 2 * c.latentChannels, 3)
    b.conv("decoder.conv_in", c.latentChannels, top, 3)
    b.vaeMid("decoder.mid", top)
    channels = top
    var decoder: [(String, [TemplateTensor])] = []
    for (level, width) in widths.enumerated().reversed() {
      var levelBuilder = Builder(prefix: SingleFilePrefix.vae, component: .vae)
      for block in 0...c.residualBlocks {
        levelBuilder.vaeResBlock("decoder.up.\(level).block.\(block)", channels, width)
        channels = width
      }
      if level > 0 { levelBuilder.conv("decoder.up.\(level).upsample.conv", channels, channels, 3) }
      decoder.append(("\(level)", levelBuilder.tensors))
    }
    // Listed by level index ascending, as state dicts list them.
    for (_, tensors) in decoder.reversed() { b.tensors += tensors }
    b.norm("decoder.norm_out", c.baseChannels)
    b.conv("decoder.conv_out", c.baseChannels, c.imageChannels, 3)
    b.conv("quant_conv", 2 * c.latentChannels, 2 * c.latentChannels, 1)
    b.conv("post_quant_conv", c.latentChannels, c.latentChannels, 1)
    return b.tensors
  }
}

/// Accumulates template tensors under a prefix, with helpers named after the layer kinds.
private struct Builder {
  let prefix: String
  let component: Component
  var tensors: [TemplateTensor] = []

  mutating func add(_ key: String, _ shape: [Int], integer: Bool = false) {
    tensors.append(TemplateTensor(key: prefix + key, shape: shape, component: component, isInteger: integer))
  }

  mutating func linear(_ name: String, _ input: Int, _ output: Int) {
    add(name + ".weight", [output, input])
    add(name + ".bias", [output])
  }

  mutating func conv(_ name: String, _ input: Int, _ output: Int, _ kernel: Int) {
    add(name + ".weight", [output, input, kernel, kernel])
    add(name + ".bias", [output])
  }

  mutating func norm(_ name: String, _ channels: Int) {
    add(name + ".weight", [channels])
    add(name + ".bias", [channels])
  }

  mutating func resBlock(_ name: String, _ input: Int, _ output: Int, _ embedding: Int) {
    norm(name + ".in_layers.0", input)
    conv(name + ".in_layers.2", input, output, 3)
    linear(name + ".emb_layers.1", embedding, output)
    norm(name + ".out_layers.0", output)
    conv(name + ".out_layers.3", output, output, 3)
    if input != output { conv(name + ".skip_connection", input, output, 1) }
  }

  mutating func spatialTransformer(
    _ name: String, _ channels: Int, _ depth: Int, _ context: Int, linear isLinear: Bool
  ) {
    norm(name + ".norm", channels)
    // SD1 projects with 1×1 convolutions, SDXL/SD2 with Linear (use_linear_in_transformer).
    if isLinear {
      linear(name + ".proj_in", channels, channels)
    } else {
      conv(name + ".proj_in", channels, channels, 1)
    }
    for index in 0..<depth {
      let p = name + ".transformer_blocks.\(index)."
      for attention in ["attn1", "attn2"] {
        let source = attention == "attn1" ? channels : context
        add(p + attention + ".to_q.weight", [channels, channels])
        add(p + attention + ".to_k.weight", [channels, source])
        add(p + attention + ".to_v.weight", [channels, source])
        linear(p + attention + ".to_out.0", channels, channels)
      }
      linear(p + "ff.net.0.proj", channels, 8 * channels)
      linear(p + "ff.net.2", 4 * channels, channels)
      norm(p + "norm1", channels)
      norm(p + "norm2", channels)
      norm(p + "norm3", channels)
    }
    if isLinear {
      linear(name + ".proj_out", channels, channels)
    } else {
      conv(name + ".proj_out", channels, channels, 1)
    }
  }

  mutating func vaeResBlock(_ name: String, _ input: Int, _ output: Int) {
    norm(name + ".norm1", input)
    conv(name + ".conv1", input, output, 3)
    norm(name + ".norm2", output)
    conv(name + ".conv2", output, output, 3)
    if input != output { conv(name + ".nin_shortcut", input, output, 1) }
  }

  mutating func vaeMid(_ name: String, _ channels: Int) {
    vaeResBlock(name + ".block_1", channels, channels)
    norm(name + ".attn_1.norm", channels)
    for projection in ["q", "k", "v", "proj_out"] { conv(name + ".attn_1." + projection, channels, channels, 1) }
    vaeResBlock(name + ".block_2", channels, channels)
  }
}
