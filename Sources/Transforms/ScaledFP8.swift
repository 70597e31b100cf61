import Checkpoint
import Foundation
import SafeTensors
import Weights

/// ComfyUI's "scaled fp8" checkpoints: UNet Linear weights stored as float8 e4m3fn with one F32
/// scale each (`<layer>.scale_weight`, W = fp8 × scale), announced by the empty marker tensor
/// `model.diffusion_model.scaled_fp8` whose dtype names the fp8 type (comfy/model_detection.py,
/// comfy/ops.py). Quantization as ComfyUI does it: scale = max|W| / 448, q = fp8(W · (1/scale)).
public enum ScaledFP8 {
  /// The marker key for a full checkpoint.
  public static let marker = MarkerKey.scaledFP8

  /// The per-tensor scale max|W|/448 (1 for an all-zero tensor, so dequantization stays exact).
  public static func scale(file: SafeTensorsFile, tensor: TensorInfo) -> Float {
    var peak: Float = 0
    Int8Rows.forEachRow(file: file, tensor: tensor) { _, values in
      for value in values where !value.isNaN { peak = max(peak, abs(value)) }
    }
    return peak > 0 ? peak / 448 : 1
  }

  /// Writes fp8 e4m3fn codes of W · (1/scale) (saturating at ±448, as torch's cast does).
  public static func quantize(file: SafeTensorsFile, tensor: TensorInfo, scale: Float, sink: TensorSink) throws {
    let reciprocal = 1 / scale
    var codes = [UInt8](repeating: 0, count: tensor.shape[1])
    var failure: Error?
    Int8Rows.forEachRow(file: file, tensor: tensor) { _, values in
      guard failure == nil else { return }
      for (index, value) in values.enumerated() { codes[index] = FloatCodec.e4m3(value * reciprocal).code }
      do { try sink.write(contentsOf: codes) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// Writes fp8 × scale in `target`'s encoding.
  public static func dequantize(
    file: SafeTensorsFile, weight: TensorInfo, scale: TensorInfo, to target: DType, sink: TensorSink
  ) throws {
    guard FloatCodec.supported.contains(scale.dtype), scale.elementCount == 1 else {
      throw ConversionError.invalidRequest("\(file.path): '\(scale.name)' is not a scalar scale")
    }
    let factor = try TensorDecoder(
      name: scale.name, bytes: file.data(scale), elementCount: 1, encoding: .float(scale.dtype), file: file.path
    ).decodeAll()[0]
    let decoder = try TensorDecoder(
      name: weight.name, bytes: file.data(weight), elementCount: weight.elementCount,
      encoding: .scaledFloat(weight.dtype, scale: factor), file: file.path)
    try Streaming.convert(decoder, to: target, policy: .clamp, sink: sink)
  }
}
