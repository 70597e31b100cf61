import Checkpoint
import Foundation
import SafeTensors

/// What `info` says about an adapter file.
public struct AdapterReport: Codable, Sendable {
  public var file: String
  public var naming: String
  /// Modules per algorithm (`lora`, `locon` for convolution LoRA, `loha`, `lokr`, `full`), DoRA apart.
  public var algorithms: [String: Int]
  public var modules: Int
  public var doraModules: Int
  public var ranks: [Int]
  public var alphas: [Float]
  public var dtypes: [String]
  /// Modules per component: UNet, CLIP-L, CLIP-G.
  public var components: [String: Int]
  /// The UNet blocks touched (`merge --blocks` names: IN00…IN08, M00, OUT00…OUT08).
  public var blocks: [String]
  /// `ss_base_model_version`, else `modelspec.architecture`, else nil.
  public var baseModel: String?
  public var outputName: String?
  public var networkModule: String?
  /// The most frequent training tags (`ss_tag_frequency`), most frequent first.
  public var triggerWords: [String]
  /// `ss_*`/`modelspec.*` metadata (the large dataset JSON values left out).
  public var metadata: [String: String]
  /// Keys that map onto no SDXL weight, every one.
  public var unmappedKeys: [String]
  /// Whether every key maps onto SDXL.
  public var allKeysMapped: Bool

  enum CodingKeys: String, CodingKey {
    case file, naming, algorithms, modules
    case doraModules = "dora_modules"
    case ranks, alphas, dtypes, components, blocks
    case baseModel = "base_model"
    case outputName = "output_name"
    case networkModule = "network_module"
    case triggerWords = "trigger_words"
    case metadata
    case unmappedKeys = "unmapped_keys"
    case allKeysMapped = "all_keys_mapped"
  }

  public init(_ adapter: AdapterFile) {
    file = (adapter.path as NSString).lastPathComponent
    naming = adapter.naming.rawValue
    var algorithms: [String: Int] = [:]
    var components: [String: Int] = [:]
    var blocks = Set<String>()
    for module in adapter.modules {
      let name = module.algorithm == .lora && module.isConvolution ? "locon" : module.algorithm.rawValue
      algorithms[name, default: 0] += 1
      components[module.target.component.rawValue, default: 0] += 1
      if let block = Self.block(of: module.target.key) { blocks.insert(block) }
    }
    self.algorithms = algorithms
    self.components = components
    let order = ["IN", "M0", "OU"]
    self.blocks = blocks.sorted {
      (order.firstIndex(of: String($0.prefix(2))) ?? 0, $0) < (order.firstIndex(of: String($1.prefix(2))) ?? 0, $1)
    }
    modules = adapter.modules.count
    doraModules = adapter.modules.filter(\.hasDoRA).count
    ranks = Array(Set(adapter.modules.compactMap(\.rank))).sorted()
    alphas = Array(Set(adapter.modules.compactMap(\.alpha))).sorted()
    dtypes = Array(Set(adapter.file.tensors.map(\.dtype.rawValue))).sorted()
    let metadata = adapter.metadata
    baseModel = metadata["ss_base_model_version"] ?? metadata["modelspec.architecture"]
    outputName = metadata["ss_output_name"]
    networkModule = metadata["ss_network_module"]
    triggerWords = Self.tags(metadata["ss_tag_frequency"] ?? "").prefix(20).map { $0 }
    let bulky: Set<String> = [
      "ss_tag_frequency", "ss_dataset_dirs", "ss_datasets", "ss_bucket_info", "modelspec.thumbnail",
    ]
    self.metadata = metadata.filter {
      ($0.key.hasPrefix("ss_") || $0.key.hasPrefix("modelspec.")) && !bulky.contains($0.key)
    }
    unmappedKeys = adapter.unmappedKeys
    allKeysMapped = adapter.unmappedKeys.isEmpty
  }

  /// Tags by total count over the dataset folders of `ss_tag_frequency` ({dir: {tag: count}}).
  static func tags(_ json: String) -> [String] {
    guard let data = json.data(using: .utf8),
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return [] }
    var counts: [String: Int] = [:]
    for case let folder as [String: Any] in object.values {
      for (tag, count) in folder {
        counts[tag.trimmingCharacters(in: .whitespaces), default: 0] += (count as? Int) ?? 0
      }
    }
    return counts.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map(\.key)
  }

  /// The `merge --blocks` name of a UNet key (nil for the text encoders and out-of-table keys).
  static func block(of key: String) -> String? {
    guard key.hasPrefix(SingleFilePrefix.unet) else { return nil }
    let rest = key.dropFirst(SingleFilePrefix.unet.count)
    if rest.hasPrefix("time_embed.") || rest.hasPrefix("label_emb.") { return "IN00" }
    if rest.hasPrefix("middle_block.") { return "M00" }
    if rest.hasPrefix("out.") { return "OUT08" }
    for (group, label) in [("input_blocks.", "IN0"), ("output_blocks.", "OUT0")] where rest.hasPrefix(group) {
      if let number = Int(rest.dropFirst(group.count).prefix { $0 != "." }), (0...8).contains(number) {
        return label + String(number)
      }
    }
    return nil
  }

  /// The human view.
  public func render() -> String {
    var lines: [String] = ["\(file): LoRA adapter (\(naming))"]
    let algorithmText = algorithms.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    lines.append(
      "  modules      \(modules)\(algorithmText.isEmpty ? "" : " (\(algorithmText))")\(doraModules > 0 ? ", DoRA on \(doraModules)" : "")"
    )
    lines.append("  rank         \(ranks.isEmpty ? "—" : ranks.map(String.init).joined(separator: ", "))")
    lines.append(
      "  alpha        \(alphas.isEmpty ? "— (scale 1)" : alphas.map { String(format: "%g", $0) }.joined(separator: ", "))"
    )
    lines.append("  dtypes       \(dtypes.joined(separator: ", "))")
    let componentText = components.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    lines.append("  components   \(componentText.isEmpty ? "none" : componentText)")
    if !blocks.isEmpty { lines.append("  UNet blocks  \(blocks.joined(separator: " "))") }
    lines.append("  base model   \(baseModel ?? "not declared")")
    if let outputName { lines.append("  name         \(outputName)") }
    if let networkModule { lines.append("  trainer      \(networkModule)") }
    if !triggerWords.isEmpty { lines.append("  top tags     \(triggerWords.prefix(10).joined(separator: ", "))") }
    if allKeysMapped {
      lines.append("  keys         every key maps onto SDXL")
    } else {
      lines.append(
        "  ! \(unmappedKeys.count) keys map onto no SDXL weight (refused by merge --lora unless --lora-skip-unmapped):")
      for key in unmappedKeys.prefix(20) { lines.append("    \(SafeTensorsError.printable(key))") }
      if unmappedKeys.count > 20 { lines.append("    … and \(unmappedKeys.count - 20) more (--json lists all)") }
    }
    return lines.joined(separator: "\n") + "\n"
  }
}
