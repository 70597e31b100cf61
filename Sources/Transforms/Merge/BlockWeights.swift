import Checkpoint
import Weights

/// Which tool's key → block table the 20 per-block numbers follow. They disagree on where
/// `time_embed`, `label_emb` and the VAE go (merge-and-quantization.md §1.7).
public enum BlockConvention: String, Sendable, CaseIterable, Codable {
  /// supermerger (default, what most published recipes use): `time_embed`/`label_emb` → IN00,
  /// text encoders and VAE → BASE.
  case supermerger
  /// sd-mecha's `sdxl-supermerger_blocks`: `time_embed`/`label_emb` → BASE, VAE → its own α.
  case sdMecha = "sd-mecha"
}

/// The 20 SDXL merge blocks: BASE, IN00–IN08, M00, OUT00–OUT08.
public enum SDXLBlocks {
  public static let names: [String] =
    ["BASE"] + (0...8).map { "IN0\($0)" } + ["M00"] + (0...8).map { "OUT0\($0)" }

  /// The block of a single-file key, or nil for keys outside the table (the VAE under sd-mecha).
  public static func block(of key: String, convention: BlockConvention) -> String? {
    switch Checkpoint.component(ofSingleFileKey: key) {
    case .clipL, .clipG: return "BASE"
    case .vae: return convention == .supermerger ? "BASE" : nil
    case .unet: break
    default: return nil
    }
    let rest = key.dropFirst(SingleFilePrefix.unet.count)
    if rest.hasPrefix("time_embed.") || rest.hasPrefix("label_emb.") {
      return convention == .supermerger ? "IN00" : "BASE"
    }
    if rest.hasPrefix("middle_block.") { return "M00" }
    if rest.hasPrefix("out.") { return "OUT08" }
    for (group, label) in [("input_blocks.", "IN0"), ("output_blocks.", "OUT0")] where rest.hasPrefix(group) {
      let index = rest.dropFirst(group.count).prefix { $0 != "." }
      if let number = Int(index), (0...8).contains(number) { return label + String(number) }
    }
    return nil
  }

  /// ComfyUI's ModelMergeSDXL parameter for a key (`time_embed.`, `label_emb.`, `input_blocks.N`,
  /// `middle_block.N`, `output_blocks.N`, `out.`), for users coming from that node.
  public static func comfyParameter(of key: String) -> String? {
    guard key.hasPrefix(SingleFilePrefix.unet) else { return nil }
    let rest = key.dropFirst(SingleFilePrefix.unet.count)
    for prefix in ["time_embed.", "label_emb.", "out."] where rest.hasPrefix(prefix) { return prefix }
    for group in ["input_blocks.", "middle_block.", "output_blocks."] where rest.hasPrefix(group) {
      let index = rest.dropFirst(group.count).prefix { $0 != "." }
      return group + index
    }
    return nil
  }
}
