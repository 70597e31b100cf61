import SafeTensors

/// What kind of model a set of UNet weights is.
public enum ArchitectureKind: String, Codable, Sendable {
  case sdxlBase = "sdxl-base"
  case sdxlRefiner = "sdxl-refiner"
  /// SDXL's structure (3 levels, ADM conditioning, linear projections) at other widths: test models.
  case sdxlReduced = "sdxl-topology-reduced"
  case sd1 = "sd1"
  case sd2 = "sd2"
  case unknown

  /// Human name.
  public var title: String {
    switch self {
    case .sdxlBase: return "SDXL base"
    case .sdxlRefiner: return "SDXL refiner"
    case .sdxlReduced: return "SDXL topology, reduced widths"
    case .sd1: return "SD 1.x"
    case .sd2: return "SD 2.x"
    case .unknown: return "unknown"
    }
  }
}

/// The architecture read from tensor shapes, with the evidence that decided it.
public struct ArchitectureReport: Codable, Sendable {
  public var kind: ArchitectureKind
  /// The UNet hyper-parameters read from shapes (nil without a UNet).
  public var unet: UNetConfig?
  /// Whether the UNet takes 9 input channels (inpainting).
  public var inpainting: Bool
  /// One line per fact used.
  public var evidence: [String]
}

/// Reads architecture from shapes as ComfyUI's `model_detection.detect_unet_config` does: context
/// width from `attn2.to_k`, ADM width from `label_emb`, model channels from `conv_in`, transformer
/// depth per input block, linear or convolutional `proj_in`.
public enum ArchitectureDetector {
  /// Detects from `shapes` (key → shape) with UNet keys under `prefix`.
  public static func detect(shapes: [String: [Int]], unetPrefix prefix: String) -> ArchitectureReport {
    var evidence: [String] = []
    guard let convIn = shapes[prefix + "input_blocks.0.0.weight"], convIn.count == 4 else {
      return ArchitectureReport(
        kind: .unknown, unet: nil, inpainting: false, evidence: ["no UNet conv_in (\(prefix)input_blocks.0.0.weight)"])
    }
    let modelChannels = convIn[0]
    let inChannels = convIn[1]
    evidence.append("model channels \(modelChannels), \(inChannels) input channels (input_blocks.0.0.weight \(convIn))")

    var contextDimension = 0
    var linearProjection = false
    var depthByBlock: [Int: Int] = [:]
    var downsampleBlocks: [Int] = []
    var inputBlockCount = 0
    for (key, shape) in shapes where key.hasPrefix(prefix + "input_blocks.") {
      let rest = key.dropFirst(prefix.count + "input_blocks.".count)
      let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
      guard let block = Int(parts.first ?? "") else { continue }
      inputBlockCount = max(inputBlockCount, block + 1)
      if parts.count > 2, parts[1] == "0", parts[2] == "op" { downsampleBlocks.append(block) }
      if parts.count > 3, parts[1] == "1", parts[2] == "transformer_blocks", let index = Int(parts[3]) {
        depthByBlock[block] = max(depthByBlock[block] ?? 0, index + 1)
      }
      if key.hasSuffix(".attn2.to_k.weight"), shape.count == 2 { contextDimension = shape[1] }
      if key.hasSuffix(".1.proj_in.weight") { linearProjection = shape.count == 2 }
    }
    downsampleBlocks = Array(Set(downsampleBlocks)).sorted()
    let levels = downsampleBlocks.count + 1
    let residualBlocks = max((inputBlockCount - 1 - downsampleBlocks.count) / max(levels, 1), 1)
    var multipliers: [Int] = []
    var depth: [Int] = []
    for level in 0..<levels {
      let firstBlock = 1 + level * (residualBlocks + 1)
      let width = shapes[prefix + "input_blocks.\(firstBlock).0.out_layers.3.weight"]?.first ?? modelChannels
      multipliers.append(modelChannels > 0 ? width / modelChannels : 0)
      depth.append(depthByBlock[firstBlock] ?? 0)
    }
    evidence.append("\(levels) levels, channel multipliers \(multipliers), transformer depth per level \(depth)")
    // ComfyUI also reads the middle block's depth and the decoder's (transformer_depth_output).
    var middleDepth = 0
    var outputDepth: [Int: Int] = [:]
    var outputBlockCount = 0
    let middleHead = prefix + "middle_block.1.transformer_blocks."
    for key in shapes.keys {
      if key.hasPrefix(middleHead), let index = Int(key.dropFirst(middleHead.count).prefix { $0 != "." }) {
        middleDepth = max(middleDepth, index + 1)
      } else if key.hasPrefix(prefix + "output_blocks.") {
        let parts = key.dropFirst(prefix.count + "output_blocks.".count).split(separator: ".")
        guard let block = Int(parts.first ?? "") else { continue }
        outputBlockCount = max(outputBlockCount, block + 1)
        if parts.count > 3, parts[1] == "1", parts[2] == "transformer_blocks", let index = Int(parts[3]) {
          outputDepth[block] = max(outputDepth[block] ?? 0, index + 1)
        }
      }
    }
    let outputDepths = (0..<outputBlockCount).map { outputDepth[$0] ?? 0 }
    evidence.append("middle block transformer depth \(middleDepth), output blocks \(outputDepths)")
    if contextDimension > 0 {
      evidence.append("cross-attention context width \(contextDimension) (attn2.to_k)")
      evidence.append(linearProjection ? "linear proj_in (SDXL/SD2 style)" : "1×1 conv proj_in (SD1 style)")
    }
    let adm = shapes[prefix + "label_emb.0.0.weight"].flatMap { $0.count == 2 ? $0[1] : nil }
    if let adm { evidence.append("ADM conditioning width \(adm) (label_emb.0.0.weight)") }
    let outChannels = shapes[prefix + "out.2.weight"]?.first ?? 4
    let config = UNetConfig(
      modelChannels: modelChannels, channelMultipliers: multipliers, residualBlocksPerLevel: residualBlocks,
      transformerDepth: depth, contextDimension: contextDimension, admChannels: adm, inChannels: inChannels,
      outChannels: outChannels, headDimension: 64,
      middleTransformerDepth: middleDepth == (depth.last ?? 0) ? nil : middleDepth,
      linearProjection: contextDimension == 0 || linearProjection)

    let kind: ArchitectureKind
    if modelChannels == 320, contextDimension == 2048, adm == 2816, depth == [0, 2, 10], linearProjection {
      kind = .sdxlBase
    } else if modelChannels == 384, contextDimension == 1280, adm == 2560 {
      kind = .sdxlRefiner
    } else if adm != nil, linearProjection, levels == 3, depth.first == 0, depth.dropFirst().allSatisfy({ $0 > 0 }) {
      kind = .sdxlReduced
    } else if contextDimension == 768, !linearProjection, adm == nil {
      kind = .sd1
    } else if contextDimension == 1024, adm == nil {
      kind = .sd2
    } else {
      kind = .unknown
    }
    evidence.append("⇒ \(kind.title)")
    return ArchitectureReport(kind: kind, unet: config, inpainting: inChannels == 9, evidence: evidence)
  }

