import SafeTensors

/// What can go wrong reading or applying an adapter; each names the file and the key concerned.
/// All are problems with the input (exit 2) except `unreadable` (exit 3).
public enum AdapterError: Error, CustomStringConvertible, Sendable {
  /// A module's tensors do not form an adapter this reader knows (missing factor, wrong rank, …).
  case malformed(file: String, module: String, reason: String)
  /// Keys that map onto no SDXL weight (listed; a bake refuses them unless told to skip).
  case unmapped(file: String, keys: [String])
  /// The adapter's ΔW does not fit the base weight it targets.
  case shapeMismatch(file: String, module: String, target: String, targetShape: [Int], reason: String)
  /// The base model lacks the weight a module targets.
  case missingTarget(file: String, module: String, target: String)
  /// The file holds no adapter tensors at all.
  case empty(file: String)
  /// A `FILE[:STRENGTH]` argument that cannot be read.
  case badArgument(String)
  /// The adapted weight has values that are not finite.
  case nonFinite(file: String, target: String, count: Int)
  /// The file cannot be read (I/O).
  case unreadable(file: String, reason: String)

  public var isIOFailure: Bool {
    if case .unreadable = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .malformed(let file, let module, let reason):
      return "\(file): adapter module '\(SafeTensorsError.printable(module))': \(reason)"
    case .unmapped(let file, let keys):
      let list = keys.prefix(8).map { "'\(SafeTensorsError.printable($0))'" }.joined(separator: ", ")
      return "\(file): \(keys.count) adapter keys map onto no SDXL weight: \(list)\(keys.count > 8 ? ", …" : "")"
        + " (not an SDXL adapter, or a format this tool does not read; `rouwei-ckpt info` lists them all;"
        + " --lora-skip-unmapped applies the rest)"
    case .shapeMismatch(let file, let module, let target, let shape, let reason):
      return
        "\(file): adapter module '\(SafeTensorsError.printable(module))' does not fit '\(target)' \(shape): \(reason)"
        + " (an adapter for another model?)"
    case .missingTarget(let file, let module, let target):
      return
        "\(file): adapter module '\(SafeTensorsError.printable(module))' targets '\(target)', which the base model lacks"
    case .empty(let file):
      return "\(file): holds no LoRA/LyCORIS adapter tensors"
    case .badArgument(let reason):
      return reason
    case .nonFinite(let file, let target, let count):
      return "\(file): applying it makes \(count) values of '\(target)' non-finite (NaN or infinite factors?)"
    case .unreadable(let file, let reason):
      return "\(file): cannot be read: \(reason)"
    }
  }
}
