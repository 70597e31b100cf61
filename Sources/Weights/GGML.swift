import SafeTensors

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
  case q2_K = 10
  case q3_K = 11
  case q4_K = 12
  case q5_K = 13
  case q6_K = 14
  case q8_K = 15
  case iq2_xxs = 16
  case iq2_xs = 17
  case iq3_xxs = 18
  case iq1_s = 19
  case iq4_nl = 20
  case iq3_s = 21
  case iq2_s = 22
  case iq4_xs = 23
  case i8 = 24
  case i16 = 25
  case i32 = 26
  case i64 = 27
  case f64 = 28
  case iq1_m = 29
  case bf16 = 30
  case tq1_0 = 34
  case tq2_0 = 35
  case mxfp4 = 39
  case nvfp4 = 40
  case q1_0 = 41

  /// Elements per block (ggml `type_traits[].blck_size`; gguf-py `GGML_QUANT_SIZES`).
  public var blockSize: Int {
    switch self {
    case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: return 1
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .iq4_nl, .mxfp4: return 32
    case .nvfp4: return 64
    case .q1_0: return 128
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs, .iq1_s, .iq3_s, .iq2_s,
      .iq4_xs, .iq1_m, .tq1_0, .tq2_0:
      return 256
    }
  }

  /// Bytes per block (ggml `type_traits[].type_size`; gguf-py `GGML_QUANT_SIZES`).
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
    case .q2_K: return 84
    case .q3_K: return 110
    case .q4_K: return 144
    case .q5_K: return 176
    case .q6_K: return 210
    case .q8_K: return 292
    case .iq2_xxs: return 66
    case .iq2_xs: return 74
    case .iq3_xxs: return 98
    case .iq1_s: return 50
    case .iq4_nl: return 18
    case .iq3_s: return 110
    case .iq2_s: return 82
    case .iq4_xs: return 136
    case .iq1_m: return 56
    case .tq1_0: return 54
    case .tq2_0: return 66
    case .mxfp4: return 17
    case .nvfp4: return 36
    case .q1_0: return 18
    }
  }

  /// Whether this is a block-quantized type.
  public var isQuantized: Bool { blockSize > 1 }

  /// Whether `GGMLQuantizer.quantize` (in Transforms) writes this type.
  public var isQuantizable: Bool {
    switch self {
    case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
    default: return false
    }
  }

  /// Whether `GGMLQuantizer.dequantize` reads this type.
  public var isDequantizable: Bool {
    switch self {
    case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
    default: return false
    }
  }

  /// The stored float dtype of an unquantized float type (`f32` → `.f32`, …), else nil.
  public var floatDType: DType? {
    switch self {
    case .f32: return .f32
    case .f16: return .f16
    case .bf16: return .bf16
    case .f64: return .f64
    default: return nil
    }
  }

  /// The safetensors dtype of an integer type (`i8` → `.i8`, …), else nil.
  public var integerDType: DType? {
    switch self {
    case .i8: return .i8
    case .i16: return .i16
    case .i32: return .i32
    case .i64: return .i64
    default: return nil
    }
  }

  /// The name used on the command line and in ggml (`q8_0`, `f16`, `q4_K`, …).
  public var name: String {
    switch self {
    case .f32: return "f32"
    case .f16: return "f16"
    case .q4_0: return "q4_0"
    case .q4_1: return "q4_1"
    case .q5_0: return "q5_0"
    case .q5_1: return "q5_1"
    case .q8_0: return "q8_0"
    case .q2_K: return "q2_K"
    case .q3_K: return "q3_K"
    case .q4_K: return "q4_K"
    case .q5_K: return "q5_K"
    case .q6_K: return "q6_K"
    case .q8_K: return "q8_K"
    case .iq2_xxs: return "iq2_xxs"
    case .iq2_xs: return "iq2_xs"
    case .iq3_xxs: return "iq3_xxs"
    case .iq1_s: return "iq1_s"
    case .iq4_nl: return "iq4_nl"
    case .iq3_s: return "iq3_s"
    case .iq2_s: return "iq2_s"
    case .iq4_xs: return "iq4_xs"
    case .i8: return "i8"
    case .i16: return "i16"
    case .i32: return "i32"
    case .i64: return "i64"
    case .f64: return "f64"
    case .iq1_m: return "iq1_m"
    case .bf16: return "bf16"
    case .tq1_0: return "tq1_0"
    case .tq2_0: return "tq2_0"
    case .mxfp4: return "mxfp4"
    case .nvfp4: return "nvfp4"
    case .q1_0: return "q1_0"
    }
  }

  /// Bytes for `elements` values (which must fill whole blocks); nil when that overflows.
  public func checkedByteCount(elements: Int) -> Int? {
    guard elements >= 0 else { return nil }
    let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: blockBytes)
    return overflow ? nil : bytes
  }

  /// Bytes for `elements` values (which must fill whole blocks).
  public func byteCount(elements: Int) -> Int { elements / blockSize * blockBytes }
}

