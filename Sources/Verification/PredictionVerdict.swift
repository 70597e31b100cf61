import Checkpoint
import Foundation

/// The probe's behaviour set against what the file declares, as a check.
public struct PredictionVerdict: Codable, Sendable, Equatable {
  /// What loaders will use: `epsilon`, `v` or `edm_v` (markers for single files,
  /// `scheduler_config.json` for diffusers folders): `PredictionReport.declared`.
  public var declared: PredictionType
  /// What the probe saw: epsilon, v, or nil when it could not tell.
  public var behaviour: PredictionType?
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
    let isFolder = report.isDiffusersFolder
    let markers = report.markers
    let declaredType = report.declared
    declared = declaredType
    behaviour = result.behaviour
    confidence = result.confidence
    let declaresV = declaredType.isV
    let confidence = String(format: "%.2f", result.confidence)
    switch (result.behaviour, declaresV) {
    case (nil, _):
      passed = true
      inconclusive = true
      explanation =
        "the probe could not tell epsilon from v (\(result.summary)); the file says \(declared.rawValue)"
    case (.epsilon, false):
      passed = true
      inconclusive = false
      explanation = "marked epsilon and behaves like epsilon (confidence \(confidence))"
    case (.v, true), (.edmV, true):
      passed = true
      inconclusive = false
      explanation = "marked \(declared.rawValue) and behaves like v-prediction (confidence \(confidence))"
    case (.v, false), (.edmV, false):
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
          ? "scheduler_config.json says \(declared.rawValue) but the UNet behaves like epsilon (confidence "
            + "\(confidence)): diffusers will sample it as v and render burned or noisy images."
          : "marked \(declared.rawValue) (`\(markers.sorted().joined(separator: "`, `"))`) but the UNet behaves like "
            + "epsilon (confidence \(confidence)): ComfyUI and A1111 follow the markers and will sample "
            + "it as v-prediction, which renders burned, over-saturated or noisy images. Remove the "
            + "markers (`convert --set-prediction eps`).")
    }
  }
}
