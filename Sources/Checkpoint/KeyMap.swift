/// A diffusers pipeline subfolder that holds one component's weights.
public enum DiffusersSubfolder: String, CaseIterable, Codable, Sendable {
  case unet
  case vae
  /// CLIP-L as Hugging Face `CLIPTextModel`.
  case textEncoder = "text_encoder"
  /// OpenCLIP-G as Hugging Face `CLIPTextModelWithProjection`.
  case textEncoder2 = "text_encoder_2"

  /// The component the folder holds.
  public var component: Component {
    switch self {
    case .unet: return .unet
    case .vae: return .vae
    case .textEncoder: return .clipL
    case .textEncoder2: return .clipG
    }
  }
}

/// How a tensor's values change on the way from the single-file layout to diffusers (the way back
/// is the inverse). Names alone never need more than this.
public enum KeyTransform: Sendable, Equatable, Codable {
  /// Same values, same shape.
  case identity
  /// Single-file `[out, in, 1, 1]` becomes diffusers `[out, in]` (VAE mid-attention q/k/v/proj_out
  /// are 1×1 convolutions in LDM and Linear in diffusers); back: append the two unit dimensions.
  case dropUnitSpatialDimensions
  /// The diffusers matrix is the transpose of the single-file one (OpenCLIP `text_projection`
  /// is applied as `x @ P`, HF `text_projection` as a Linear: `x @ Wᵀ`). kohya's converter does not
  /// transpose, so kohya-made files disagree with diffusers and ComfyUI here.
  case transpose
  /// The single-file tensor is `count` diffusers tensors stacked along dimension 0; this is part
  /// `index` (OpenCLIP fused `attn.in_proj_weight/bias` = q, k, v in that order).
  case rowSlice(index: Int, count: Int)

  /// The diffusers shape of a tensor whose single-file shape is `shape`, or nil when the shape
  /// cannot carry this transform (wrong rank, rows not divisible).
  public func diffusersShape(fromSingleFile shape: [Int]) -> [Int]? {
    switch self {
    case .identity: return shape
    case .dropUnitSpatialDimensions:
      guard shape.count == 4, shape[2] == 1, shape[3] == 1 else { return nil }
      return [shape[0], shape[1]]
    case .transpose:
      guard shape.count == 2 else { return nil }
      return [shape[1], shape[0]]
    case .rowSlice(_, let count):
      guard let rows = shape.first, count > 0, rows % count == 0 else { return nil }
      return [rows / count] + shape.dropFirst()
    }
  }
}

/// One diffusers tensor and the single-file tensor it comes from.
public struct KeyCorrespondence: Sendable, Equatable, Codable {
  /// The full single-file key, e.g. `model.diffusion_model.input_blocks.1.0.in_layers.0.weight`.
  public var singleFileKey: String
  /// The diffusers subfolder whose weights file holds the tensor.
  public var subfolder: DiffusersSubfolder
  /// The key inside that weights file, e.g. `down_blocks.0.resnets.0.norm1.weight`.
  public var diffusersKey: String
  /// How the values change from single-file to diffusers.
  public var transform: KeyTransform

  /// Creates a correspondence.
  public init(
    singleFileKey: String, subfolder: DiffusersSubfolder, diffusersKey: String, transform: KeyTransform
  ) {
    self.singleFileKey = singleFileKey
    self.subfolder = subfolder
    self.diffusersKey = diffusersKey
    self.transform = transform
  }
}

/// What becomes of a single-file key in a diffusers pipeline.
public enum SingleFileKeyFate: Sendable, Equatable {
  /// It becomes these tensors (one, or three for a fused OpenCLIP `in_proj`).
  case mapped([KeyCorrespondence])
  /// It has no diffusers home and is dropped (e.g. OpenCLIP `logit_scale`); the reason says why.
  case dropped(reason: String)
  /// Not a key of the components this map knows (markers, EMA, buffers, or a malformed name).
  case unknown
}

