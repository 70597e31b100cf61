import Checkpoint
import Weights

extension ChangeKind {
  /// The kind of change from `reference` to `model` for any two artifacts (safetensors of any
  /// dtype, GGUF, diffusers folders), from the stored form of each UNet's tensors: quantized
  /// storage (under 16 bits per value: fp8, int8 rows, scaled fp8, and the ggml block types, whose
  /// scales make q8_0 8.5 bits) on at least a tenth of the model's UNet bytes where the reference
  /// has none gives `fp8`; otherwise the stored type holding most bytes decides, as
  /// `inferred(model:reference:)` does for two safetensors files.
  public static func inferred(model: WeightSource, reference: WeightSource) -> ChangeKind {
    func bytes(_ source: WeightSource) -> (byType: [String: Double], narrow: Double) {
      var byType: [String: Double] = [:]
      var narrow = 0.0
      for name in source.names where name.hasPrefix(SingleFilePrefix.unet) {
        guard let entry = source.entry(name) else { continue }
        let size = Double(entry.shape.reduce(1, *)) * entry.bitsPerValue / 8
        byType[entry.storedType, default: 0] += size
        if entry.bitsPerValue < 16 { narrow += size }
      }
      return (byType, narrow)
    }
    let target = bytes(model), source = bytes(reference)
    let total = target.byType.values.reduce(0, +)
    if total > 0 && target.narrow * 10 >= total && source.narrow == 0 { return .fp8 }
    func dominant(_ byType: [String: Double]) -> String? { byType.max { $0.value < $1.value }?.key }
    guard let modelType = dominant(target.byType), let referenceType = dominant(source.byType),
      modelType != referenceType
    else { return .lossless }
    switch modelType {
    case "BF16": return .bf16
    case "F16": return .fp16
    case "F32", "F64": return .lossless
    default: return .fp8
    }
  }
}
