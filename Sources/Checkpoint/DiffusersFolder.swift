import Foundation
import SafeTensors

/// A diffusers pipeline folder: `model_index.json` plus one subfolder per component.
public enum DiffusersFolder {
  /// Subfolder → component, for the SDXL pipeline.
  public static let componentFolders: [(folder: String, component: Component)] = [
    ("unet", .unet), ("text_encoder", .clipL), ("text_encoder_2", .clipG), ("vae", .vae),
  ]

  /// The weights file of a component folder (`diffusion_pytorch_model.safetensors` or
  /// `model.safetensors`, or their `.fp16` variants), if present.
  public static func weightsFile(in folder: String) -> String? {
    for name in [
      "diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
      "model.fp16.safetensors",
    ] {
      let path = folder + "/" + name
      if FileManager.default.fileExists(atPath: path) { return path }
    }
    return nil
  }

  /// Reads a small JSON object file.
  public static func readJSON(_ path: String) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CheckpointError.unreadable(path: path)
    }
    return try DiffusersConfig.object(from: data, path: path)
  }

  static func inspect(path: String, options: Inspector.Options) throws -> InspectionReport {
    let index = path + "/model_index.json"
    guard FileManager.default.fileExists(atPath: index) else {
      throw CheckpointError.unsupportedInput(
        path: path, reason: "a folder without model_index.json is not a diffusers pipeline")
    }
    _ = try readJSON(index)
    var summaries: [ComponentSummary] = []
    var dtypes: [String: Int] = [:]
    var total = 0, parameters = 0, size = 0
    var findings: [ScanFinding] = []
    var anomalies: [Anomaly] = []
    var missingFolders: [String] = []
    var shapesByFolder: [DiffusersSubfolder: [String: [Int]]] = [:]
    for (folder, component) in componentFolders {
      guard let weights = weightsFile(in: path + "/" + folder) else {
        missingFolders.append(folder)
        continue
      }
      let file = try SafeTensorsFile(path: weights)
      var summary = ComponentSummary(component: component, tensors: 0, parameters: 0, bytes: 0, dtypes: [:])
      if let subfolder = DiffusersSubfolder(rawValue: folder) {
        shapesByFolder[subfolder] = Dictionary(
          file.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
      }
      for tensor in file.tensors {
        summary.tensors += 1
        summary.bytes += tensor.byteCount
        if tensor.dtype.isFloatingPoint { summary.parameters += tensor.elementCount }
        summary.dtypes[tensor.dtype.rawValue, default: 0] += 1
        dtypes[tensor.dtype.rawValue, default: 0] += 1
        if options.scan, let counts = NonFiniteScan.count(file.data(tensor), dtype: tensor.dtype),
          counts.nan + counts.infinite > 0
        {
          findings.append(ScanFinding(tensor: "\(folder)/\(tensor.name)", nan: counts.nan, infinite: counts.infinite))
        }
      }
      total += summary.tensors
      parameters += summary.parameters
      size += file.fileSize
      summaries.append(summary)
    }
    var evidence: [String] = []
    var kind = ArchitectureKind.unknown
    var unet: UNetConfig?
    if let config = try? readJSON(path + "/unet/config.json") {
      let claim = DiffusersConfig.unetClaim(config)
      evidence.append(claim.evidence)
      kind = claim.kind
      unet = claim.unet
    }
    // The weights decide; config.json is only a claim about them.
    var keyCheck: KeyCheck?
    if let unetShapes = shapesByFolder[.unet], let translation = DiffusersUNetTranslation(diffusersShapes: unetShapes) {
      let fromShapes = ArchitectureDetector.detect(
        shapes: translation.singleFileShapes, unetPrefix: SingleFilePrefix.unet)
      evidence.append(
        "unet weights read through the key map (\(translation.singleFileShapes.count) of \(unetShapes.count) keys translate):"
      )
      evidence += fromShapes.evidence.map { "  " + $0 }
      if kind != .unknown && kind != fromShapes.kind {
        anomalies.append(
          Anomaly(
            severity: "warning", code: "config-contradicts-weights",
            message: "unet/config.json describes \(kind.title) but the unet weights are \(fromShapes.kind.title)",
            tensors: []))
      }
      kind = fromShapes.kind
      unet = fromShapes.unet ?? unet
      if let (template, name) = TemplateComparison.template(for: fromShapes, shapes: translation.singleFileShapes) {
        // Reduced-width models: only the UNet's widths are known, so only the UNet is compared.
        let actual = kind == .sdxlReduced ? shapesByFolder.filter { $0.key == .unet } : shapesByFolder
        keyCheck = DiffusersTemplateComparison.compare(
          actual: actual, template: template, name: name + ", diffusers names")
      }
    }
    for folder in missingFolders where !(kind == .sdxlRefiner && folder == "text_encoder") {
      anomalies.append(
        Anomaly(severity: "warning", code: "missing-component", message: "no weights in \(folder)/", tensors: []))
    }
    if let finding = keyCheck?.finding { anomalies.append(finding) }
    evidence.append("⇒ \(kind.title)")
    let scheduler = try? readJSON(path + "/scheduler/scheduler_config.json")
    if scheduler == nil {
      anomalies.append(
        Anomaly(
          severity: "warning", code: "missing-scheduler",
          message: "no scheduler/scheduler_config.json: diffusers will assume epsilon", tensors: []))
    }
    let prediction = PredictionDetector.detect(keys: [], metadata: [:], schedulerConfig: scheduler ?? [:])
    if !findings.isEmpty {
      anomalies.append(
        Anomaly(
          severity: "error", code: "nonfinite-values", message: "\(findings.count) tensors hold NaN or Inf values",
          tensors: Array(findings.map(\.tensor).prefix(20))))
    }
    return InspectionReport(
      path: path, format: "diffusers-folder", layout: "diffusers-folder", fileSize: size, headerBytes: nil,
      tensorCount: total, parameterCount: parameters, dtypes: dtypes,
      architecture: ArchitectureReport(kind: kind, unet: unet, inpainting: unet?.inChannels == 9, evidence: evidence),
      components: summaries, prediction: prediction, metadata: [:], hashes: nil, keyCheck: keyCheck,
      anomalies: anomalies,
      nonFinite: options.scan ? findings : nil, keys: nil)
  }
}