/// Block dequantization of one row segment, as ggml's reference `dequantize_row_*` (the quantizers
/// are an extension in Transforms).
public enum GGMLQuantizer {
  /// Dequantizes whole `type` blocks into `out` (`out.count` a multiple of `type.blockSize`,
  /// `bytes` at least `type.byteCount(elements: out.count)`), as ggml's `dequantize_row_*` does.
  /// `type` must be `isDequantizable` (callers check: the type may come from a file).
  public static func dequantize(
    _ bytes: UnsafeRawBufferPointer, type: GGMLType, into out: UnsafeMutableBufferPointer<Float>
  ) {
    precondition(type.isDequantizable, "\(type.name) cannot be dequantized")
    let size = type.blockSize
    let blocks = out.count / size
    precondition(bytes.count >= blocks * type.blockBytes, "dequantize: input too short")
    guard blocks > 0, let target = out.baseAddress else { return }
    for block in 0..<blocks {
      let y = UnsafeRawBufferPointer(rebasing: bytes[(block * type.blockBytes)..<((block + 1) * type.blockBytes)])
      let o = target + block * size
      switch type {
      case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: legacyBlock(y, type, o)
      case .q2_K: q2_K(y, o)
      case .q3_K: q3_K(y, o)
      case .q4_K: q4_K(y, o)
      case .q5_K: q5_K(y, o)
      case .q6_K: q6_K(y, o)
      default: preconditionFailure("\(type.name) cannot be dequantized")
      }
    }
  }

  /// One 32-value block of the legacy types (`dequantize_row_q8_0`, `_q4_0`, `_q4_1`, `_q5_0`, `_q5_1`).
  static func legacyBlock(_ y: UnsafeRawBufferPointer, _ type: GGMLType, _ out: UnsafeMutablePointer<Float>) {
    let d = half(y, 0)
    switch type {
    case .q8_0:
      for j in 0..<32 { out[j] = Float(Int8(bitPattern: y[2 + j])) * d }
    case .q4_0:
      for j in 0..<16 {
        out[j] = Float(Int(y[2 + j] & 0x0F) - 8) * d
        out[j + 16] = Float(Int(y[2 + j] >> 4) - 8) * d
      }
    case .q4_1:
      let m = half(y, 2)
      for j in 0..<16 {
        out[j] = Float(y[4 + j] & 0x0F) * d + m
        out[j + 16] = Float(y[4 + j] >> 4) * d + m
      }
    default:  // q5_0, q5_1
      let hasMin = type == .q5_1
      let m = hasMin ? half(y, 2) : 0
      let qhOffset = hasMin ? 4 : 2
      let qh =
        UInt32(y[qhOffset]) | UInt32(y[qhOffset + 1]) << 8 | UInt32(y[qhOffset + 2]) << 16 | UInt32(y[qhOffset + 3])
        << 24
      for j in 0..<16 {
        let high0 = UInt8((qh >> UInt32(j)) << 4 & 0x10)
        let high1 = UInt8((qh >> UInt32(j + 12)) & 0x10)
        let q0 = Int((y[qhOffset + 4 + j] & 0x0F) | high0)
        let q1 = Int((y[qhOffset + 4 + j] >> 4) | high1)
        out[j] = hasMin ? Float(q0) * d + m : Float(q0 - 16) * d
        out[j + 16] = hasMin ? Float(q1) * d + m : Float(q1 - 16) * d
      }
    }
  }

  // K-quants (256-value super-blocks), following ggml-quants.c `dequantize_row_q{2..6}_K` operation
  // for operation so results are bit-identical (products in the same order, no fused multiply-add).

  /// `block_q2_K`: scales[16], qs[64], d, dmin.
  static func q2_K(_ y: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<Float>) {
    let d = half(y, 80), dmin = half(y, 82)
    var o = 0, scale = 0
    for n in stride(from: 0, to: 256, by: 128) {
      let q = 16 + n / 4
      for shift in stride(from: 0, to: 8, by: 2) {
        for half16 in 0..<2 {
          let sc = y[scale]
          scale += 1
          let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
          for l in 0..<16 {
            out[o] = dl * Float((y[q + l + 16 * half16] >> UInt8(shift)) & 3) - ml
            o += 1
          }
        }
      }
    }
  }

