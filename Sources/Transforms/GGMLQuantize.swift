import SafeTensors
import Weights

/// ggml's reference block quantizers (`quantize_row_*_ref`), bit-exact: scales are computed in float32
/// and stored as IEEE half; rounding is C's `roundf` for Q8_0 and truncation after `+ 0.5`/`+ 8.5`/`+ 16.5`
/// for the 4- and 5-bit types, as in ggml.
extension GGMLQuantizer {
  /// Quantizes `values` (count a multiple of 32) into `out` (`type.byteCount(elements:)` bytes).
  /// `type` must be `isQuantizable`.
  public static func quantize(_ values: UnsafeBufferPointer<Float>, type: GGMLType, into out: UnsafeMutableRawBufferPointer) {
    precondition(type.isQuantizable, "\(type.name) has no reference quantizer here")
    let blocks = values.count / 32
    precondition(out.count >= blocks * type.blockBytes, "quantize: output too short")
    for block in 0..<blocks {
      let x = UnsafeBufferPointer(rebasing: values[(block * 32)..<((block + 1) * 32)])
      let y = UnsafeMutableRawBufferPointer(rebasing: out[(block * type.blockBytes)..<((block + 1) * type.blockBytes)])
      switch type {
      case .q8_0: q8_0(x, y)
      case .q4_0: q4_0(x, y)
      case .q4_1: q4_1(x, y)
      case .q5_0: q5_0(x, y)
      case .q5_1: q5_1(x, y)
      default: preconditionFailure("\(type) is not a block type")
      }
    }
  }

  static func storeHalf(_ value: Float, _ y: UnsafeMutableRawBufferPointer, _ offset: Int) {
    let bits = FloatCodec.half(value)
    y[offset] = UInt8(bits & 0xFF)
    y[offset + 1] = UInt8(bits >> 8)
  }

  static func q8_0(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
    var amax: Float = 0
    for v in x { amax = max(amax, abs(v)) }
    let d = amax / 127
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, 0)
    for j in 0..<32 {
      // C roundf: half away from zero.
      y[2 + j] = UInt8(bitPattern: Int8(truncate((x[j] * id).rounded(.toNearestOrAwayFromZero))))
    }
  }

  /// The signed value of largest magnitude (the first one on ties), as ggml picks it.
  static func signedMax(_ x: UnsafeBufferPointer<Float>) -> Float {
    var amax: Float = 0, peak: Float = 0
    for v in x where amax < abs(v) {
      amax = abs(v)
      peak = v
    }
    return peak
  }

  /// C's `(int8_t)` cast (truncation toward zero), made total: NaN gives 0 and out-of-range values
  /// saturate instead of trapping (callers refuse non-finite tensors before quantizing).
  @inline(__always) static func truncate(_ value: Float) -> Int {
    value.isNaN ? 0 : Int(max(-128, min(127, value)).rounded(.towardZero))
  }

  static func q4_0(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
    let d = signedMax(x) / -8
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, 0)
    for j in 0..<16 {
      let a = min(15, truncate(x[j] * id + 8.5))
      let b = min(15, truncate(x[16 + j] * id + 8.5))
      y[2 + j] = UInt8(a) | UInt8(b) << 4
    }
  }

  static func q4_1(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
    var low = Float.greatestFiniteMagnitude, high = -Float.greatestFiniteMagnitude
    for v in x {
      low = min(low, v)
      high = max(high, v)
    }
    let d = (high - low) / 15
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, 0)
    storeHalf(low, y, 2)
    for j in 0..<16 {
      let a = min(15, truncate((x[j] - low) * id + 0.5))
      let b = min(15, truncate((x[16 + j] - low) * id + 0.5))
      y[4 + j] = UInt8(a) | UInt8(b) << 4
    }
  }

  static func q5_0(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
    let d = signedMax(x) / -16
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, 0)
    var qh: UInt32 = 0
    for j in 0..<16 {
      let a = UInt32(min(31, truncate(x[j] * id + 16.5)))
      let b = UInt32(min(31, truncate(x[16 + j] * id + 16.5)))
      y[6 + j] = UInt8(a & 0x0F) | UInt8(b & 0x0F) << 4
      qh |= ((a & 0x10) >> 4) << UInt32(j)
      qh |= ((b & 0x10) >> 4) << UInt32(j + 16)
    }
    for k in 0..<4 { y[2 + k] = UInt8((qh >> UInt32(8 * k)) & 0xFF) }
  }

  static func q5_1(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
    var low = Float.greatestFiniteMagnitude, high = -Float.greatestFiniteMagnitude
    for v in x {
      low = min(low, v)
      high = max(high, v)
    }
    let d = (high - low) / 31
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, 0)
    storeHalf(low, y, 2)
    var qh: UInt32 = 0
    for j in 0..<16 {
      // ggml casts to uint8_t here; the values are in [0, 31.5].
      let a = UInt32(truncate((x[j] - low) * id + 0.5))
      let b = UInt32(truncate((x[16 + j] - low) * id + 0.5))
      y[8 + j] = UInt8(a & 0x0F) | UInt8(b & 0x0F) << 4
      qh |= ((a & 0x10) >> 4) << UInt32(j)
      qh |= ((b & 0x10) >> 4) << UInt32(j + 16)
    }
    for k in 0..<4 { y[4 + k] = UInt8((qh >> UInt32(8 * k)) & 0xFF) }
  }
}
