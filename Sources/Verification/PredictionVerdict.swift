import Checkpoint
import Foundation

/// The probe's behaviour set against what the file declares, as a check.
public struct PredictionVerdict: Codable, Sendable, Equatable {
  /// What loaders will use: `epsilon`, `v` or `edm_v` (markers for single files,
  /// `scheduler_config.json` for diffusers folders).
  public var declared: String
  /// What the probe saw.
  public var behaviour: ProbeBehaviour
  /// The probe's confidence.
  public var confidence: Double
  /// False when the behaviour contradicts the declaration.
  public var passed: Bool
  /// Whether the probe could not decide (a pass, but worth a warning).
  public var inconclusive: Bool
  /// What it means, including what ComfyUI and A1111 will do with the file.
  public var explanation: String

  /// Compares `result` with the `report` of `PredictionDetector.detect`.
  public init(result: PredictionProbe.Result, report: PredictionReport) {
    let isFolder = report.loadedByComfyUIAs.hasPrefix("n/a")
    let markers = Set(report.evidence.filter { $0.source == "marker" }.map(\.key))
    let declaredType: Checkpoint.PredictionType
    if isFolder {
      declaredType = report.prediction
    } else if markers.contains(MarkerKey.edmVPredSigmaMax) {
      declaredType = .edmV
    } else {
      declaredType = markers.contains(MarkerKey.vPrediction) ? .v : .epsilon
    }
    declared = declaredType.rawValue
    behaviour = result.behaviour
    confidence = result.confidence
    let declaresV = declaredType != .epsilon
    let confidence = String(format: "%.2f", result.confidence)
    switch (result.behaviour, declaresV) {
    case (.undetermined, _):
      passed = true
      inconclusive = true
      explanation =
        "the probe could not tell epsilon from v (\(result.summary)); the file says \(declared)"
    case (.epsilon, false):
      passed = true
      inconclusive = false
      explanation = "marked epsilon and behaves like epsilon (confidence \(confidence))"
    case (.v, true):
      passed = true
      inconclusive = false
      explanation = "marked \(declared) and behaves like v-prediction (confidence \(confidence))"
    case (.v, false):
      passed = false
      inconclusive = false
      let metadataSaysV = report.evidence.contains { $0.source != "marker" && $0.says == "v" }
      explanation =
        (isFolder
          ? "scheduler_config.json says epsilon but the UNet behaves like v-prediction (confidence "
            + "\(confidence)): diffusers will sample it as epsilon and render washed-out, noisy or garbled images."
          : "marked epsilon (no `v_pred` key\(metadataSaysV ? "; metadata says v, which loaders ignore" : "")"
            + ") but the UNet behaves like v-prediction (confidence \(confidence)): ComfyUI decides "
            + "v-prediction from the `v_pred` key and A1111 from that key or a sidecar .yaml with "
            + "`parameterization: \"v\"`, so both will sample it as epsilon and render washed-out, "
            + "noisy or garbled images. Typical of a merge or conversion that dropped the markers; restore them with "
            + "`convert --set-prediction v` (add `--ztsnr` if it was trained with zero-terminal SNR).")
    case (.epsilon, true):
      passed = false
      inconclusive = false
      explanation =
        (isFolder
          ? "scheduler_config.json says \(declared) but the UNet behaves like epsilon (confidence "
            + "\(confidence)): diffusers will sample it as v and render burned or noisy images."
          : "marked \(declared) (`\(markers.sorted().joined(separator: "`, `"))`) but the UNet behaves like "
            + "epsilon (confidence \(confidence)): ComfyUI and A1111 follow the markers and will sample "
            + "it as v-prediction, which renders burned, over-saturated or noisy images. Remove the "
            + "markers (`convert --set-prediction eps`).")
    }
  }
}
