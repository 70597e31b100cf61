/// A diffusers UNet's tensors seen through the key map under their single-file names, so the
/// shape-based detector and the template check serve diffusers files too.
public struct DiffusersUNetTranslation: Sendable {
  /// The map built from the file's own topology.
  public let map: DiffusersKeyMap
  /// Full single-file key (`model.diffusion_model.…`) → shape (UNet tensors are never reshaped).
  public let singleFileShapes: [String: [Int]]
  /// Diffusers keys with no single-file counterpart in this topology.
  public let untranslated: [String]

  /// Translates `diffusersShapes` (diffusers UNet key → shape); nil when the keys are not a
  /// diffusers UNet.
  public init?(diffusersShapes: [String: [Int]]) {
    guard let topology = DiffusersKeyMap.unetTopology(diffusersKeys: diffusersShapes.keys) else { return nil }
    let map = DiffusersKeyMap(
      residualBlocksPerLevel: topology.residualBlocksPerLevel, levelHasAttention: topology.levelHasAttention,
      vaeLevels: 4)
    var shapes: [String: [Int]] = [:]
    var untranslated: [String] = []
    for (key, shape) in diffusersShapes {
      if let correspondence = map.singleFile(forDiffusersKey: key, in: .unet) {
        shapes[correspondence.singleFileKey] = shape
      } else {
        untranslated.append(key)
      }
    }
    self.map = map
    singleFileShapes = shapes
    self.untranslated = untranslated.sorted()
  }
}

/// Compares the tensors of diffusers component files with a template, in diffusers names.
enum DiffusersTemplateComparison {
  /// `actual`: subfolder → (diffusers key → shape), text-encoder keys as the files spell them.
  static func compare(
    actual: [DiffusersSubfolder: [String: [Int]]], template: SDXLTemplate, name: String
  ) -> KeyCheck {
    let map = DiffusersKeyMap(template: template)
    var expected: [DiffusersSubfolder: [String: [Int]]] = [:]
    for tensor in template.tensors {
      guard case .mapped(let correspondences) = map.diffusers(forSingleFileKey: tensor.key) else { continue }
      for c in correspondences {
        expected[c.subfolder, default: [:]][c.diffusersKey] = c.transform.diffusersShape(fromSingleFile: tensor.shape)
      }
    }
    var missing: [String] = []
    var extra: [String] = []
    var wrongShape: [String] = []
    var count = 0
    for subfolder in DiffusersSubfolder.allCases {
      guard let present = actual[subfolder] else { continue }
      var normalised: [String: [Int]] = [:]
      for (key, shape) in present {
        let name =
          subfolder == .textEncoder || subfolder == .textEncoder2 ? DiffusersKeyMap.withTextModelLevel(key) : key
        normalised[name] = shape
      }
      let wanted = expected[subfolder] ?? [:]
      count += wanted.count
      for (key, shape) in wanted.sorted(by: { $0.key < $1.key }) {
        guard let have = normalised[key] else {
          // position_ids is a buffer newer transformers no longer save.
          if !key.hasSuffix("position_ids") { missing.append("\(subfolder.rawValue)/\(key)") }
          continue
        }
        if have != shape { wrongShape.append("\(subfolder.rawValue)/\(key)") }
      }
      extra += normalised.keys.filter { wanted[$0] == nil }.sorted().map { "\(subfolder.rawValue)/\($0)" }
    }
    return KeyCheck(template: name, expected: count, missing: missing, extra: extra, wrongShape: wrongShape)
  }
}

extension DiffusersTemplateComparison {
  /// The subfolder a lone diffusers VAE or text-encoder file corresponds to, when its widths are
  /// SDXL's (a reduced-width file would only produce a wall of shape mismatches).
  static func componentFile(layout: Layout, shapes: [String: [Int]]) -> DiffusersSubfolder? {
    switch layout.name {
    case "diffusers-vae":
      return shapes["encoder.conv_in.weight"] == [VAEConfig.sdxl.baseChannels, 3, 3, 3] ? .vae : nil
    case "diffusers-text-encoder":
      let token = shapes["text_model.embeddings.token_embedding.weight"] ?? shapes["embeddings.token_embedding.weight"]
      if token == [TextEncoderConfig.clipL.vocabularySize, TextEncoderConfig.clipL.width] { return .textEncoder }
      if token == [TextEncoderConfig.clipG.vocabularySize, TextEncoderConfig.clipG.width] { return .textEncoder2 }
      return nil
    default: return nil
    }
  }
}
