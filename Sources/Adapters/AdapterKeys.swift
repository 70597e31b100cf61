import Checkpoint

/// The SDXL weight an adapter module changes: a canonical single-file key, or one of the three
/// row blocks (q, k, v) of OpenCLIP-G's fused `attn.in_proj_weight`.
public struct AdapterTarget: Sendable, Hashable, Codable {
  /// Canonical single-file weight name (`model.diffusion_model.…weight`).
  public let key: String
  /// For a fused q/k/v weight: which block of `sliceCount` equal row blocks.
  public let sliceIndex: Int?
  public let sliceCount: Int?

  public init(key: String, sliceIndex: Int? = nil, sliceCount: Int? = nil) {
    self.key = key
    self.sliceIndex = sliceIndex
    self.sliceCount = sliceCount
  }

  /// The matching bias (for `diff_b`/`b_norm`): `….bias`, or the fused `in_proj_bias`.
  public var biasKey: String? {
    if key.hasSuffix(".in_proj_weight") { return String(key.dropLast("weight".count)) + "bias" }
    if key.hasSuffix(".weight") { return String(key.dropLast("weight".count)) + "bias" }
    return nil
  }

  /// The component it belongs to (UNet, CLIP-L, CLIP-G).
  public var component: Component { Checkpoint.component(ofSingleFileKey: key) }
}

/// What an adapter tensor is, from its key's suffix.
public enum AdapterRole: String, Sendable, CaseIterable, Codable {
  case down, up, mid, alpha, scale
  case doraScale = "dora_scale"
  case hadaW1a = "hada_w1_a"
  case hadaW1b = "hada_w1_b"
  case hadaW2a = "hada_w2_a"
  case hadaW2b = "hada_w2_b"
  case hadaT1 = "hada_t1"
  case hadaT2 = "hada_t2"
  case lokrW1 = "lokr_w1"
  case lokrW1a = "lokr_w1_a"
  case lokrW1b = "lokr_w1_b"
  case lokrW2 = "lokr_w2"
  case lokrW2a = "lokr_w2_a"
  case lokrW2b = "lokr_w2_b"
  case lokrT2 = "lokr_t2"
  case diff
  case diffBias = "diff_b"
  case normWeight = "w_norm"
  case normBias = "b_norm"
}

/// Maps adapter key names onto SDXL single-file weights, the way ComfyUI does it (reference
/// lora.md §1.6): every accepted spelling of every SDXL weight is generated from Checkpoint's
/// template and key maps, and module names are looked up exactly — underscores are ambiguous
/// (`to_out_0`, `ff_net_0_proj`), so nothing is guessed by rewriting them.
///
/// Spellings: kohya `lora_unet_` + SGM or diffusers names, `lora_te1_`/`lora_te2_` + HF CLIP
/// names, SimpleTuner `lycoris_` + diffusers names, PEFT/diffusers dotted `unet.`/`text_encoder.`/
/// `text_encoder_2.`, OneTrainer dotted SGM `unet.`, ComfyUI `diffusion_model.`/`text_encoders.`.
public enum AdapterKeyMap {
  /// Key suffixes (after the module name and a dot) and their roles; longest first.
  static let suffixes: [(String, AdapterRole)] = {
    var list: [(String, AdapterRole)] = [
      ("lora_down.weight", .down), ("lora_up.weight", .up), ("lora_mid.weight", .mid),
      ("lora_A.weight", .down), ("lora_B.weight", .up),
      ("lora.down.weight", .down), ("lora.up.weight", .up),
      ("lora_linear_layer.down.weight", .down), ("lora_linear_layer.up.weight", .up),
      ("lora_magnitude_vector.weight", .doraScale), ("lora_magnitude_vector", .doraScale),
    ]
    for role in AdapterRole.allCases where ![.down, .up, .mid].contains(role) { list.append((role.rawValue, role)) }
    return list.sorted { $0.0.count > $1.0.count }
  }()

  /// Splits `key` into its module name and role, or nil when the suffix is none an adapter uses.
  public static func split(_ key: String) -> (module: String, role: AdapterRole)? {
    for (suffix, role) in suffixes where key.hasSuffix("." + suffix) && key.count > suffix.count + 1 {
      return (String(key.dropLast(suffix.count + 1)), role)
    }
    return nil
  }

  /// The SDXL weight a module name targets, or nil when it maps nowhere.
  public static func target(ofModule module: String) -> AdapterTarget? { table[module] }

