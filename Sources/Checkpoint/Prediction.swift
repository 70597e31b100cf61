import Foundation

/// What a model predicts: the noise (epsilon) or the velocity (v). The one prediction type of
/// every module: detection, conversion and merge markers, sampling, the behavioural probe.
public enum PredictionType: String, Codable, Sendable, CaseIterable {
  case epsilon
  case v
  /// Continuous-EDM v-prediction (CosXL style, `edm_vpred.sigma_max`).
  case edmV = "edm_v"

  /// Whether the network's output is a velocity (v or EDM v).
  public var isV: Bool { self != .epsilon }
}

/// How a model must be sampled: its prediction type and whether its schedule was rescaled to zero
/// terminal SNR. Decided once, from the file (`PredictionReport.behaviour`) or an explicit override.
public struct ModelBehaviour: Codable, Sendable, Equatable {
  public var prediction: PredictionType
  public var zeroTerminalSNR: Bool
  public init(prediction: PredictionType, zeroTerminalSNR: Bool) {
    self.prediction = prediction
    self.zeroTerminalSNR = zeroTerminalSNR
  }
}

/// One piece of evidence about the prediction type.
public struct PredictionEvidence: Codable, Sendable, Equatable {
  /// Where it comes from: `marker`, `metadata`, `scheduler_config`, `sidecar`.
  public var source: String
  /// The key or file it was read from.
  public var key: String
  /// What it says, e.g. `v`, `epsilon`, `zero-terminal SNR`.
  public var says: String
}

/// The prediction type a file declares, how each loader will treat it, and any contradictions.
public struct PredictionReport: Codable, Sendable {
  /// What the evidence, weighed as the loaders weigh it, says the model is.
  public var prediction: PredictionType
  /// Whether zero-terminal-SNR sigmas are declared.
  public var zeroTerminalSNR: Bool
  /// Every piece of evidence found.
  public var evidence: [PredictionEvidence]
  /// What ComfyUI / A1111 / Forge will use when loading the file (they read only the marker tensors).
  public var loadedByComfyUIAs: String
  /// Contradictions and their consequences, one sentence each.
  public var conflicts: [String]
  /// What loaders will sample the file as: the marker tensors for a single file (`v_pred`,
  /// `edm_vpred.sigma_max`), `scheduler_config.json` for a diffusers folder. `prediction` may differ
  /// when metadata says v without a marker.
  public var declared: PredictionType
  /// Whether the file is a diffusers folder (its declaration is `scheduler_config.json`).
  public var isDiffusersFolder: Bool

  /// How the model should be sampled: the evidence's prediction type with its zero-terminal SNR.
  public var behaviour: ModelBehaviour {
    ModelBehaviour(prediction: prediction, zeroTerminalSNR: zeroTerminalSNR)
  }

  /// Where `behaviour` comes from, in a few words: the evidence's sources and keys.
  public var source: String {
    evidence.isEmpty
      ? "no markers (epsilon assumed)" : evidence.map { "\($0.source) \($0.key)" }.joined(separator: ", ")
  }

  /// The marker tensors found (`v_pred`, `ztsnr`, `edm_vpred.sigma_max`).
  public var markers: [String] { evidence.filter { $0.source == "marker" }.map(\.key) }
}

