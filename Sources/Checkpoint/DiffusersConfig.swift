import Foundation

/// The JSON files of a diffusers folder (`model_index.json`, `unet/config.json`,
/// `scheduler/scheduler_config.json`), read from bytes so that hostile-input tests and the fuzzer
/// (`Fuzz/DiffusersConfigFuzzer.swift`) reach exactly the code `DiffusersFolder` runs.
public enum DiffusersConfig {
  /// Larger files are refused unread: real config files are a few kilobytes.
  public static let maximumBytes = 10 << 20

  /// Parses `data` as a JSON object; anything else (or more than `maximumBytes`) is
  /// `CheckpointError.invalidConfig` naming `path`.
  public static func object(from data: Data, path: String) throws -> [String: Any] {
    guard data.count < maximumBytes,
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else {
      throw CheckpointError.invalidConfig(path: path, reason: "not a JSON object")
    }
    return object
  }

  /// What `unet/config.json` claims about the architecture (the weights decide; this is evidence).
  public struct UNetClaim {
    public var kind: ArchitectureKind
    public var unet: UNetConfig?
    public var evidence: String
  }

  /// Reads the architecture fields of a UNet `config.json`. Fields of the wrong JSON type count as
  /// absent; numbers are taken only when they are exact integers.
  public static func unetClaim(_ config: [String: Any]) -> UNetClaim {
    let channels = config["block_out_channels"] as? [Int] ?? []
    let context = config["cross_attention_dim"] as? Int ?? 0
    let addition = config["addition_embed_type"] as? String
    let projection = config["projection_class_embeddings_input_dim"] as? Int
    let evidence =
      "unet/config.json: block_out_channels \(channels), cross_attention_dim \(context), addition_embed_type \(addition ?? "none")"
    var kind = ArchitectureKind.unknown
    if channels == [320, 640, 1280], context == 2048, addition == "text_time" {
      kind = .sdxlBase
    } else if addition == "text_time", channels.count == 3 {
      kind = .sdxlReduced
    } else if context == 768 {
      kind = .sd1
    } else if context == 1024 {
      kind = .sd2
    }
    var unet: UNetConfig?
    if let first = channels.first {
      unet = UNetConfig(
        modelChannels: first, channelMultipliers: channels.map { $0 / max(first, 1) },
        residualBlocksPerLevel: config["layers_per_block"] as? Int ?? 2,
        transformerDepth: config["transformer_layers_per_block"] as? [Int] ?? [], contextDimension: context,
        admChannels: projection, inChannels: config["in_channels"] as? Int ?? 4,
        outChannels: config["out_channels"] as? Int ?? 4, headDimension: 64)
    }
    return UNetClaim(kind: kind, unet: unet, evidence: evidence)
  }
}