  /// The kohya module names (SGM UNet names, HF CLIP names) that write to the canonical weight
  /// `key`, with their targets: one for most weights, three (q, k, v) for OpenCLIP's fused
  /// `in_proj_weight`; empty for weights no kohya module targets. What an extractor writes.
  public static func kohyaModules(of key: String) -> [(module: String, target: AdapterTarget)] {
    kohyaByWeight[key] ?? []
  }

  static let kohyaByWeight: [String: [(module: String, target: AdapterTarget)]] = {
    var result: [String: [(module: String, target: AdapterTarget)]] = [:]
    let prefixes = ["lora_unet_", "lora_te1_", "lora_te2_"]
    for (alias, target) in table where prefixes.contains(where: alias.hasPrefix) {
      // Of the two UNet spellings keep the SGM one (kohya's own SDXL naming).
      if alias.hasPrefix("lora_unet_"), !isSGM(alias) { continue }
      result[target.key, default: []].append((alias, target))
    }
    for key in result.keys { result[key]?.sort { ($0.target.sliceIndex ?? 0) < ($1.target.sliceIndex ?? 0) } }
    return result
  }()

  static func isSGM(_ alias: String) -> Bool {
    let rest = alias.dropFirst("lora_unet_".count)
    return ["input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_"].contains {
      rest.hasPrefix($0)
    }
  }

  /// Every alias → target (built once from the SDXL template).
  public static let table: [String: AdapterTarget] = build().table

  /// Aliases that two different weights would claim (must stay empty; a test checks).
  public static var collisions: [String] { build().collisions }

  static func underscored(_ name: String) -> String { name.replacingOccurrences(of: ".", with: "_") }

  static func build() -> (table: [String: AdapterTarget], collisions: [String]) {
    var table: [String: AdapterTarget] = [:]
    var collisions: [String] = []
    func add(_ alias: String, _ target: AdapterTarget) {
      if let existing = table[alias], existing != target { collisions.append(alias) }
      table[alias] = target
    }
    let map = DiffusersKeyMap()
    let template = SDXLTemplate.sdxlBase
    for tensor in template.tensors where tensor.component != .vae && !tensor.isInteger {
      let key = tensor.key
      let isWeight = key.hasSuffix(".weight") || key.hasSuffix(".in_proj_weight")
      guard isWeight else { continue }
      switch tensor.component {
      case .unet:
        let local = String(key.dropFirst(SingleFilePrefix.unet.count).dropLast(".weight".count))
        let target = AdapterTarget(key: key)
        add("lora_unet_" + underscored(local), target)
        add("diffusion_model." + local, target)
        add("unet." + local, target)
        if case .mapped(let c) = map.diffusers(forSingleFileKey: key), let d = c.first?.diffusersKey,
          d.hasSuffix(".weight")
        {
          let name = String(d.dropLast(".weight".count))
          add("lora_unet_" + underscored(name), target)
          add("lycoris_" + underscored(name), target)
          add("unet." + name, target)
        }
      case .clipL:
        let local = String(key.dropFirst(SingleFilePrefix.clipL.count).dropLast(".weight".count))
        let target = AdapterTarget(key: key)
        add("lora_te1_" + underscored(local), target)
        add("text_encoder." + local, target)
        add("text_encoders.clip_l.transformer." + local, target)
        if local.hasPrefix("text_model.") { add("text_encoder." + local.dropFirst("text_model.".count), target) }
      case .clipG:
        guard case .mapped(let parts) = map.diffusers(forSingleFileKey: key) else { continue }
        for part in parts {
          guard part.diffusersKey.hasSuffix(".weight") else { continue }
          var target = AdapterTarget(key: key)
          switch part.transform {
          case .identity: break
          case .rowSlice(let index, let count): target = AdapterTarget(key: key, sliceIndex: index, sliceCount: count)
          default: continue  // text_projection is stored transposed: not a Linear an adapter targets here
          }
          let name = String(part.diffusersKey.dropLast(".weight".count))
          add("lora_te2_" + underscored(name), target)
          add("text_encoder_2." + name, target)
          add("text_encoders.clip_g.transformer." + name, target)
          if name.hasPrefix("text_model.") { add("text_encoder_2." + name.dropFirst("text_model.".count), target) }
        }
      default: continue
      }
    }
    return (table, collisions)
  }
}