  /// Reads text-encoder hyper-parameters from an OpenCLIP-style (`token_embedding.weight`,
  /// `transformer.resblocks.N`) or HF-style (`embeddings.token_embedding.weight`, `encoder.layers.N`) set.
  public static func textEncoder(shapes: [String: [Int]], prefix: String, openCLIP: Bool) -> TextEncoderConfig? {
    let tokenKey = prefix + (openCLIP ? "token_embedding.weight" : "text_model.embeddings.token_embedding.weight")
    let positionKey = prefix + (openCLIP ? "positional_embedding" : "text_model.embeddings.position_embedding.weight")
    guard let token = shapes[tokenKey], token.count == 2, let position = shapes[positionKey], position.count == 2 else {
      return nil
    }
    let layerMarker = openCLIP ? "transformer.resblocks." : "text_model.encoder.layers."
    var layers = 0
    for key in shapes.keys where key.hasPrefix(prefix + layerMarker) {
      let rest = key.dropFirst(prefix.count + layerMarker.count)
      if let index = Int(rest.prefix { $0 != "." }) { layers = max(layers, index + 1) }
    }
    let mlpKey =
      prefix + (openCLIP ? "transformer.resblocks.0.mlp.c_fc.weight" : "text_model.encoder.layers.0.mlp.fc1.weight")
    let mlp = shapes[mlpKey]?.first ?? 4 * token[1]
    let projection = openCLIP ? shapes[prefix + "text_projection"].flatMap { $0.count == 2 ? $0[1] : nil } : nil
    return TextEncoderConfig(
      vocabularySize: token[0], contextLength: position[0], width: token[1], layers: layers, mlpWidth: mlp,
      projectionDimension: projection)
  }

  /// Reads VAE hyper-parameters from single-file VAE keys under `prefix`.
  public static func vae(shapes: [String: [Int]], prefix: String) -> VAEConfig? {
    guard
      let convIn = shapes[prefix + "encoder.conv_in.weight"]
        ?? shapes[prefix + "decoder.conv_out.weight"].map({ [$0[1], $0[0]] }),
      convIn.count >= 2
    else { return nil }
    let base = convIn[0]
    var multipliers: [Int] = []
    var level = 0
    while let shape = shapes[prefix + "decoder.up.\(level).block.0.conv2.weight"] {
      multipliers.append(base > 0 ? shape[0] / base : 0)
      level += 1
    }
    var blocks = 0
    while shapes[prefix + "encoder.down.0.block.\(blocks).conv1.weight"] != nil { blocks += 1 }
    let latent = shapes[prefix + "post_quant_conv.weight"]?.first ?? 4
    let image = shapes[prefix + "decoder.conv_out.weight"]?.first ?? 3
    return VAEConfig(
      baseChannels: base, channelMultipliers: multipliers, residualBlocks: blocks, latentChannels: latent,
      imageChannels: image)
  }
}
