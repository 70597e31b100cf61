import Foundation
import SafeTensors

/// Errors of the checkpoint layer (on top of `SafeTensorsError` from the reader).
public enum CheckpointError: Error, CustomStringConvertible, Sendable {
  /// A path that is neither a safetensors file nor a diffusers folder.
  case unsupportedInput(path: String, reason: String)
  /// A diffusers folder whose JSON is not what diffusers writes.
  case invalidConfig(path: String, reason: String)
  /// A file that exists in the layout but cannot be read (vanished, no permission).
  case unreadable(path: String)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    if case .unreadable = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .unsupportedInput(let path, let reason): return "\(path): \(reason)"
    case .invalidConfig(let path, let reason): return "\(path): \(reason)"
    case .unreadable(let path): return "\(path): cannot read the file"
    }
  }
}

/// Builds an `InspectionReport` for a safetensors file or a diffusers folder.
public enum Inspector {
  /// What to compute beyond the header (each costs a full read of the file).
  public struct Options: Sendable {
    public var hashes = false
    public var scan = false
    public var listKeys = false
    /// Where hashes are looked up and recorded (nil: always computed, nothing recorded).
    public var hashCache: HashCache?
    public init(hashes: Bool = false, scan: Bool = false, listKeys: Bool = false, hashCache: HashCache? = nil) {
      self.hashes = hashes
      self.scan = scan
      self.listKeys = listKeys
      self.hashCache = hashCache
    }
  }

  /// Inspects `path`. `progress` receives (bytes done, bytes total) during hashing and scanning.
  public static func inspect(
    path: String, options: Options = Options(), progress: ((Int, Int) -> Void)? = nil
  ) throws -> InspectionReport {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
      return try DiffusersFolder.inspect(path: path, options: options)
    }
    let file = try SafeTensorsFile(path: path)
    return inspect(file: file, options: options, progress: progress)
  }

  /// Inspects an opened safetensors file.
  public static func inspect(
    file: SafeTensorsFile, options: Options = Options(), progress: ((Int, Int) -> Void)? = nil
  ) -> InspectionReport {
    let tensors = file.tensors
    var shapes: [String: [Int]] = [:]
    shapes.reserveCapacity(tensors.count)
    for tensor in tensors { shapes[tensor.name] = tensor.shape }
    let keys = Set(shapes.keys)
    let layout = Layout.detect(keys: keys)
    var architecture: ArchitectureReport
    var diffusersCheck: KeyCheck?
    if layout.name == "diffusers-unet", let translation = DiffusersUNetTranslation(diffusersShapes: shapes) {
      // Same detector, same template: diffusers names are read through the key map.
      architecture = ArchitectureDetector.detect(
        shapes: translation.singleFileShapes, unetPrefix: SingleFilePrefix.unet)
      architecture.evidence.insert(
        "diffusers UNet names read through the key map (\(translation.singleFileShapes.count) of \(shapes.count) keys translate)",
        at: 0)
      if let (template, name) = TemplateComparison.template(for: architecture, shapes: translation.singleFileShapes) {
        diffusersCheck = DiffusersTemplateComparison.compare(
          actual: [.unet: shapes], template: template, name: name + " UNet, diffusers names")
      }
    } else {
      architecture = ArchitectureDetector.detect(shapes: shapes, unetPrefix: layout.unetPrefix ?? SingleFilePrefix.unet)
      if let subfolder = DiffusersTemplateComparison.componentFile(layout: layout, shapes: shapes) {
        diffusersCheck = DiffusersTemplateComparison.compare(
          actual: [subfolder: shapes], template: .sdxlBase, name: "sdxl-base \(subfolder.rawValue), diffusers names")
      }
    }

    var summaries: [Component: ComponentSummary] = [:]
    var dtypes: [String: Int] = [:]
    var parameters = 0
    for tensor in tensors {
      let component = layout.component(of: tensor.name)
      var summary =
        summaries[component] ?? ComponentSummary(component: component, tensors: 0, parameters: 0, bytes: 0, dtypes: [:])
      summary.tensors += 1
      summary.bytes += tensor.byteCount
      if tensor.dtype.isFloatingPoint {
        summary.parameters += tensor.elementCount
        parameters += tensor.elementCount
      }
      summary.dtypes[tensor.dtype.rawValue, default: 0] += 1
      summaries[component] = summary
      dtypes[tensor.dtype.rawValue, default: 0] += 1
    }

    let sidecar = sidecarYAML(for: file.path)
    let prediction = PredictionDetector.detect(keys: keys, metadata: file.metadata, sidecarYAML: sidecar)
    var anomalies = Anomalies.find(file: file, layout: layout, architecture: architecture, prediction: prediction)
    let keyCheck =
      diffusersCheck ?? TemplateComparison.compare(shapes: shapes, layout: layout, architecture: architecture)
    if let finding = keyCheck?.finding { anomalies.append(finding) }

    var hashes: HashResult?
    var findings: [ScanFinding]?
    let total = (options.hashes ? file.fileSize : 0) + (options.scan ? file.header.dataByteCount : 0)
    if options.hashes {
      hashes = ModelHasher.hashes(of: file.mapping, dataOffset: file.dataOffset, cache: options.hashCache) { done, _ in
        progress?(done, total)
      }
    }
    if options.scan {
      var found: [ScanFinding] = []
      var done = options.hashes ? file.fileSize : 0
      for tensor in tensors {
        let bytes = file.data(tensor)
        if let counts = NonFiniteScan.count(bytes, dtype: tensor.dtype), counts.nan + counts.infinite > 0 {
          found.append(ScanFinding(tensor: tensor.name, nan: counts.nan, infinite: counts.infinite))
        }
        file.mapping.advise(
          offset: file.dataOffset + tensor.dataOffsets.begin, count: tensor.byteCount, willNeed: false)
        done += tensor.byteCount
        progress?(done, total)
      }
      findings = found
      if !found.isEmpty {
        anomalies.append(
          Anomaly(
            severity: "error", code: "nonfinite-values",
            message:
              "\(found.count) tensors hold NaN or Inf values (fp16 overflow or a broken merge): the model will render black or noise",
            tensors: Array(found.map(\.tensor).prefix(20))))
      }
    }

    return InspectionReport(
      path: file.path, format: "safetensors", layout: layout.name, fileSize: file.fileSize,
      headerBytes: file.headerLength, tensorCount: tensors.count, parameterCount: parameters, dtypes: dtypes,
      architecture: architecture, components: summaries.values.sorted { $0.component < $1.component },
      prediction: prediction, metadata: file.metadata, hashes: hashes?.hashes, keyCheck: keyCheck,
      anomalies: anomalies, nonFinite: findings,
      keys: options.listKeys
        ? tensors.sorted { $0.name < $1.name }.map {
          KeyEntry(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape, component: layout.component(of: $0.name))
        } : nil,
      hashesFromCache: hashes?.fromCache)
  }

  /// The text of `<stem>.yaml` beside `path` (A1111's per-model config), if present and small.
  static func sidecarYAML(for path: String) -> String? {
    guard path.hasSuffix(".safetensors") else { return nil }
    let yaml = String(path.dropLast(".safetensors".count)) + ".yaml"
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: yaml),
      let size = attributes[.size] as? Int, size < 1 << 20
    else { return nil }
    return try? String(contentsOfFile: yaml, encoding: .utf8)
  }
}

