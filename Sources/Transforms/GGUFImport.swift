import Checkpoint
import Foundation
import SafeTensors
import Weights

/// GGUF → safetensors: dequantizes every block type to `dtype` (default F16; F32 tensors keep F32
/// when no dtype is asked for), copies integer tensors, and restores torch shapes: ComfyUI-GGUF's
/// `comfy.gguf.orig_shape.*` for tensors it stored reshaped, and our own record of rank-0 tensors.
public enum GGUFImport {
  /// Metadata key listing (newline-separated) the tensors that were rank 0 before export.
  public static let scalarsKey = "rouwei.scalar_tensors"

  public static func convert(input: String, output: String, dtype: DType?) throws -> ConversionReport {
    let start = Date()
    let source = try GGUFFile(path: input)
    let target = dtype ?? .f16
    guard FloatCodec.supported.contains(target) else {
      throw ConversionError.invalidRequest("GGUF can be converted to float dtypes only")
    }
    var entries: [TensorEntry] = []
    let scalars = Set((source.metadata[scalarsKey] ?? "").split(separator: "\n").map(String.init))
    for tensor in source.tensors {
      var shape = try source.originalShape(of: tensor) ?? tensor.shape
      if scalars.contains(tensor.name) && tensor.elementCount == 1 { shape = [] }
      if let integer = tensor.type.integerDType {
        let bytes = source.data(tensor)
        entries.append(TensorEntry(spec: TensorSpec(name: tensor.name, dtype: integer, shape: shape), bytes: bytes))
        continue
      }
      // Fails here, before anything is written, for types without a dequantizer.
      let decoder = try TensorDecoder.resolve(gguf: source, tensor: tensor)
      let out = dtype == nil && tensor.type == .f32 ? DType.f32 : target
      entries.append(
        TensorEntry(spec: TensorSpec(name: tensor.name, dtype: out, shape: shape)) { sink in
          // Dequantized values are finite unless the file holds inf/NaN; saturate rather than refuse.
          try Transcoder.transcode(decoder, to: out, policy: .clamp, sink: sink, file: input, chunkElements: 1 << 16)
        })
    }
    // GGUF's own keys (`general.architecture`, …) describe the GGUF file, not the checkpoint.
    var metadata = source.metadata.filter { !$0.key.hasPrefix("general.") }
    metadata.removeValue(forKey: scalarsKey)
    metadata["rouwei.tool"] = "rouwei-ckpt"
    metadata["rouwei.version"] = ToolInfo.version
    metadata["rouwei.convert"] = #"{"from":"gguf","dtype":"\#(target.rawValue)"}"#
    try SafeTensorsWriter.write(to: output, entries: entries, metadata: metadata, inputs: [input])
    let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    return ConversionReport(
      input: input, output: output, tensorsWritten: entries.count, tensorsConverted: entries.count, tensorsKeptWide: 0,
      tensorsDropped: 0, bytesIn: source.mapping.size, bytesOut: outSize, clamped: [:], nanTensors: [:],
      warnings: [],
      seconds: Date().timeIntervalSince(start))
  }
}
