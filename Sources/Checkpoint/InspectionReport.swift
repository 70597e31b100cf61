import SafeTensors

/// Tensor, parameter and dtype counts of one component.
public struct ComponentSummary: Codable, Sendable {
  public var component: Component
  public var tensors: Int
  /// Elements in floating-point tensors (integer buffers such as `position_ids` are not parameters).
  public var parameters: Int
  public var bytes: Int
  /// dtype name → number of tensors.
  public var dtypes: [String: Int]

  /// Memberwise initialiser (public, for other modules' reports).
  public init(component: Component, tensors: Int, parameters: Int, bytes: Int, dtypes: [String: Int]) {
    self.component = component
    self.tensors = tensors
    self.parameters = parameters
    self.bytes = bytes
    self.dtypes = dtypes
  }
}

/// Something wrong or noteworthy about a file.
public struct Anomaly: Codable, Sendable, Equatable {
  /// `error` (the file will misbehave), `warning` (likely a problem) or `info`.
  public var severity: String
  /// A stable identifier, e.g. `nonfinite-values`, `ema-weights`, `position-ids-not-int64`.
  public var code: String
  public var message: String
  /// The tensors concerned (possibly truncated; see `message`).
  public var tensors: [String]

  /// Memberwise initialiser (public, for other modules' reports).
  public init(severity: String, code: String, message: String, tensors: [String]) {
    self.severity = severity
    self.code = code
    self.message = message
    self.tensors = tensors
  }
}

/// Keys missing from or extra to the template the architecture implies.
public struct KeyCheck: Codable, Sendable {
  /// Which template was compared against, e.g. `sdxl-base` or `sdxl-topology (widths read from shapes)`.
  public var template: String
  public var expected: Int
  public var missing: [String]
  public var extra: [String]
  /// Keys present with another shape than the template's.
  public var wrongShape: [String]
}

extension KeyCheck {
  /// The `template-mismatch` finding, or nil when the keys match the template.
  public var finding: Anomaly? {
    guard !missing.isEmpty || !extra.isEmpty || !wrongShape.isEmpty else { return nil }
    return Anomaly(
      severity: missing.isEmpty && wrongShape.isEmpty ? "info" : "warning",
      code: "template-mismatch",
      message:
        "against the \(template) template: \(missing.count) missing, \(extra.count) extra, \(wrongShape.count) with another shape",
      tensors: Array((missing + wrongShape).prefix(20)))
  }
}

/// Per-tensor result of a full scan (`--scan`).
public struct ScanFinding: Codable, Sendable {
  public var tensor: String
  public var nan: Int
  public var infinite: Int
}

/// One key of the file (`--keys`).
public struct KeyEntry: Codable, Sendable {
  public var name: String
  public var dtype: String
  public var shape: [Int]
  public var component: Component
}

/// Everything `rouwei-ckpt info` knows about a file. Field names are part of the JSON interface
/// (documented in Manuals/info.md); add fields, never rename them.
public struct InspectionReport: Codable, Sendable {
  public var path: String
  /// `safetensors`, `gguf` or `diffusers-folder`.
  public var format: String
  /// `single-file`, `unet-only`, `diffusers-folder`, `diffusers-unet`, `diffusers-vae`,
  /// `diffusers-text-encoder`, `sd1-single-file`, or `unknown`.
  public var layout: String
  public var fileSize: Int
  public var headerBytes: Int?
  public var tensorCount: Int
  public var parameterCount: Int
  public var dtypes: [String: Int]
  public var architecture: ArchitectureReport
  public var components: [ComponentSummary]
  public var prediction: PredictionReport
  public var metadata: [String: String]
  public var hashes: ModelHashes?
  /// With `hashes`: whether they came from the hash cache rather than a pass over the file.
  public var hashesFromCache: Bool?
  public var keyCheck: KeyCheck?
  public var anomalies: [Anomaly]
  /// Present with `--scan`: tensors holding NaN or Inf (empty when all are finite).
  public var nonFinite: [ScanFinding]?
  /// Present with `--keys`.
  public var keys: [KeyEntry]?

  /// Memberwise initialiser (public, for other modules' reports).
  public init(
    path: String, format: String, layout: String, fileSize: Int, headerBytes: Int?, tensorCount: Int,
    parameterCount: Int, dtypes: [String: Int], architecture: ArchitectureReport, components: [ComponentSummary],
    prediction: PredictionReport, metadata: [String: String], hashes: ModelHashes?, keyCheck: KeyCheck?,
    anomalies: [Anomaly], nonFinite: [ScanFinding]?, keys: [KeyEntry]?, hashesFromCache: Bool? = nil
  ) {
    self.path = path
    self.format = format
    self.layout = layout
    self.fileSize = fileSize
    self.headerBytes = headerBytes
    self.tensorCount = tensorCount
    self.parameterCount = parameterCount
    self.dtypes = dtypes
    self.architecture = architecture
    self.components = components
    self.prediction = prediction
    self.metadata = metadata
    self.hashes = hashes
    self.hashesFromCache = hashesFromCache
    self.keyCheck = keyCheck
    self.anomalies = anomalies
    self.nonFinite = nonFinite
    self.keys = keys
  }
}
