import ArgumentParser
import Checkpoint

/// `eps` or `v` on the command line (`epsilon`, `v_prediction`… also read); EDM v is detected, never set.
extension PredictionType: ExpressibleByArgument {
  public init?(argument: String) {
    guard let type = PredictionDetector.parse(argument), type != .edmV else { return nil }
    self = type
  }

  public static var allValueStrings: [String] { ["eps", "v"] }
}

/// `--prediction` and `--ztsnr`, shared by `merge` (the result's markers) and `sample`/`verify`
/// (how to sample instead of what the file says).
struct PredictionOptions: ParsableArguments {
  @Option(
    help:
      "The prediction type (eps or v) instead of what the file's markers say: how sample and verify sample it, the markers merge writes (needed when the inputs disagree)."
  )
  var prediction: PredictionType?

  @Flag(help: "With --prediction v: zero-terminal SNR.")
  var ztsnr = false

  func validate() throws {
    if ztsnr && prediction != .v { throw ValidationError("--ztsnr needs --prediction v") }
  }

  /// The override, or nil when the file decides.
  var behaviour: ModelBehaviour? {
    prediction.map { ModelBehaviour(prediction: $0, zeroTerminalSNR: ztsnr) }
  }
}