/// The name map between the single-file (SGM/LDM) layout and a diffusers pipeline, for SDXL base,
/// the refiner and reduced-width SDXL-topology models. It reproduces diffusers'
/// `single_file_utils.convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
/// `convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint` (checked against their output in
/// `Fixtures/keymap/`), key by key and in both directions, without touching any values: converters
/// stream each tensor through `KeyTransform`.
///
/// The UNet's index arithmetic needs only the topology: residual blocks per level, the number of
/// levels and which levels have attention; the VAE's needs the number of levels (its decoder levels
/// are numbered in reverse in diffusers).
public struct DiffusersKeyMap: Sendable {
  /// ResNet blocks per UNet level (diffusers `layers_per_block`).
  public let residualBlocksPerLevel: Int
  /// For each UNet level, shallow to deep, whether it has a spatial transformer.
  public let levelHasAttention: [Bool]
  /// Levels of the VAE (`len(ch_mult)`).
  public let vaeLevels: Int
  /// Prefix of the OpenCLIP-G keys (embedder 1 in the base model, embedder 0 in the refiner).
  public let clipGPrefix: String

  /// A map for the topology of `template`.
  public init(template: SDXLTemplate = .sdxlBase) {
    self.init(
      residualBlocksPerLevel: template.unet.residualBlocksPerLevel,
      levelHasAttention: template.unet.transformerDepth.map { $0 > 0 },
      vaeLevels: template.vae.channelMultipliers.count, clipGPrefix: template.clipGPrefix)
  }

  /// A map for an explicit topology.
  public init(
    residualBlocksPerLevel: Int, levelHasAttention: [Bool], vaeLevels: Int,
    clipGPrefix: String = SingleFilePrefix.clipG
  ) {
    self.residualBlocksPerLevel = max(residualBlocksPerLevel, 1)
    self.levelHasAttention = levelHasAttention
    self.vaeLevels = vaeLevels
    self.clipGPrefix = clipGPrefix
  }

  /// The topology of a diffusers UNet, read from its key names (`down_blocks.N.resnets.M`,
  /// `down_blocks.N.attentions.M`), so a lone diffusers UNet file can be mapped without its
  /// `config.json`. Nil when the keys are not a diffusers UNet.
  public static func unetTopology(diffusersKeys keys: some Sequence<String>) -> (
    residualBlocksPerLevel: Int, levelHasAttention: [Bool]
  )? {
    var levels = 0
    var resnets = 0
    var attention = Set<Int>()
    for key in keys where key.hasPrefix("down_blocks.") {
      let parts = key.split(separator: ".")
      guard parts.count > 3, let level = Int(parts[1]), let index = Int(parts[3]) else { continue }
      levels = max(levels, level + 1)
      if parts[2] == "resnets" && level == 0 { resnets = max(resnets, index + 1) }
      if parts[2] == "attentions" { attention.insert(level) }
    }
    guard levels > 0, resnets > 0 else { return nil }
    return (resnets, (0..<levels).map { attention.contains($0) })
  }

  // MARK: - Single-file → diffusers

  /// Every diffusers tensor of `template`'s pipeline with its source, in template order (three per
  /// fused OpenCLIP `in_proj`; `logit_scale` has none). What a single-file → diffusers converter
  /// writes, subfolder by subfolder.
  public func correspondences(for template: SDXLTemplate) -> [KeyCorrespondence] {
    template.tensors.flatMap { tensor -> [KeyCorrespondence] in
      if case .mapped(let correspondences) = diffusers(forSingleFileKey: tensor.key) { return correspondences }
      return []
    }
  }

