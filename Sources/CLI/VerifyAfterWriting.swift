import ArgumentParser
import Checkpoint
import Foundation
import Verification
import Weights

/// `--verify` for commands that write a checkpoint (`convert`, `merge`): once the output is
/// complete, run `verify` on it, so a broken artifact fails the command that made it.
struct VerifyAfterWriting: ParsableArguments {
  @Flag(help: "Verify the output once it is written (renders and checks it; exit 1 if a check fails).")
  var verify = false

  @Option(help: "With --verify: also compare the renders with this checkpoint's (e.g. the conversion's input).")
  var verifyReference: String?

  @Option(help: "With --verify: the verify preset (quick, standard, full; default quick).")
  var verifyPreset: VerifyPreset?

  @Option(help: "With --verify: folder for the renders and the contact sheet (default ./verify-<output name>).")
  var verifyOut: String?

  /// Whether any verification was asked for (`--verify-reference` implies `--verify`).
  var isEnabled: Bool { verify || verifyReference != nil }

  func validate() throws {
    if !isEnabled && (verifyPreset != nil || verifyOut != nil) {
      throw ValidationError("--verify-preset and --verify-out need --verify")
    }
  }

  /// The verification these options describe for `output`; `change` is the kind of change from
  /// the reference (a merge's renders are meant to differ: compared, never failed).
  /// `partsFrom` (the conversion's input) lends the text encoders and VAE a UNet-only output lacks.
  func request(for output: String, change: ChangeKind? = nil, partsFrom: String? = nil) throws -> VerifyRequest {
    var load = ModelLoadOptions(hashCache: HashCache.fromEnvironment())
    if let partsFrom {
      let written = try WeightSource(path: output)
      let present = Set(written.names.map { component(ofSingleFileKey: $0) })
      if !present.contains(.clipL) || !present.contains(.clipG) { load.textEncoders = [partsFrom] }
      if !present.contains(.vae) { load.vae = partsFrom }
    }
    var request = VerifyRequest(model: output, load: load)
    request.reference = verifyReference
    if verifyReference != nil { request.change = change }
    if let verifyPreset { request.preset = verifyPreset }
    request.outputFolder = verifyOut
    return request
  }

  /// Runs the verification of `output` when asked: the report, or nil when not asked. Progress
  /// and the human report are printed unless `json` (then the caller prints the report).
  func run(on output: String, json: Bool, change: ChangeKind? = nil, partsFrom: String? = nil) throws -> VerifyReport? {
    guard isEnabled else { return nil }
    let request = try request(for: output, change: change, partsFrom: partsFrom)
    let report = try withProgress(quiet: json) { try request.run(progress: $0) }
    if !json { print(report.text) }
    return report
  }
}

extension VerifyAfterWriting {
  /// `--json` output of a writing command: its `report` alone, or, with `--verify`, beside the
  /// verification of `output` as one document; then exit 1 if verification failed.
  func printJSON<Report: Encodable>(
    _ report: Report, output: String, change: ChangeKind? = nil, partsFrom: String? = nil
  ) throws {
    guard let verified = try run(on: output, json: true, change: change, partsFrom: partsFrom) else {
      return try CLI.printJSON(report)
    }
    try CLI.printJSON(ReportWithVerification(result: report, verification: verified))
    try requirePassed(verified)
  }

  /// Human output of a writing command, after its own lines: the verification report when asked,
  /// then exit 1 if it failed.
  func printText(output: String, change: ChangeKind? = nil, partsFrom: String? = nil) throws {
    try requirePassed(try run(on: output, json: false, change: change, partsFrom: partsFrom))
  }
}

/// A command's own report with its `--verify` report beside it, as one JSON document.
struct ReportWithVerification<Result: Encodable>: Encodable {
  let result: Result
  let verification: VerifyReport
}

/// Throws exit 1 when the verification failed (after every report has been printed).
func requirePassed(_ report: VerifyReport?) throws {
  if let report, !report.passed { throw VerificationFailure(failures: report.failures.count) }
}