/// Collects prediction-type evidence as each tool reads it.
public enum PredictionDetector {
  /// - Parameters:
  ///   - keys: tensor names of the file (marker tensors are looked up by presence, as every loader does).
  ///   - metadata: the safetensors `__metadata__`.
  ///   - schedulerConfig: a diffusers `scheduler_config.json`, if the model is a diffusers folder.
  ///   - sidecarYAML: the text of a `<stem>.yaml` beside the file, if any.
  public static func detect(
    keys: Set<String>, metadata: [String: String], schedulerConfig: [String: Any]? = nil, sidecarYAML: String? = nil
  ) -> PredictionReport {
    var evidence: [PredictionEvidence] = []
    let hasV = keys.contains(MarkerKey.vPrediction)
    let hasZ = keys.contains(MarkerKey.zeroTerminalSNR)
    let hasEDM = keys.contains(MarkerKey.edmVPredSigmaMax)
    if hasV { evidence.append(.init(source: "marker", key: MarkerKey.vPrediction, says: "v")) }
    if hasZ { evidence.append(.init(source: "marker", key: MarkerKey.zeroTerminalSNR, says: "zero-terminal SNR")) }
    if hasEDM { evidence.append(.init(source: "marker", key: MarkerKey.edmVPredSigmaMax, says: "edm_v")) }

    var declared: [(String, PredictionType)] = []
    var declaredZ = false
    for key in ["modelspec.prediction_type", "modelspec.predict_key"] {
      if let value = metadata[key], let type = parse(value) {
        evidence.append(.init(source: "metadata", key: key, says: type.rawValue))
        declared.append(("metadata \(key)", type))
      }
    }
    if let value = metadata["ss_v_parameterization"], value.lowercased() == "true" {
      evidence.append(.init(source: "metadata", key: "ss_v_parameterization", says: "v"))
      declared.append(("metadata ss_v_parameterization", .v))
    }
    for key in ["ss_zero_terminal_snr", "modelspec.zero_terminal_snr"] where metadata[key]?.lowercased() == "true" {
      evidence.append(.init(source: "metadata", key: key, says: "zero-terminal SNR"))
      declaredZ = true
    }
    if let schedulerConfig {
      if let value = schedulerConfig["prediction_type"] as? String, let type = parse(value) {
        evidence.append(.init(source: "scheduler_config", key: "prediction_type", says: type.rawValue))
        declared.append(("scheduler_config.json", type))
      }
      if let value = schedulerConfig["rescale_betas_zero_snr"] as? Bool, value {
        evidence.append(.init(source: "scheduler_config", key: "rescale_betas_zero_snr", says: "zero-terminal SNR"))
        declaredZ = true
      }
    }
    if let sidecarYAML, let type = parseSidecar(sidecarYAML) {
      evidence.append(.init(source: "sidecar", key: "parameterization", says: type.rawValue))
      declared.append(("sidecar .yaml", type))
    }

    // Loaders decide by marker presence alone (ComfyUI model_detection, A1111-dev, Forge, sd.cpp).
    let markerType: PredictionType = hasEDM ? .edmV : (hasV ? .v : .epsilon)
    var conflicts: [String] = []
    let isFolder = schedulerConfig != nil
    var prediction = markerType
    if isFolder, let fromScheduler = declared.first(where: { $0.0 == "scheduler_config.json" })?.1 {
      prediction = fromScheduler
    }
    for (source, type) in declared where type != prediction {
      if !isFolder && type == .v && prediction == .epsilon {
        conflicts.append(
          "\(source) says v-prediction but the file has no `v_pred` tensor: ComfyUI, A1111 and Forge will load it as epsilon and render noise or washed-out images (add the marker with `convert --set-prediction v`)"
        )
        prediction = .v
      } else {
        let consequence =
          isFolder
          ? "diffusers follows scheduler_config.json"
          : "ComfyUI, A1111 and Forge follow the markers and will load it as \(markerType.rawValue)"
        conflicts.append("\(source) says \(type.rawValue) but the markers say \(markerType.rawValue): \(consequence)")
      }
    }
    var zero = hasZ || declaredZ
    if hasZ && !hasV && !hasEDM {
      conflicts.append(
        "`ztsnr` without `v_pred`: ComfyUI enables zero-terminal SNR only together with v-prediction, so the marker is ignored there"
      )
    }
    if declaredZ && !hasZ && !isFolder && prediction != .epsilon {
      conflicts.append(
        "metadata declares zero-terminal SNR but the file has no `ztsnr` tensor: ComfyUI and A1111 will use the ordinary schedule (no true black)"
      )
    }
    if prediction == .epsilon && !hasZ { zero = declaredZ }
    let loaded: String
    switch markerType {
    case .edmV: loaded = "EDM v-prediction"
    case .v: loaded = hasZ ? "v-prediction with zero-terminal SNR" : "v-prediction"
    case .epsilon: loaded = "epsilon"
    }
    return PredictionReport(
      prediction: prediction, zeroTerminalSNR: zero, evidence: evidence,
      loadedByComfyUIAs: isFolder ? "n/a (diffusers folder)" : loaded, conflicts: conflicts,
      declared: isFolder ? prediction : markerType, isDiffusersFolder: isFolder)
  }

  /// Reads a prediction-type spelling (`v`, `v_prediction`, `epsilon`, `eps`, …).
  public static func parse(_ value: String) -> PredictionType? {
    switch value.lowercased().trimmingCharacters(in: .whitespaces) {
    case "v", "v_prediction", "v-prediction", "vpred", "v_pred": return .v
    case "epsilon", "eps", "epsilon_prediction": return .epsilon
    case "edm_v", "v_edm": return .edmV
    default: return nil
    }
  }

  /// A1111-style config: `parameterization: "v"` under `model.params`.
  static func parseSidecar(_ text: String) -> PredictionType? {
    for line in text.split(whereSeparator: \.isNewline) {
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      guard trimmed.hasPrefix("parameterization:") else { continue }
      let value = trimmed.dropFirst("parameterization:".count)
        .trimmingCharacters(in: CharacterSet(charactersIn: " \"'"))
      return parse(value) ?? (value == "eps" ? .epsilon : nil)
    }
    return nil
  }
}
