import CCodecKernels
import Foundation
import SafeTensors
import Weights

/// What to do with a finite value the target dtype cannot hold.
public enum OverflowPolicy: String, Sendable, CaseIterable {
  /// Count it; the caller refuses the conversion when the count is not zero (the default).
  case refuse
  /// Saturate to the largest finite value of the target (`--clamp`).
  case clamp
}

/// What an encode pass saw.
public struct EncodeStatistics: Sendable, Equatable {
  /// Finite inputs that overflowed the target (written saturated under `.clamp`, as the target's
  /// inf/NaN under `.refuse`, where the caller must not keep the output).
  public var overflowed = 0
  /// NaN inputs (kept as NaN: a defect to report, not to hide).
  public var nan = 0
  /// ±infinity inputs (kept, or saturated where the target has no infinity).
  public var infinite = 0
  public init() {}

  /// Inputs that were not finite numbers.
  public var nonFinite: Int { nan + infinite }

  mutating func count(nonFinite value: Float) {
    if value.isNaN { nan += 1 } else { infinite += 1 }
  }

  public static func += (lhs: inout EncodeStatistics, rhs: EncodeStatistics) {
    lhs.overflowed += rhs.overflowed
    lhs.nan += rhs.nan
    lhs.infinite += rhs.infinite
  }
}

/// The encode side of `FloatCodec` (narrowing Float32 to the storage types).
extension FloatCodec {
  // MARK: - Encoding

