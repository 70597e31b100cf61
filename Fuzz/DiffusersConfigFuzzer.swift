// libFuzzer target for the diffusers folder's config files (built by Scripts/fuzz with
// -sanitize=fuzzer,address against the SafeTensors and Checkpoint modules; not part of the package
// build). Every byte string is read as `model_index.json`, `unet/config.json` and
// `scheduler/scheduler_config.json` are read by `DiffusersFolder`: it must end in a JSON object or a
// typed CheckpointError, and an object must go through the UNet claim and the prediction-type
// evidence without trapping. A trap, a hang or an unbounded allocation is a finding.

import Checkpoint
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDiffusersConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Data(bytes: data, count: size)
  let object: [String: Any]
  do {
    object = try DiffusersConfig.object(from: bytes, path: "fuzz/unet/config.json")
  } catch is CheckpointError {
    return 0
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  let claim = DiffusersConfig.unetClaim(object)
  precondition(!claim.evidence.isEmpty)
  // As scheduler_config.json of a folder, and through the report's JSON encoding (what `info --json`
  // prints).
  let report = PredictionDetector.detect(keys: [], metadata: [:], schedulerConfig: object)
  do {
    _ = try JSONEncoder().encode(report)
    if let unet = claim.unet { _ = try JSONEncoder().encode(unet) }
  } catch {
    preconditionFailure("report does not encode: \(error)")
  }
  return 0
}