  /// What becomes of `key` (a full single-file key) in a diffusers pipeline.
  public func diffusers(forSingleFileKey key: String) -> SingleFileKeyFate {
    if key.hasPrefix(SingleFilePrefix.unet) {
      let local = String(key.dropFirst(SingleFilePrefix.unet.count))
      guard let name = unetToDiffusers(local) else { return .unknown }
      return .mapped([.init(singleFileKey: key, subfolder: .unet, diffusersKey: name, transform: .identity)])
    }
    if key.hasPrefix(SingleFilePrefix.vae) {
      let local = String(key.dropFirst(SingleFilePrefix.vae.count))
      guard let (name, transform) = vaeToDiffusers(local) else { return .unknown }
      return .mapped([.init(singleFileKey: key, subfolder: .vae, diffusersKey: name, transform: transform)])
    }
    if clipGPrefix != SingleFilePrefix.clipL, key.hasPrefix(SingleFilePrefix.clipL) {
      let local = String(key.dropFirst(SingleFilePrefix.clipL.count))
      // diffusers convert_ldm_clip_checkpoint only strips the prefix: the rest is HF naming.
      guard local.hasPrefix("text_model."), local.count > "text_model.".count else { return .unknown }
      return .mapped([.init(singleFileKey: key, subfolder: .textEncoder, diffusersKey: local, transform: .identity)])
    }
    if key.hasPrefix(clipGPrefix) {
      return clipGToDiffusers(key, local: String(key.dropFirst(clipGPrefix.count)))
    }
    return .unknown
  }

  static let resnetNames: [(ldm: String, diffusers: String)] = [
    ("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"),
  ]
  static let unetDirect: [(ldm: String, diffusers: String)] = [
    ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
    // SDXL's ADM input is diffusers' "text_time" addition embedding.
    ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"),
  ]
  /// Sub-module names of a spatial transformer, identical on both sides.
  static let attentionHeads = ["norm.", "proj_in.", "proj_out.", "transformer_blocks."]

  /// `name.weight` / `name.bias` split into the module path and the parameter suffix.
  static func splitParameter(_ key: String) -> (module: String, parameter: String)? {
    for parameter in [".weight", ".bias"] where key.hasSuffix(parameter) && key.count > parameter.count {
      return (String(key.dropLast(parameter.count)), parameter)
    }
    return nil
  }

  static func resnetToDiffusers(_ rest: String) -> String? {
    guard let (module, parameter) = splitParameter(rest) else { return nil }
    return resnetNames.first { $0.ldm == module }.map { $0.diffusers + parameter }
  }

  static func resnetFromDiffusers(_ rest: String) -> String? {
    guard let (module, parameter) = splitParameter(rest) else { return nil }
    return resnetNames.first { $0.diffusers == module }.map { $0.ldm + parameter }
  }

  static func isAttentionRest(_ rest: String) -> Bool {
    splitParameter(rest) != nil && attentionHeads.contains { rest.hasPrefix($0) }
  }

  /// `input_blocks.N.M.rest` → (N, M, rest).
  static func blockParts(_ key: String, _ head: String) -> (Int, Int, String)? {
    guard key.hasPrefix(head) else { return nil }
    let parts = key.dropFirst(head.count).split(separator: ".", maxSplits: 2)
    guard parts.count == 3, let block = Int(parts[0]), let slot = Int(parts[1]) else { return nil }
    return (block, slot, String(parts[2]))
  }

