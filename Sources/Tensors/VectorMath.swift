import Foundation

/// Vector forms of the transcendental functions the activations need, eight lanes at a time.
///
/// libm's scalar `expf`/`erff` cost a call per element, which matters for softmax over
/// 4096×4096 score blocks; these follow the polynomials PyTorch's own AVX2 path uses
/// (`ATen/cpu/vec/vec256/vec256_float.h`: Cephes `exp`, Abramowitz–Stegun 7.1.26 `erf`), so they
/// agree with PyTorch CPU about as closely as PyTorch agrees with itself.
public enum VectorMath {
  /// The vector type used by the element-wise kernels.
  public typealias Vector = SIMD8<Float>

  /// eˣ per lane, relative error ≈ 1e-7; 0 below −87.3 (where eˣ is subnormal), +∞ above 88.72.
  @inlinable @inline(__always)
  public static func exp(_ input: Vector) -> Vector {
    let x = input.clamped(lowerBound: Vector(repeating: -87.3), upperBound: Vector(repeating: 88.3762626647949))
    // x = n·ln2 + r with |r| ≤ ln2/2; ln2 split in two for an exact n·ln2.
    let n = (x * 1.44269504088896341 + 0.5).rounded(.down)
    var r = x - n * 0.693359375
    r = r - n * -2.12194440e-4
    let r2 = r * r
    var p = Vector(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * r2 + r + 1
    // 2ⁿ built from its exponent bits; n ∈ [−126, 127] after the clamp.
    // Adding 2²³ + 127 puts the integer n + 127 in the low mantissa bits of an exact float.
    let biased = unsafeBitCast(n + 8_388_735, to: SIMD8<Int32>.self) &- 0x4B00_0000
    var result = y * unsafeBitCast(biased &<< 23, to: Vector.self)
    result.replace(with: 0, where: input .< -87.3)
    result.replace(with: .infinity, where: input .> 88.72283)
    return result
  }

  /// erf per lane (Abramowitz–Stegun 7.1.26, absolute error ≤ 1.5e-7, as PyTorch's AVX2 erf).
  @inlinable @inline(__always)
  public static func erf(_ x: Vector) -> Vector {
    let magnitude = x.replacing(with: -x, where: x .< 0)
    let t = 1 / (magnitude * 0.3275911 + 1)
    var p = Vector(repeating: 1.061405429)
    p = p * t - 1.453152027
    p = p * t + 1.421413741
    p = p * t - 0.284496736
    p = p * t + 0.254829592
    let negativeSquare: Vector = -(magnitude * magnitude)
    let y = 1 - p * t * exp(negativeSquare)
    var result = y
    result.replace(with: -y, where: x .< 0)
    return result
  }

  /// x·σ(x) per lane.
  @inlinable @inline(__always)
  public static func silu(_ x: Vector) -> Vector { x / (1 + exp(-x)) }

  /// x·σ(1.702x) per lane (CLIP's quick-GELU).
  @inlinable @inline(__always)
  public static func quickGELU(_ x: Vector) -> Vector { x / (1 + exp(x * -1.702)) }

  /// ½x(1 + erf(x/√2)) per lane (exact GELU, PyTorch's default `approximate='none'`).
  @inlinable @inline(__always)
  public static func gelu(_ x: Vector) -> Vector {
    x * 0.5 * (1 + erf(x * 0.70710678118654752))
  }

  /// eˣ for one value through the vector code (so tails match the vector body bit for bit).
  @inlinable @inline(__always)
  public static func exp(_ x: Float) -> Float { exp(Vector(repeating: x))[0] }

  /// Applies `operation` to `count` floats from `source` into `destination` (which may be the
  /// same memory), eight at a time, the tail through a padded vector.
  @inlinable @inline(__always)
  public static func map(
    _ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<Float>, count: Int,
    _ operation: (Vector) -> Vector
  ) {
    var index = 0
    while index + 8 <= count {
      let value = UnsafeRawPointer(source + index).loadUnaligned(as: Vector.self)
      UnsafeMutableRawPointer(destination + index).storeBytes(of: operation(value), as: Vector.self)
      index += 8
    }
    if index < count {
      var tail = Vector(repeating: 0)
      for lane in 0..<(count - index) { tail[lane] = source[index + lane] }
      let result = operation(tail)
      for lane in 0..<(count - index) { destination[index + lane] = result[lane] }
    }
  }
}