/// How a file's keys are organised, and so which prefix each component lives under.
public struct Layout: Sendable {
  /// Stable name used in reports.
  public let name: String
  /// Where the UNet's LDM-named keys start, when it has some.
  public let unetPrefix: String?
  private let fixedComponent: Component?

  /// Detects the layout from key names.
  public static func detect(keys: Set<String>) -> Layout {
    func any(_ prefix: String) -> Bool { keys.contains { $0.hasPrefix(prefix) } }
    if any(SingleFilePrefix.unet) {
      let others = any(SingleFilePrefix.vae) || any("conditioner.") || any(SingleFilePrefix.sd1TextEncoder)
      if !others { return Layout(name: "unet-only", unetPrefix: SingleFilePrefix.unet, fixedComponent: nil) }
      let name = any(SingleFilePrefix.sd1TextEncoder) ? "sd1-single-file" : "single-file"
      return Layout(name: name, unetPrefix: SingleFilePrefix.unet, fixedComponent: nil)
    }
    if keys.contains("input_blocks.0.0.weight") {
      return Layout(name: "unet-only", unetPrefix: "", fixedComponent: .unet)
    }
    if keys.contains("conv_in.weight") && any("down_blocks.") && any("time_embedding.") {
      return Layout(name: "diffusers-unet", unetPrefix: nil, fixedComponent: .unet)
    }
    if any("encoder.down_blocks.") || any("decoder.up_blocks.") {
      return Layout(name: "diffusers-vae", unetPrefix: nil, fixedComponent: .vae)
    }
    // transformers >= 5 saves CLIPTextModel without the `text_model.` level.
    if any("text_model.") || keys.contains("embeddings.token_embedding.weight") {
      let big = keys.contains("text_projection.weight")
      return Layout(name: "diffusers-text-encoder", unetPrefix: nil, fixedComponent: big ? .clipG : .clipL)
    }
    if any(SingleFilePrefix.vae) || any("conditioner.") {
      return Layout(name: "single-file", unetPrefix: SingleFilePrefix.unet, fixedComponent: nil)
    }
    return Layout(name: "unknown", unetPrefix: nil, fixedComponent: .other)
  }

  /// The component a key of this layout belongs to.
  public func component(of key: String) -> Component {
    if let fixedComponent { return fixedComponent }
    return Checkpoint.component(ofSingleFileKey: key)
  }
}