  func unetToDiffusers(_ key: String) -> String? {
    if let (module, parameter) = Self.splitParameter(key),
      let direct = Self.unetDirect.first(where: { $0.ldm == module })
    {
      return direct.diffusers + parameter
    }
    let stride = residualBlocksPerLevel + 1
    let levels = levelHasAttention.count
    if let (block, slot, rest) = Self.blockParts(key, "input_blocks."), block > 0 {
      if block % stride == 0 {
        // Downsampler closing level block/stride − 1.
        let level = block / stride - 1
        guard slot == 0, level < levels - 1, let (module, parameter) = Self.splitParameter(rest),
          module == "op"
        else { return nil }
        return "down_blocks.\(level).downsamplers.0.conv" + parameter
      }
      let level = (block - 1) / stride
      let layer = (block - 1) % stride
      guard level < levels else { return nil }
      if slot == 0 { return Self.resnetToDiffusers(rest).map { "down_blocks.\(level).resnets.\(layer).\($0)" } }
      guard slot == 1, levelHasAttention[level], Self.isAttentionRest(rest) else { return nil }
      return "down_blocks.\(level).attentions.\(layer).\(rest)"
    }
    if key.hasPrefix("middle_block.") {
      // middle_block.K.rest (no inner slot): ResBlocks 0 and 2, transformer 1.
      let parts = key.dropFirst("middle_block.".count).split(separator: ".", maxSplits: 1)
      guard parts.count == 2, let block = Int(parts[0]) else { return nil }
      let rest = String(parts[1])
      switch block {
      case 0, 2: return Self.resnetToDiffusers(rest).map { "mid_block.resnets.\(block / 2).\($0)" }
      case 1: return Self.isAttentionRest(rest) ? "mid_block.attentions.0.\(rest)" : nil
      default: return nil
      }
    }
    if let (block, slot, rest) = Self.blockParts(key, "output_blocks.") {
      let upLevel = block / stride
      let layer = block % stride
      guard upLevel < levels else { return nil }
      let hasAttention = levelHasAttention[levels - 1 - upLevel]
      let upsamplerSlot = hasAttention ? 2 : 1
      if slot == 0 { return Self.resnetToDiffusers(rest).map { "up_blocks.\(upLevel).resnets.\(layer).\($0)" } }
      if slot == upsamplerSlot, layer == residualBlocksPerLevel, upLevel < levels - 1,
        let (module, parameter) = Self.splitParameter(rest), module == "conv"
      {
        return "up_blocks.\(upLevel).upsamplers.0.conv" + parameter
      }
      guard slot == 1, hasAttention, Self.isAttentionRest(rest) else { return nil }
      return "up_blocks.\(upLevel).attentions.\(layer).\(rest)"
    }
    return nil
  }