  /// `block_q3_K`: hmask[32], qs[64], scales[12] (6-bit, packed), d.
  static func q3_K(_ y: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<Float>) {
    let dAll = half(y, 108)
    func word(_ k: Int) -> UInt32 {
      UInt32(y[96 + 4 * k]) | UInt32(y[97 + 4 * k]) << 8 | UInt32(y[98 + 4 * k]) << 16 | UInt32(y[99 + 4 * k]) << 24
    }
    let kmask1: UInt32 = 0x0303_0303, kmask2: UInt32 = 0x0f0f_0f0f
    let w0 = word(0), w1 = word(1), tmp = word(2)
    // The four words ggml rebuilds in `aux`, read below as 16 int8 scales.
    let aux: (UInt32, UInt32, UInt32, UInt32) = (
      (w0 & kmask2) | (((tmp >> 0) & kmask1) << 4), (w1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
      ((w0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4), ((w1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
    )
    func scale(_ index: Int) -> Int {
      let word = index < 4 ? aux.0 : index < 8 ? aux.1 : index < 12 ? aux.2 : aux.3
      return Int(Int8(bitPattern: UInt8(truncatingIfNeeded: word >> UInt32(8 * (index % 4)))))
    }
    var o = 0, index = 0
    var m: UInt8 = 1
    for n in stride(from: 0, to: 256, by: 128) {
      let q = 32 + n / 4
      for shift in stride(from: 0, to: 8, by: 2) {
        for half16 in 0..<2 {
          let dl = dAll * Float(scale(index) - 32)
          index += 1
          for l in 0..<16 {
            let at = l + 16 * half16
            let low = Int((y[q + at] >> UInt8(shift)) & 3)
            out[o] = dl * Float(low - (y[at] & m != 0 ? 0 : 4))
            o += 1
          }
        }
        m <<= 1
      }
    }
  }

  /// ggml `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12 packed bytes at `at`.
  @inline(__always)
  static func scaleMin(_ j: Int, _ y: UnsafeRawBufferPointer, _ at: Int) -> (Float, Float) {
    if j < 4 { return (Float(y[at + j] & 63), Float(y[at + j + 4] & 63)) }
    let d = (y[at + j + 4] & 0xF) | ((y[at + j - 4] >> 6) << 4)
    let m = (y[at + j + 4] >> 4) | ((y[at + j] >> 6) << 4)
    return (Float(d), Float(m))
  }

  /// `block_q4_K`: d, dmin, scales[12], qs[128].
  static func q4_K(_ y: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<Float>) {
    let d = half(y, 0), dmin = half(y, 2)
    var o = 0, q = 16, index = 0
    for _ in 0..<4 {
      let (sc1, m1) = scaleMin(index, y, 4), (sc2, m2) = scaleMin(index + 1, y, 4)
      let d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2
      for l in 0..<32 { out[o + l] = d1 * Float(y[q + l] & 0xF) - min1 }
      for l in 0..<32 { out[o + 32 + l] = d2 * Float(y[q + l] >> 4) - min2 }
      o += 64
      q += 32
      index += 2
    }
  }

  /// `block_q5_K`: d, dmin, scales[12], qh[32], qs[128].
  static func q5_K(_ y: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<Float>) {
    let d = half(y, 0), dmin = half(y, 2)
    var o = 0, ql = 48, index = 0
    var u1: UInt8 = 1, u2: UInt8 = 2
    for _ in 0..<4 {
      let (sc1, m1) = scaleMin(index, y, 4), (sc2, m2) = scaleMin(index + 1, y, 4)
      let d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2
      for l in 0..<32 { out[o + l] = d1 * Float(Int(y[ql + l] & 0xF) + (y[16 + l] & u1 != 0 ? 16 : 0)) - min1 }
      for l in 0..<32 { out[o + 32 + l] = d2 * Float(Int(y[ql + l] >> 4) + (y[16 + l] & u2 != 0 ? 16 : 0)) - min2 }
      o += 64
      ql += 32
      index += 2
      u1 = u1 &<< 2
      u2 = u2 &<< 2
    }
  }

  /// `block_q6_K`: ql[128], qh[64], scales[16] (int8), d.
  static func q6_K(_ y: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<Float>) {
    let d = half(y, 208)
    var o = 0, ql = 0, qh = 128, sc = 192
    for _ in 0..<2 {
      for l in 0..<32 {
        let s = sc + l / 16
        let q1 = Int((y[ql + l] & 0xF) | (((y[qh + l] >> 0) & 3) << 4)) - 32
        let q2 = Int((y[ql + l + 32] & 0xF) | (((y[qh + l] >> 2) & 3) << 4)) - 32
        let q3 = Int((y[ql + l] >> 4) | (((y[qh + l] >> 4) & 3) << 4)) - 32
        let q4 = Int((y[ql + l + 32] >> 4) | (((y[qh + l] >> 6) & 3) << 4)) - 32
        out[o + l] = d * Float(Int8(bitPattern: y[s])) * Float(q1)
        out[o + l + 32] = d * Float(Int8(bitPattern: y[s + 2])) * Float(q2)
        out[o + l + 64] = d * Float(Int8(bitPattern: y[s + 4])) * Float(q3)
        out[o + l + 96] = d * Float(Int8(bitPattern: y[s + 6])) * Float(q4)
      }
      o += 128
      ql += 64
      qh += 32
      sc += 8
    }
  }

  static func half(_ y: UnsafeRawBufferPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: UInt16(y[offset]) | UInt16(y[offset + 1]) << 8))
  }
}
