import Checkpoint
import Foundation
import SafeTensors
import Weights

/// The per-row int8 layout recent ComfyUI (`.comfy_quant` "int8_tensorwise" with row scales) and
/// stable-diffusion.cpp load, for Linear layers: `<layer>.weight` I8 `[out, in]`,
/// `<layer>.weight_scale` F32 `[out]`, `<layer>.comfy_quant` U8 (UTF-8 JSON), plus the file-level
/// `_quantization_metadata`. Per row: s = max|w|/127, q = clamp(round(w/s), −127, 127) with
/// round-half-to-even (torch.round); W ≈ q·s.
public enum Int8Rows {
  /// The JSON each quantized layer's `comfy_quant` tensor holds.
  public static let layerFormat = #"{"format":"int8_tensorwise"}"#

  /// Whether a tensor is a UNet Linear weight (2-D `.weight`), the layers the consumers read as int8.
  public static func quantizable(_ tensor: TensorInfo) -> Bool {
    tensor.name.hasPrefix(SingleFilePrefix.unet) && tensor.name.hasSuffix(".weight") && tensor.shape.count == 2
      && FloatCodec.supported.contains(tensor.dtype) && tensor.elementCount > 0
  }

  /// The layer name of a weight key (`…to_q.weight` → `…to_q`).
  public static func layer(of weightKey: String) -> String { String(weightKey.dropLast(".weight".count)) }

  /// Row scales max|row|/127 (0 for an all-zero row).
  public static func scales(file: SafeTensorsFile, tensor: TensorInfo) -> [Float] {
    let rows = tensor.shape[0], columns = tensor.shape[1]
    var scales = [Float](repeating: 0, count: rows)
    forEachRow(file: file, tensor: tensor) { row, values in
      var peak: Float = 0
      for value in values { peak = max(peak, abs(value)) }
      scales[row] = peak / 127
    }
    _ = columns
    return scales
  }

  /// Writes the int8 codes of `tensor` given its row scales.
  public static func quantize(file: SafeTensorsFile, tensor: TensorInfo, scales: [Float], sink: TensorSink) throws {
    var codes = [Int8](repeating: 0, count: tensor.shape[1])
    var failure: Error?
    forEachRow(file: file, tensor: tensor) { row, values in
      guard failure == nil else { return }
      let scale = scales[row]
      for (index, value) in values.enumerated() {
        let q = scale > 0 ? (value / scale).rounded(.toNearestOrEven) : 0
        codes[index] = Int8(max(-127, min(127, q.isNaN ? 0 : q)))
      }
      do { try sink.write(contentsOf: codes) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// Writes q·s for every element in `target`'s encoding (dequantization).
  public static func dequantize(
    file: SafeTensorsFile, weight: TensorInfo, scale: TensorInfo, to target: DType, sink: TensorSink
  ) throws {
    let rows = weight.shape[0], columns = weight.shape[1]
    guard FloatCodec.supported.contains(scale.dtype), scale.elementCount == rows else {
      throw ConversionError.invalidRequest(
        "\(file.path): '\(scale.name)' does not hold one scale per row of '\(weight.name)'")
    }
    let scales = try TensorDecoder(
      name: scale.name, bytes: file.data(scale), elementCount: rows, encoding: .float(scale.dtype), file: file.path
    ).decodeAll()
    let decoder = try TensorDecoder(
      name: weight.name, bytes: file.data(weight), elementCount: weight.elementCount,
      encoding: .int8Rows(scales: scales, columns: columns), file: file.path)
    try Streaming.convert(decoder, to: target, policy: .clamp, sink: sink)
  }

  /// Calls `body` with each row of a 2-D float tensor as Float32.
  static func forEachRow(file: SafeTensorsFile, tensor: TensorInfo, _ body: (Int, UnsafeBufferPointer<Float>) -> Void) {
    let rows = tensor.shape[0], columns = tensor.shape[1]
    let width = FloatCodec.width(tensor.dtype)
    let bytes = file.data(tensor)
    var values = [Float](repeating: 0, count: columns)
    for row in 0..<rows {
      let slice = UnsafeRawBufferPointer(rebasing: bytes[(row * columns * width)..<((row + 1) * columns * width)])
      values.withUnsafeMutableBufferPointer { FloatCodec.decode(slice, dtype: tensor.dtype, into: $0) }
      values.withUnsafeBufferPointer { body(row, $0) }
    }
  }
}
