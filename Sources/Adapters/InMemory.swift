import Foundation
import SafeTensors
import Weights

extension AdapterStack {
  /// Applies the adapters to `source` in memory: every weight they change is served from then on
  /// as the base's values plus the adapters, rounded once to the base's stored dtype (F16, BF16 or
  /// F32; other stored forms are served as F32) — the values a bake writes, so a render through
  /// this source equals a render of the baked file. Computed when the weight is first asked for.
  public func apply(to source: WeightSource) throws {
    try checkTargets(shape: source.shape)
    for key in targetKeys.sorted() {
      guard let shape = source.shape(key) else { continue }
      let base = try source.decoder(key)
      let dtype: DType
      if case .float(let stored) = base.encoding, [.f16, .bf16, .f32].contains(stored) {
        dtype = stored
      } else {
        dtype = .f32
      }
      let stored = source.storedType(key) ?? dtype.rawValue
      try source.replace(key, storedType: "\(stored) + adapters") { [self] in
        let count = shape.reduce(1, *), columns = count / Self.rowCount(shape), width = dtype.bitWidth / 8
        var bytes = [UInt8](repeating: 0, count: count * width)
        try bytes.withUnsafeMutableBytes { out in
          try self.adapt(
            key: key, shape: shape,
            load: { rows, tile in base.decode((rows.lowerBound * columns)..<(rows.upperBound * columns), into: tile) },
            body: { rows, tile in
              Self.encode(
                tile, as: dtype,
                into: UnsafeMutableRawBufferPointer(rebasing: out[(rows.lowerBound * columns * width)...]))
            })
        }
        return try TensorDecoder.owning(bytes, name: key, elementCount: count, dtype: dtype)
      }
    }
  }

  /// Float32 → `dtype` bytes at the start of `out`, rounding to nearest even (as a bake's
  /// encoder does).
  static func encode(_ values: UnsafeBufferPointer<Float>, as dtype: DType, into out: UnsafeMutableRawBufferPointer) {
    for (i, value) in values.enumerated() {
      switch dtype {
      case .f16: out.storeBytes(of: Float16(value).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
      case .bf16: out.storeBytes(of: bfloat16(value).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
      default: out.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
      }
    }
  }

  static func bfloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return 0xFFFF }
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
  }
}
