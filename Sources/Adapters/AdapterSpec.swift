import Checkpoint
import Foundation

/// One `--lora FILE[:STRENGTH[:TE_STRENGTH]]` argument: the adapter file, its strength on the
/// UNet, and on the text encoders (default: the same).
public struct AdapterSpec: Codable, Sendable, Equatable {
  public var path: String
  public var strength: Double
  public var textEncoderStrength: Double?

  public init(path: String, strength: Double = 1, textEncoderStrength: Double? = nil) {
    self.path = path
    self.strength = strength
    self.textEncoderStrength = textEncoderStrength
  }

  /// Reads `FILE`, `FILE:S` or `FILE:S:TE` (numbers are taken from the right, so a path may hold
  /// colons).
  public static func parse(_ text: String) throws -> AdapterSpec {
    var parts = text.components(separatedBy: ":")
    var numbers: [Double] = []
    while parts.count > 1, numbers.count < 2, let value = Double(parts.last!) {
      guard value.isFinite else {
        throw AdapterError.badArgument("--lora \(text): the strength must be a finite number")
      }
      numbers.insert(value, at: 0)
      parts.removeLast()
    }
    let path = parts.joined(separator: ":")
    guard !path.isEmpty else {
      throw AdapterError.badArgument("--lora \(text): no file named (FILE[:STRENGTH[:TE_STRENGTH]])")
    }
    return AdapterSpec(
      path: path, strength: numbers.first ?? 1, textEncoderStrength: numbers.count > 1 ? numbers[1] : nil)
  }

  /// The file name (what output metadata records: never a path).
  public var fileName: String { (path as NSString).lastPathComponent }
}

/// What a bake or a render records about an adapter it applied: name, hashes, strengths.
public struct AppliedAdapter: Codable, Sendable, Equatable {
  public var name: String
  public var sha256: String
  /// A1111's LoRA short hash / Civitai AutoV3 (12 hex of the tensor-data SHA-256).
  public var autoV3: String
  public var strength: Double
  public var textEncoderStrength: Double
  public var modules: Int

  enum CodingKeys: String, CodingKey {
    case name, sha256
    case autoV3 = "autov3"
    case strength
    case textEncoderStrength = "te_strength"
    case modules
  }

  /// Hashes `adapter` (whole file and tensor data), through `cache` when given (as `merge` does
  /// for its inputs).
  public init(adapter: AdapterFile, spec: AdapterSpec, cache: HashCache? = nil) {
    let hashes = ModelHasher.hashes(of: adapter.file.mapping, dataOffset: adapter.file.dataOffset, cache: cache).hashes
    name = spec.fileName
    sha256 = hashes.sha256
    autoV3 = hashes.autoV3 ?? ""
    strength = spec.strength
    textEncoderStrength = spec.textEncoderStrength ?? spec.strength
    modules = adapter.modules.count
  }
}

extension AdapterStack {
  /// Opens every adapter of `specs` and stacks them with their strengths; `multiplier(target)`
  /// scales each (per-block or per-component factors; default 1).
  public static func open(
    _ specs: [AdapterSpec], skipUnmapped: Bool = false,
    multiplier: @escaping @Sendable (AdapterTarget) -> Double = { _ in 1 }
  ) throws -> AdapterStack {
    let applications = try specs.map { spec -> AdapterApplication in
      let adapter = try AdapterFile(path: spec.path)
      let unet = spec.strength, te = spec.textEncoderStrength ?? spec.strength
      return AdapterApplication(adapter: adapter) { target in
        Float((target.component == .unet ? unet : te) * multiplier(target))
      }
    }
    return try AdapterStack(applications, skipUnmapped: skipUnmapped)
  }
}
