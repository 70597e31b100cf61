import ArgumentParser
import Checkpoint
import Foundation
import TorchImport
import Transforms

extension Convert {
  /// PyTorch checkpoint → safetensors through the restricted unpickler; other changes are a
  /// second `convert` of the result, so each step stays simple and verifiable.
  func importTorch() throws {
    guard dtype == nil, components == nil, keep.isEmpty, !clamp, !dropEMA, replaceVAE == nil, setPrediction == nil,
      layout == .singleFile, !output.hasSuffix(".gguf")
    else {
      throw ValidationError(
        "a PyTorch checkpoint is imported as it is: convert it to .safetensors first, then apply other changes to the result"
      )
    }
    let bar = ProgressBar("importing", total: 1, quiet: json)
    let report = try TorchImporter.convert(
      input: input, output: output, keepEMA: keepEMA,
      metadata: ["rouwei.tool": "rouwei-ckpt", "rouwei.version": ToolInfo.version]
    ) { done, total in bar.update(Double(done) / Double(max(total, 1))) }
    bar.finish()
    if json {
      try printJSON(report)
      return
    }
    print(
      "\(output): \(report.tensorsWritten) tensors imported from \(report.format) (\(report.tensorsMadeContiguous) made contiguous), \(report.bytesOut) bytes; nothing in the pickle was run"
    )
    if report.emaTensorsDropped > 0 { print("dropped \(report.emaTensorsDropped) EMA tensors (--keep-ema keeps them)") }
    if report.trainingStateTensorsDropped > 0 {
      print("dropped \(report.trainingStateTensorsDropped) optimizer/training-state tensors")
    }
  }
}

extension TorchImportError: ExitStatusProviding {
  public var exitStatus: ExitStatus { .badInput }
}