  /// Narrows `input` into `dtype` bytes in `output`, returning what overflowed or was not finite.
  /// `bypassCache`: the output is not read again soon (F16 with F16C: non-temporal stores).
  @discardableResult
  public static func encode(
    _ input: UnsafeBufferPointer<Float>, to dtype: DType, into output: UnsafeMutableRawBufferPointer,
    policy: OverflowPolicy, bypassCache: Bool = false
  ) -> EncodeStatistics {
    var stats = EncodeStatistics()
    let count = input.count
    guard count > 0, let src = input.baseAddress, let out = output.baseAddress else { return stats }
    precondition(output.count >= count * width(dtype), "encode: output too short")
    let clamp = policy == .clamp
    switch dtype {
    case .f32:
      for i in 0..<count {
        if !src[i].isFinite { stats.count(nonFinite: src[i]) }
        out.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
      }
    case .f64:
      for i in 0..<count {
        if !src[i].isFinite { stats.count(nonFinite: src[i]) }
        out.storeBytes(of: Double(src[i]).bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self)
      }
    case .f16 where useF16C:
      var overflowed = 0, nan = 0, infinite = 0
      ck_floats_to_halves(src, out, count, clamp ? 1 : 0, &overflowed, &nan, &infinite, bypassCache ? 1 : 0)
      stats.overflowed += overflowed
      stats.nan += nan
      stats.infinite += infinite
    case .f16:
      // Blocks of 64 Ki values through a branch-free kernel the compiler vectorises.
      var start = 0
      while start < count {
        let n = min(count - start, 1 << 16)
        let (overflowed, nan, infinite) = encodeHalves(src + start, n, out + 2 * start, clamp: clamp)
        stats.overflowed += Int(overflowed)
        stats.nan += Int(nan)
        stats.infinite += Int(infinite)
        start += n
      }
    case .bf16:
      for i in 0..<count {
        var bits = bfloat16(src[i])
        if bits & 0x7FFF == 0x7F80 && src[i].isFinite {
          stats.overflowed += 1
          if clamp { bits = (bits & 0x8000) | 0x7F7F }
        } else if !src[i].isFinite {
          stats.count(nonFinite: src[i])
        }
        out.storeBytes(of: bits.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
      }
    case .f8e4m3:
      for i in 0..<count {
        // torch saturates to ±448 silently; we count it so the caller can refuse.
        let (code, overflowed) = e4m3(src[i])
        if overflowed { stats.overflowed += 1 }
        if !src[i].isFinite { stats.count(nonFinite: src[i]) }
        out.storeBytes(of: code, toByteOffset: i, as: UInt8.self)
      }
    case .f8e5m2:
      for i in 0..<count {
        var code = e5m2(src[i])
        if code & 0x7F == 0x7C && src[i].isFinite {
          stats.overflowed += 1
          if clamp { code = (code & 0x80) | 0x7B }
        } else if !src[i].isFinite {
          stats.count(nonFinite: src[i])
        }
        out.storeBytes(of: code, toByteOffset: i, as: UInt8.self)
      }
    default:
      preconditionFailure("encode: \(dtype) is not a supported float dtype")
    }
    return stats
  }

  /// IEEE half, round to nearest even. NaN keeps its sign and top payload bits and is quieted,
  /// as x86 `vcvtps2ph` (torch's CPU path) does.
  @inline(__always)
  public static func half(_ value: Float) -> UInt16 {
    var bits = value.bitPattern
    let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
    bits &= 0x7FFF_FFFF
    if bits >= 143 << 23 {  // ≥ 65536 after rounding range, inf or NaN
      if bits > 255 << 23 { return sign | 0x7E00 | UInt16(truncatingIfNeeded: (bits & 0x7F_FFFF) >> 13) }
      return sign | 0x7C00
    }
    if bits < 113 << 23 {  // subnormal or zero: let the FPU round by adding a magic number
      let magic: UInt32 = 126 << 23
      return sign | UInt16(truncatingIfNeeded: (Float(bitPattern: bits) + Float(bitPattern: magic)).bitPattern &- magic)
    }
    let odd = (bits >> 13) & 1
    bits = bits &+ (UInt32(bitPattern: Int32(15 - 127)) << 23) &+ 0xFFF &+ odd
    return sign | UInt16(truncatingIfNeeded: bits >> 13)
  }

  /// Encodes `count` (< 2^32) values to halves at `out`; returns the overflowed, NaN and ±infinity
  /// counts.
  /// Flags are counted in 32-bit lanes and chosen with selects, so the loop vectorises.
  @inline(never)
  static func encodeHalves(
    _ src: UnsafePointer<Float>, _ count: Int, _ out: UnsafeMutableRawPointer, clamp: Bool
  ) -> (UInt32, UInt32, UInt32) {
    var overflowed: UInt32 = 0, nan: UInt32 = 0, infinite: UInt32 = 0
    let clampMask: UInt32 = clamp ? 0xFFFF : 0
    for i in 0..<count {
      let magnitude = src[i].bitPattern & 0x7FFF_FFFF
      let bits = UInt32(halfSelecting(src[i]))
      // 1 where a finite value became infinity.
      let over = (bits & 0x7FFF == 0x7C00 ? UInt32(1) : 0) & (magnitude < 0x7F80_0000 ? 1 : 0)
      overflowed &+= over
      nan &+= magnitude > 0x7F80_0000 ? 1 : 0
      infinite &+= magnitude == 0x7F80_0000 ? 1 : 0
      let replace = (0 &- over) & clampMask
      let result = (bits & ~replace) | (((bits & 0x8000) | 0x7BFF) & replace)
      out.storeBytes(of: UInt16(truncatingIfNeeded: result).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    }
    return (overflowed, nan, infinite)
  }

  /// `half(value)` computed without branches: every case is computed and the right one selected,
  /// so loops over it vectorise. Bit-identical to `half` for every input (FloatCodecTests).
  @inline(__always)
  public static func halfSelecting(_ value: Float) -> UInt16 {
    let raw = value.bitPattern
    let sign = (raw >> 16) & 0x8000
    let bits = raw & 0x7FFF_FFFF
    let special: UInt32 = bits > 255 << 23 ? 0x7E00 | ((bits & 0x7F_FFFF) >> 13) : 0x7C00
    let magic: UInt32 = 126 << 23
    let subnormal = (Float(bitPattern: bits) + Float(bitPattern: magic)).bitPattern &- magic
    let odd = (bits >> 13) & 1
    let normal = (bits &+ (UInt32(bitPattern: Int32(15 - 127)) << 23) &+ 0xFFF &+ odd) >> 13
    let result = bits >= 143 << 23 ? special : bits < 113 << 23 ? subnormal : normal
    return UInt16(truncatingIfNeeded: sign | result)
  }

  /// bfloat16, round to nearest even on the bits; NaN becomes 0xFFFF as torch's vectorised CPU cast
  /// writes it (its scalar path writes 0x7FC0; both are NaN).
  @inline(__always)
  public static func bfloat16(_ value: Float) -> UInt16 {
    if value.isNaN { return 0xFFFF }
    let bits = value.bitPattern
    let bias = ((bits >> 16) & 1) &+ 0x7FFF
    return UInt16(truncatingIfNeeded: (bits &+ bias) >> 16)
  }

  /// float8 e4m3fn, round to nearest even, saturating at ±448 as torch ≥ 2.x casts (±inf too);
  /// NaN stays NaN. `overflowed` is true for values beyond ±448 after rounding, inf included.
  @inline(__always)
  public static func e4m3(_ value: Float) -> (code: UInt8, overflowed: Bool) {
    let code = e4m3NonSaturating(value)
    if code & 0x7F == 0x7F && !value.isNaN { return ((code & 0x80) | 0x7E, true) }
    return (code, false)
  }

  /// c10 `fp8e4m3fn_from_fp32_value`: |x| > 464 and NaN give the NaN code 0x7F.
  @inline(__always)
  static func e4m3NonSaturating(_ value: Float) -> UInt8 {
    var bits = value.bitPattern
    let sign = bits & 0x8000_0000
    bits ^= sign
    var result: UInt8
    if bits >= 1087 << 20 {
      result = 0x7F
    } else if bits < 121 << 23 {
      let denormMask: UInt32 = 141 << 23
      let sum = (Float(bitPattern: bits) + Float(bitPattern: denormMask)).bitPattern
      result = UInt8(truncatingIfNeeded: sum &- denormMask)
    } else {
      let odd = (bits >> 20) & 1
      bits = bits &+ (UInt32(bitPattern: Int32(7 - 127)) << 23) &+ 0x7FFFF &+ odd
      result = UInt8(truncatingIfNeeded: bits >> 20)
    }
    return result | UInt8(truncatingIfNeeded: sign >> 24)
  }

  /// float8 e5m2, round to nearest even; overflow gives ±inf, NaN gives NaN
  /// (c10 `fp8e5m2_from_fp32_value`).
  @inline(__always)
  public static func e5m2(_ value: Float) -> UInt8 {
    var bits = value.bitPattern
    let sign = bits & 0x8000_0000
    bits ^= sign
    var result: UInt8
    if bits >= 143 << 23 {
      result = bits > 255 << 23 ? 0x7F : 0x7C
    } else if bits < 113 << 23 {
      let denormMask: UInt32 = 134 << 23
      let sum = (Float(bitPattern: bits) + Float(bitPattern: denormMask)).bitPattern
      result = UInt8(truncatingIfNeeded: sum &- denormMask)
    } else {
      let odd = (bits >> 21) & 1
      bits = bits &+ (UInt32(bitPattern: Int32(15 - 127)) << 23) &+ 0xFFFFF &+ odd
      result = UInt8(truncatingIfNeeded: bits >> 21)
    }
    return result | UInt8(truncatingIfNeeded: sign >> 24)
  }
}