  static let vaeDirect: [(ldm: String, diffusers: String)] = [
    ("encoder.conv_in", "encoder.conv_in"), ("encoder.conv_out", "encoder.conv_out"),
    ("encoder.norm_out", "encoder.conv_norm_out"), ("decoder.conv_in", "decoder.conv_in"),
    ("decoder.conv_out", "decoder.conv_out"), ("decoder.norm_out", "decoder.conv_norm_out"),
    ("quant_conv", "quant_conv"), ("post_quant_conv", "post_quant_conv"),
  ]
  static let vaeResnetNames: [(ldm: String, diffusers: String)] = [
    ("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
    ("nin_shortcut", "conv_shortcut"),
  ]
  static let vaeAttentionNames: [(ldm: String, diffusers: String)] = [
    ("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"),
  ]

  static func rename(_ rest: String, _ table: [(ldm: String, diffusers: String)], forward: Bool) -> String? {
    guard let (module, parameter) = splitParameter(rest) else { return nil }
    return table.first { (forward ? $0.ldm : $0.diffusers) == module }.map {
      (forward ? $0.diffusers : $0.ldm) + parameter
    }
  }

  func vaeToDiffusers(_ key: String) -> (String, KeyTransform)? {
    if let (module, parameter) = Self.splitParameter(key),
      let direct = Self.vaeDirect.first(where: { $0.ldm == module })
    {
      return (direct.diffusers + parameter, .identity)
    }
    for side in ["encoder", "decoder"] {
      let mid = side + ".mid."
      guard key.hasPrefix(mid) else { continue }
      let rest = String(key.dropFirst(mid.count))
      for (index, block) in ["block_1.", "block_2."].enumerated() where rest.hasPrefix(block) {
        guard let name = Self.rename(String(rest.dropFirst(block.count)), Self.vaeResnetNames, forward: true)
        else { return nil }
        return ("\(side).mid_block.resnets.\(index).\(name)", .identity)
      }
      guard rest.hasPrefix("attn_1."),
        let name = Self.rename(String(rest.dropFirst("attn_1.".count)), Self.vaeAttentionNames, forward: true)
      else { return nil }
      // The four projections are 1×1 convs in LDM, Linear in diffusers; norm and biases unchanged.
      let transform: KeyTransform =
        name.hasSuffix(".weight") && !name.hasPrefix("group_norm") ? .dropUnitSpatialDimensions : .identity
      return ("\(side).mid_block.attentions.0.\(name)", transform)
    }
    let isEncoder = key.hasPrefix("encoder.down.")
    guard isEncoder || key.hasPrefix("decoder.up.") else { return nil }
    let head = isEncoder ? "encoder.down." : "decoder.up."
    let parts = key.dropFirst(head.count).split(separator: ".", maxSplits: 1)
    guard parts.count == 2, let level = Int(parts[0]), level < vaeLevels else { return nil }
    let rest = String(parts[1])
    // Decoder levels are numbered deepest-first in diffusers.
    let target = isEncoder ? "encoder.down_blocks.\(level)" : "decoder.up_blocks.\(vaeLevels - 1 - level)"
    let sampler = isEncoder ? "downsample.conv" : "upsample.conv"
    if let (module, parameter) = Self.splitParameter(rest), module == sampler {
      let last = isEncoder ? level == vaeLevels - 1 : level == 0
      guard !last else { return nil }
      return ("\(target).\(isEncoder ? "downsamplers" : "upsamplers").0.conv\(parameter)", .identity)
    }
    let blockParts = rest.split(separator: ".", maxSplits: 2)
    guard blockParts.count == 3, blockParts[0] == "block", let index = Int(blockParts[1]),
      let name = Self.rename(String(blockParts[2]), Self.vaeResnetNames, forward: true)
    else { return nil }
    return ("\(target).resnets.\(index).\(name)", .identity)
  }

  static let clipGLayerNames: [(ldm: String, diffusers: String)] = [
    ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj"),
  ]

  func clipGToDiffusers(_ key: String, local: String) -> SingleFileKeyFate {
    func one(_ name: String, _ transform: KeyTransform = .identity) -> SingleFileKeyFate {
      .mapped([.init(singleFileKey: key, subfolder: .textEncoder2, diffusersKey: name, transform: transform)])
    }
    switch local {
    case "token_embedding.weight": return one("text_model.embeddings.token_embedding.weight")
    case "positional_embedding": return one("text_model.embeddings.position_embedding.weight")
    case "ln_final.weight": return one("text_model.final_layer_norm.weight")
    case "ln_final.bias": return one("text_model.final_layer_norm.bias")
    case "text_projection": return one("text_projection.weight", .transpose)
    case "logit_scale":
      return .dropped(reason: "CLIP's contrastive temperature; CLIPTextModelWithProjection has no such parameter")
    default: break
    }
    let head = "transformer.resblocks."
    guard local.hasPrefix(head) else { return .unknown }
    let parts = local.dropFirst(head.count).split(separator: ".", maxSplits: 1)
    guard parts.count == 2, let layer = Int(parts[0]) else { return .unknown }
    let rest = String(parts[1])
    let layerHead = "text_model.encoder.layers.\(layer)."
    for (suffix, parameter) in [("attn.in_proj_weight", "weight"), ("attn.in_proj_bias", "bias")] where rest == suffix {
      return .mapped(
        ["q_proj", "k_proj", "v_proj"].enumerated().map { index, projection in
          .init(
            singleFileKey: key, subfolder: .textEncoder2,
            diffusersKey: "\(layerHead)self_attn.\(projection).\(parameter)",
            transform: .rowSlice(index: index, count: 3))
        })
    }
    guard let name = Self.rename(rest, Self.clipGLayerNames, forward: true) else { return .unknown }
    return one(layerHead + name)
  }

  // MARK: - Diffusers → single-file

  /// The single-file tensor a diffusers tensor comes from (for a q/k/v projection: the fused
  /// `in_proj` and which third), or nil when `key` is not a tensor of `subfolder` this map knows.
  /// Text-encoder keys are accepted with or without the `text_model.` level (transformers ≥ 5
  /// flattens `CLIPTextModel`); the single-file side always has it.
  public func singleFile(forDiffusersKey key: String, in subfolder: DiffusersSubfolder) -> KeyCorrespondence? {
    func make(_ singleFile: String, _ transform: KeyTransform = .identity) -> KeyCorrespondence {
      .init(singleFileKey: singleFile, subfolder: subfolder, diffusersKey: key, transform: transform)
    }
    switch subfolder {
    case .unet:
      return unetFromDiffusers(key).map { make(SingleFilePrefix.unet + $0) }
    case .vae:
      return vaeFromDiffusers(key).map { make(SingleFilePrefix.vae + $0.0, $0.1) }
    case .textEncoder:
      guard clipGPrefix != SingleFilePrefix.clipL else { return nil }
      let local = Self.withTextModelLevel(key)
      guard local.hasPrefix("text_model."), Self.splitParameter(local) != nil || local.hasSuffix("position_ids")
      else { return nil }
      return make(SingleFilePrefix.clipL + local)
    case .textEncoder2:
      return clipGFromDiffusers(Self.withTextModelLevel(key)).map { make(clipGPrefix + $0.0, $0.1) }
    }
  }

  static func withTextModelLevel(_ key: String) -> String {
    if key.hasPrefix("text_model.") || key.hasPrefix("text_projection.") { return key }
    return "text_model." + key
  }

  func unetFromDiffusers(_ key: String) -> String? {
    if let (module, parameter) = Self.splitParameter(key),
      let direct = Self.unetDirect.first(where: { $0.diffusers == module })
    {
      return direct.ldm + parameter
    }
    let stride = residualBlocksPerLevel + 1
    let levels = levelHasAttention.count
    func parts(_ head: String) -> (Int, String, Int, String)? {
      guard key.hasPrefix(head) else { return nil }
      let p = key.dropFirst(head.count).split(separator: ".", maxSplits: 3)
      guard p.count == 4, let level = Int(p[0]), let index = Int(p[2]), level < levels else { return nil }
      return (level, String(p[1]), index, String(p[3]))
    }
    if let (level, kind, index, rest) = parts("down_blocks.") {
      switch kind {
      case "resnets" where index < residualBlocksPerLevel:
        return Self.resnetFromDiffusers(rest).map { "input_blocks.\(level * stride + index + 1).0.\($0)" }
      case "attentions" where index < residualBlocksPerLevel && levelHasAttention[level] && Self.isAttentionRest(rest):
        return "input_blocks.\(level * stride + index + 1).1.\(rest)"
      case "downsamplers" where index == 0 && level < levels - 1:
        guard let (module, parameter) = Self.splitParameter(rest), module == "conv" else { return nil }
        return "input_blocks.\((level + 1) * stride).0.op\(parameter)"
      default: return nil
      }
    }
    if key.hasPrefix("mid_block.") {
      let p = key.dropFirst("mid_block.".count).split(separator: ".", maxSplits: 2)
      guard p.count == 3, let index = Int(p[1]) else { return nil }
      let rest = String(p[2])
      if p[0] == "resnets", index < 2 {
        return Self.resnetFromDiffusers(rest).map { "middle_block.\(index * 2).\($0)" }
      }
      if p[0] == "attentions", index == 0, Self.isAttentionRest(rest) { return "middle_block.1.\(rest)" }
      return nil
    }
    if let (upLevel, kind, index, rest) = parts("up_blocks.") {
      let hasAttention = levelHasAttention[levels - 1 - upLevel]
      switch kind {
      case "resnets" where index <= residualBlocksPerLevel:
        return Self.resnetFromDiffusers(rest).map { "output_blocks.\(upLevel * stride + index).0.\($0)" }
      case "attentions" where index <= residualBlocksPerLevel && hasAttention && Self.isAttentionRest(rest):
        return "output_blocks.\(upLevel * stride + index).1.\(rest)"
      case "upsamplers" where index == 0 && upLevel < levels - 1:
        guard let (module, parameter) = Self.splitParameter(rest), module == "conv" else { return nil }
        return "output_blocks.\(upLevel * stride + residualBlocksPerLevel).\(hasAttention ? 2 : 1).conv\(parameter)"
      default: return nil
      }
    }
    return nil
  }

  func vaeFromDiffusers(_ key: String) -> (String, KeyTransform)? {
    if let (module, parameter) = Self.splitParameter(key),
      let direct = Self.vaeDirect.first(where: { $0.diffusers == module })
    {
      return (direct.ldm + parameter, .identity)
    }
    for side in ["encoder", "decoder"] {
      let mid = side + ".mid_block."
      guard key.hasPrefix(mid) else { continue }
      let p = key.dropFirst(mid.count).split(separator: ".", maxSplits: 2)
      guard p.count == 3, let index = Int(p[1]) else { return nil }
      let rest = String(p[2])
      if p[0] == "resnets", index < 2 {
        return Self.rename(rest, Self.vaeResnetNames, forward: false).map {
          ("\(side).mid.block_\(index + 1).\($0)", .identity)
        }
      }
      guard p[0] == "attentions", index == 0, let name = Self.rename(rest, Self.vaeAttentionNames, forward: false)
      else { return nil }
      let transform: KeyTransform =
        name.hasSuffix(".weight") && !name.hasPrefix("norm.") ? .dropUnitSpatialDimensions : .identity
      return ("\(side).mid.attn_1.\(name)", transform)
    }
    let isEncoder = key.hasPrefix("encoder.down_blocks.")
    guard isEncoder || key.hasPrefix("decoder.up_blocks.") else { return nil }
    let head = isEncoder ? "encoder.down_blocks." : "decoder.up_blocks."
    let p = key.dropFirst(head.count).split(separator: ".", maxSplits: 3)
    guard p.count == 4, let level = Int(p[0]), let index = Int(p[2]), level < vaeLevels else { return nil }
    let ldmLevel = isEncoder ? level : vaeLevels - 1 - level
    let target = isEncoder ? "encoder.down.\(ldmLevel)" : "decoder.up.\(ldmLevel)"
    let rest = String(p[3])
    switch p[1] {
    case "resnets":
      return Self.rename(rest, Self.vaeResnetNames, forward: false).map {
        ("\(target).block.\(index).\($0)", .identity)
      }
    case "downsamplers" where isEncoder && index == 0 && level < vaeLevels - 1,
      "upsamplers" where !isEncoder && index == 0 && level < vaeLevels - 1:
      guard let (module, parameter) = Self.splitParameter(rest), module == "conv" else { return nil }
      return ("\(target).\(isEncoder ? "downsample" : "upsample").conv\(parameter)", .identity)
    default: return nil
    }
  }

  func clipGFromDiffusers(_ key: String) -> (String, KeyTransform)? {
    switch key {
    case "text_model.embeddings.token_embedding.weight": return ("token_embedding.weight", .identity)
    case "text_model.embeddings.position_embedding.weight": return ("positional_embedding", .identity)
    case "text_model.final_layer_norm.weight": return ("ln_final.weight", .identity)
    case "text_model.final_layer_norm.bias": return ("ln_final.bias", .identity)
    case "text_projection.weight": return ("text_projection", .transpose)
    default: break
    }
    let head = "text_model.encoder.layers."
    guard key.hasPrefix(head) else { return nil }
    let p = key.dropFirst(head.count).split(separator: ".", maxSplits: 1)
    guard p.count == 2, let layer = Int(p[0]) else { return nil }
    let rest = String(p[1])
    let layerHead = "transformer.resblocks.\(layer)."
    for (index, projection) in ["q_proj", "k_proj", "v_proj"].enumerated() {
      for parameter in ["weight", "bias"] where rest == "self_attn.\(projection).\(parameter)" {
        return (layerHead + "attn.in_proj_\(parameter)", .rowSlice(index: index, count: 3))
      }
    }
    return Self.rename(rest, Self.clipGLayerNames, forward: false).map { (layerHead + $0, .identity) }
  }
}
