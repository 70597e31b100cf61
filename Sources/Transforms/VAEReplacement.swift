import Checkpoint
import SafeTensors
import Weights

/// Reads the VAE out of a file for "bake in a VAE": a single-file checkpoint (`first_stage_model.`),
/// a bare LDM VAE (`encoder.…`, `decoder.up.…`) or a diffusers VAE (`encoder.down_blocks.…`, as
/// `sdxl_vae.safetensors` ships), and names every tensor as the single-file layout does.
public enum VAEReplacement {
  /// A VAE tensor of the file, with its single-file shape.
  public struct Source {
    public let tensor: TensorInfo
    public let shape: [Int]
  }

  /// Single-file key → source tensor.
  public static func tensors(from file: SafeTensorsFile) throws -> [String: Source] {
    var out: [String: Source] = [:]
    let names = file.tensors.map(\.name)
    if names.contains(where: { $0.hasPrefix(SingleFilePrefix.vae) }) {
      for tensor in file.tensors where tensor.name.hasPrefix(SingleFilePrefix.vae) {
        out[tensor.name] = Source(tensor: tensor, shape: tensor.shape)
      }
    } else if names.contains(where: { $0.hasPrefix("encoder.down_blocks.") || $0.hasPrefix("decoder.up_blocks.") }) {
      let levels = Set(
        names.compactMap { name -> Int? in
          guard name.hasPrefix("decoder.up_blocks.") else { return nil }
          return Int(name.dropFirst("decoder.up_blocks.".count).prefix { $0 != "." })
        }
      ).count
      for tensor in file.tensors {
        guard let mapped = DiffusersVAEKeys.singleFileName(tensor.name, levels: levels) else {
          throw ConversionError.vaeMismatch(file: file.path, reason: "unrecognised diffusers VAE key '\(tensor.name)'")
        }
        var shape = tensor.shape
        // Diffusers stores mid-block attention projections as linear layers; sgm as 1×1 convs.
        if mapped.contains(".mid.attn_1."), mapped.hasSuffix(".weight"), shape.count == 2 { shape += [1, 1] }
        out[SingleFilePrefix.vae + mapped] = Source(tensor: tensor, shape: shape)
      }
    } else if names.contains(where: { $0.hasPrefix("encoder.") || $0.hasPrefix("decoder.") }) {
      for tensor in file.tensors {
        out[SingleFilePrefix.vae + tensor.name] = Source(tensor: tensor, shape: tensor.shape)
      }
    } else {
      throw ConversionError.vaeMismatch(
        file: file.path, reason: "no VAE tensors (first_stage_model.*, encoder.*, decoder.*)")
    }
    return out
  }
}

/// Diffusers `AutoencoderKL` names ⇄ sgm/LDM names (diffusers `convert_vae_state_dict`).
public enum DiffusersVAEKeys {
  /// The LDM name (without `first_stage_model.`) of a diffusers VAE key, or nil if unknown.
  public static func singleFileName(_ key: String, levels: Int) -> String? {
    let parts = key.split(separator: ".").map(String.init)
    guard parts.count >= 2 else { return nil }
    let side = parts[0]
    guard side == "encoder" || side == "decoder" else {
      return key.hasPrefix("quant_conv.") || key.hasPrefix("post_quant_conv.") ? key : nil
    }
    let rest = Array(parts.dropFirst())
    func join(_ items: [String]) -> String { ([side] + items).joined(separator: ".") }
    switch rest[0] {
    case "conv_in", "conv_out":
      return join(rest)
    case "conv_norm_out":
      return join(["norm_out"] + rest.dropFirst())
    case "down_blocks", "up_blocks":
      guard rest.count >= 5, let level = Int(rest[1]) else { return nil }
      let ldmLevel = rest[0] == "up_blocks" ? levels - 1 - level : level
      let group = rest[0] == "up_blocks" ? "up" : "down"
      if rest[2] == "resnets" {
        let leaf = rest[4] == "conv_shortcut" ? "nin_shortcut" : rest[4]
        return join([group, "\(ldmLevel)", "block", rest[3], leaf] + rest.dropFirst(5))
      }
      if rest[2] == "downsamplers" || rest[2] == "upsamplers" {
        return join([group, "\(ldmLevel)", rest[2] == "downsamplers" ? "downsample" : "upsample"] + rest.dropFirst(4))
      }
      return nil
    case "mid_block":
      guard rest.count >= 4 else { return nil }
      if rest[1] == "resnets", let index = Int(rest[2]) {
        let leaf = rest[3] == "conv_shortcut" ? "nin_shortcut" : rest[3]
        return join(["mid", "block_\(index + 1)", leaf] + rest.dropFirst(4))
      }
      if rest[1] == "attentions" {
        let names = [
          "group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out", "query": "q",
          "key": "k", "value": "v", "proj_attn": "proj_out",
        ]
        guard let leaf = names[rest[3]] else { return nil }
        let tail = rest[3] == "to_out" ? Array(rest.dropFirst(5)) : Array(rest.dropFirst(4))
        return join(["mid", "attn_1", leaf] + tail)
      }
      return nil
    default:
      return nil
    }
  }
}
