import Checkpoint
import SafeTensors

/// The one rule for quantized layers in a safetensors file: which scale tensor a stored weight is
/// multiplied by, and which tensors are bookkeeping (scales, format records, markers) rather than
/// weights. `TensorDecoder.resolve` applies it, the converter drops bookkeeping when it
/// dequantizes, and the merger skips it when it compares and blends inputs, so a scale is applied
/// everywhere or nowhere.
///
/// - I8 `<layer>.weight` (2-D): per-row `<layer>.weight_scale` (ComfyUI `int8_tensorwise`, sd.cpp).
/// - F8 `<layer>.weight` in a file with the `scaled_fp8` marker: `<layer>.scale_weight` (ComfyUI
///   scaled fp8); otherwise, or when that layer has none, a scalar `<layer>.weight_scale`
///   (comfy_quant tensorwise fp8, which needs no marker).
/// - Anything else is used as stored: a `weight_scale` beside a float weight is data, not a scale.
public enum QuantizedLayers {
  /// The marker tensors announcing ComfyUI scaled fp8 (full checkpoint and UNet-only spellings).
  public static let scaledFP8Markers: Set<String> = [MarkerKey.scaledFP8, "scaled_fp8"]

  /// Whether `file` carries the scaled-fp8 marker.
  public static func hasScaledFP8Marker(_ file: SafeTensorsFile) -> Bool {
    scaledFP8Markers.contains(where: file.contains)
  }

  /// The layer a weight key belongs to (`…to_q.weight` → `…to_q`), nil for a key that is not a weight.
  public static func layer(of key: String) -> String? {
    key.hasSuffix(".weight") && key.count > ".weight".count ? String(key.dropLast(".weight".count)) : nil
  }

  /// The scale tensor `weight` is multiplied by when decoded, or nil when it is used as stored.
  public static func scale(of weight: TensorInfo, in file: SafeTensorsFile) -> TensorInfo? {
    guard let layer = layer(of: weight.name) else { return nil }
    switch weight.dtype {
    case .i8:
      return weight.shape.count == 2 ? file.info(layer + ".weight_scale") : nil
    case .f8e4m3, .f8e5m2:
      if hasScaledFP8Marker(file), let scale = file.info(layer + ".scale_weight") { return scale }
      return file.info(layer + ".weight_scale")
    default:
      return nil
    }
  }

  /// Whether `weight` is stored quantized (its decoder multiplies by a scale or holds int8 codes).
  public static func isQuantized(_ weight: TensorInfo, in file: SafeTensorsFile) -> Bool {
    weight.dtype == .i8 ? weight.name.hasSuffix(".weight") : scale(of: weight, in: file) != nil
  }

  /// Whether `key` is bookkeeping of a quantized layer of `file`: a scale its weight's decoder
  /// applies, a `comfy_quant` format record or fp8 `scale_input` of a quantized layer, or the
  /// scaled-fp8 marker. Bookkeeping vanishes when the layer is dequantized and is never blended.
  public static func isBookkeeping(_ key: String, in file: SafeTensorsFile) -> Bool {
    if scaledFP8Markers.contains(key) { return true }
    for suffix in [".weight_scale", ".scale_weight", ".comfy_quant", ".scale_input"] where key.hasSuffix(suffix) {
      let layer = String(key.dropLast(suffix.count))
      guard let weight = file.info(layer + ".weight") else { return false }
      switch suffix {
      case ".comfy_quant", ".scale_input": return isQuantized(weight, in: file)
      default: return scale(of: weight, in: file)?.name == key
      }
    }
    return false
  }
}
