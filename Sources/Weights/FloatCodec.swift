import CCodecKernels
import Foundation
import SafeTensors

/// Conversions between Float32 and the floating-point storage types, bit-identical to PyTorch's
/// CPU casts (`.half()`, `.bfloat16()`, `.to(torch.float8_e4m3fn)`, `.to(torch.float8_e5m2)`) for
/// every value that fits; golden-tested against torch in `Tests/TransformsTests`.
public enum FloatCodec {
  /// The float dtypes this codec reads and writes.
  public static let supported: Set<DType> = [.f64, .f32, .f16, .bf16, .f8e4m3, .f8e5m2]

  /// Bytes per element of a supported dtype.
  public static func width(_ dtype: DType) -> Int { dtype.bitWidth / 8 }

  // MARK: - Decoding

  /// Widens `count` elements of `dtype` (little-endian) into `output`. Exact for every supported
  /// dtype except F64, which is rounded to the nearest Float32.
  public static func decode(
    _ bytes: UnsafeRawBufferPointer, dtype: DType, into output: UnsafeMutableBufferPointer<Float>
  ) {
    let count = output.count
    guard count > 0, let base = bytes.baseAddress, let out = output.baseAddress else { return }
    precondition(bytes.count >= count * width(dtype), "decode: input too short")
    switch dtype {
    case .f32:
      for i in 0..<count {
        out[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
      }
    case .f16 where useF16C:
      ck_halves_to_floats(base, out, count)
    case .f16:
      // Branch-free arithmetic (`floatFromHalf`): the compiler vectorises it, which beats both
      // the library conversion and a 256 KiB table (there is no F16C in the x86-64 baseline).
      for i in 0..<count {
        out[i] = floatFromHalf(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
      }
    case .bf16:
      for i in 0..<count {
        out[i] = Float(
          bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
      }
    case .f8e5m2:
      // e5m2 is the top byte of an IEEE half; a 256-entry table (5× faster than converting).
      e5m2Table.withUnsafeBufferPointer { table in
        for i in 0..<count { out[i] = table[Int(base.load(fromByteOffset: i, as: UInt8.self))] }
      }
    case .f8e4m3:
      for i in 0..<count { out[i] = e4m3Table[Int(base.load(fromByteOffset: i, as: UInt8.self))] }
    case .f64:
      for i in 0..<count {
        out[i] = Float(
          Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
      }
    default:
      preconditionFailure("decode: \(dtype) is not a supported float dtype")
    }
  }

  /// Whether f16 goes through the F16C kernels (CCodecKernels; x86-64 CPUs with F16C and AVX2).
  /// Same bits either way; `ROUWEI_NO_F16C=1` forces the Swift paths (tests compare both).
  package static let useF16C = ck_uses_f16c() != 0 && ProcessInfo.processInfo.environment["ROUWEI_NO_F16C"] == nil

  /// Every half-precision value as Float32, indexed by its bits.
  static let halfTable: [Float] = (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }

  /// e5m2 codes as Float32: the half whose top byte is the code.
  static let e5m2Table: [Float] = (0..<256).map { Float(Float16(bitPattern: UInt16($0) << 8)) }

  /// e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448.
  static let e4m3Table: [Float] = (0..<256).map { code in
    let sign: Float = code & 0x80 != 0 ? -1 : 1
    let exponent = (code >> 3) & 0xF
    let mantissa = code & 0x7
    if exponent == 0xF && mantissa == 0x7 { return .nan }
    if exponent == 0 { return sign * Float(mantissa) / 8 * Float(sign: .plus, exponent: -6, significand: 1) }
    return sign * (1 + Float(mantissa) / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
  }

  /// Half → Float32 without branches or tables (vectorisable): exactly `Float(Float16(bitPattern:))`,
  /// NaN payloads included, quieted (FloatCodecTests checks all 65,536 values).
  @inline(__always)
  public static func floatFromHalf(_ half: UInt16) -> Float {
    let h = UInt32(half)
    let sign = (h & 0x8000) << 16
    let magnitude = h & 0x7FFF
    let shifted = magnitude << 13
    let normal = shifted &+ (112 << 23)
    // Infinity and NaN: the exponent goes from 31 to 255; NaNs come out quiet, as the library's.
    let wide =
      magnitude > 0x7C00 ? (normal &+ (112 << 23)) | 0x40_0000 : magnitude == 0x7C00 ? normal &+ (112 << 23) : normal
    // Zero and subnormals: let the FPU normalise (2^-14 · 0.m = (1.m · 2^-14) − 2^-14).
    let subnormal = (Float(bitPattern: shifted &+ (113 << 23)) - Float(bitPattern: 113 << 23)).bitPattern
    return Float(bitPattern: sign | (magnitude < 0x0400 ? subnormal : wide))
  }
}
