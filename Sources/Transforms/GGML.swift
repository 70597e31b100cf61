/// ggml's tensor types and reference block quantizers (ggml `ggml-quants.c` `quantize_row_*_ref`,
/// `dequantize_row_*`), bit-exact: scales are computed in float32 and stored as IEEE half; rounding
/// is C's `roundf` (half away from zero) for Q8_0 and truncation after `+ 0.5`/`+ 8.5`/`+ 16.5` for
/// the 4- and 5-bit types, as in ggml.
public enum GGMLType: UInt32, Sendable, CaseIterable {
  case f32 = 0
  case f16 = 1
  case q4_0 = 2
  case q4_1 = 3
  case q5_0 = 6
  case q5_1 = 7
  case q8_0 = 8
  case i8 = 24
  case i16 = 25
  case i32 = 26
  case i64 = 27
  case f64 = 28
  case bf16 = 30

  /// Elements per block.
  public var blockSize: Int {
    switch self {
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
    default: return 1
    }
  }

  /// Bytes per block.
  public var blockBytes: Int {
    switch self {
    case .f32, .i32: return 4
    case .f16, .bf16, .i16: return 2
    case .i8: return 1
    case .i64, .f64: return 8
    case .q4_0: return 18
    case .q4_1: return 20
    case .q5_0: return 22
    case .q5_1: return 24
    case .q8_0: return 34
    }
  }

  /// Whether this is a block-quantized type.
  public var isQuantized: Bool { blockSize > 1 }

  /// The name used on the command line and in ggml (`q8_0`, `f16`, …).
  public var name: String {
    switch self {
    case .f32: return "f32"
    case .f16: return "f16"
    case .q4_0: return "q4_0"
    case .q4_1: return "q4_1"
    case .q5_0: return "q5_0"
    case .q5_1: return "q5_1"
    case .q8_0: return "q8_0"
    case .i8: return "i8"
    case .i16: return "i16"
    case .i32: return "i32"
    case .i64: return "i64"
    case .f64: return "f64"
    case .bf16: return "bf16"
    }
  }

  /// Bytes for `elements` values (which must fill whole blocks).
  public func byteCount(elements: Int) -> Int { elements / blockSize * blockBytes }
}

/// Block quantization and dequantization of one row segment (a multiple of 32 values).
public enum GGMLQuantizer {
  /// Quantizes `values` (count a multiple of 32) into `out` (`type.byteCount(elements:)` bytes).
  public static func quantize(_ values: UnsafeBufferPointer<Float>, type: GGMLType, into out: UnsafeMutableRawBufferPointer) {
    let blocks = values.count / 32
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

  /// Dequantizes `type` blocks into `out` (count a multiple of 32).
  public static func dequantize(_ bytes: UnsafeRawBufferPointer, type: GGMLType, into out: UnsafeMutableBufferPointer<Float>) {
    let blocks = out.count / 32
    for block in 0..<blocks {
      let y = UnsafeRawBufferPointer(rebasing: bytes[(block * type.blockBytes)..<((block + 1) * type.blockBytes)])
      let base = block * 32
      let d = half(y, 0)
      switch type {
      case .q8_0:
        for j in 0..<32 { out[base + j] = Float(Int8(bitPattern: y[2 + j])) * d }
      case .q4_0:
        for j in 0..<16 {
          out[base + j] = Float(Int(y[2 + j] & 0x0F) - 8) * d
          out[base + j + 16] = Float(Int(y[2 + j] >> 4) - 8) * d
        }
      case .q4_1:
        let m = half(y, 2)
        for j in 0..<16 {
          out[base + j] = Float(y[4 + j] & 0x0F) * d + m
          out[base + j + 16] = Float(y[4 + j] >> 4) * d + m
        }
      case .q5_0, .q5_1:
        let hasMin = type == .q5_1
        let m = hasMin ? half(y, 2) : 0
        let qhOffset = hasMin ? 4 : 2
        let qh = UInt32(y[qhOffset]) | UInt32(y[qhOffset + 1]) << 8 | UInt32(y[qhOffset + 2]) << 16 | UInt32(y[qhOffset + 3]) << 24
        for j in 0..<16 {
          let high0 = UInt8((qh >> UInt32(j)) << 4 & 0x10)
          let high1 = UInt8((qh >> UInt32(j + 12)) & 0x10)
          let q0 = Int((y[qhOffset + 4 + j] & 0x0F) | high0)
          let q1 = Int((y[qhOffset + 4 + j] >> 4) | high1)
          out[base + j] = hasMin ? Float(q0) * d + m : Float(q0 - 16) * d
          out[base + j + 16] = hasMin ? Float(q1) * d + m : Float(q1 - 16) * d
        }
      default:
        preconditionFailure("\(type) is not a block type")
      }
    }
  }

  static func half(_ y: UnsafeRawBufferPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: UInt16(y[offset]) | UInt16(y[offset + 1]) << 8))
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
