/// The tool's name and version, recorded in the files it writes (safetensors and GGUF metadata,
/// PNG `parameters`).
public enum ToolInfo {
  public static let name = "rouwei-ckpt"
  public static let version = "0.1.0"
}
