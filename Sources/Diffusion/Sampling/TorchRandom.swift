import Foundation

/// The 32-bit Mersenne Twister as PyTorch's CPU generator runs it (`at::mt19937`, seeded with the
/// low 32 bits of the seed by `init_with_uint32`).
public struct MT19937: Sendable {
  private var state = [UInt32](repeating: 0, count: 624)
  private var index = 624

  /// A generator seeded like `torch.manual_seed(seed)` (two's-complement for negative seeds).
  public init(seed: UInt64) {
    state[0] = UInt32(truncatingIfNeeded: seed)
    for position in 1..<624 {
      let previous = state[position - 1]
      state[position] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(position)
    }
    index = 624
  }

  /// The next 32-bit output.
  public mutating func next() -> UInt32 {
    if index >= 624 { twist() }
    var value = state[index]
    index += 1
    value ^= value >> 11
    value ^= (value << 7) & 0x9D2C_5680
    value ^= (value << 15) & 0xEFC6_0000
    value ^= value >> 18
    return value
  }

  private mutating func twist() {
    for position in 0..<624 {
      let mixed = (state[position] & 0x8000_0000) | (state[(position + 1) % 624] & 0x7FFF_FFFF)
      var value = state[(position + 397) % 624] ^ (mixed >> 1)
      if mixed & 1 != 0 { value ^= 0x9908_B0DF }
      state[position] = value
    }
    index = 0
  }
}

/// Which of PyTorch's two CPU code paths for float32 `normal_` (`aten/src/ATen/native/cpu/
/// DistributionTemplates.h`) to reproduce for tensors of 16 or more elements.
public enum TorchNormalPath: String, Sendable, CaseIterable {
  /// `normal_fill_AVX2`: Box–Muller on 8 lanes with the Cephes-style `log256_ps` / `sincos256_ps`
  /// polynomials of `avx_mathfun.h`, compiled by GCC with FMA contraction. What PyTorch's x86-64
  /// wheels run on every CPU with AVX2, AVX-512 included (the AVX-512 kernel build takes the same
  /// path). Platform-independent: the default.
  case vectorized
  /// `normal_fill` / `normal_fill_16` with the C library's `logf`, `cosf`, `sinf`: what PyTorch
  /// runs with `ATEN_CPU_CAPABILITY=default` (and on CPUs without AVX2). Bit-exact only with the
  /// same libm (glibc here).
  case scalar
}

/// A replica of `torch.Generator()` on the CPU: the same seed gives bit-identical
/// `torch.randn(shape, generator=g)` and `torch.rand(shape, generator=g)` float32 values, and
/// successive calls continue the same stream (so one generator can serve every ancestral step).
public struct TorchGenerator: Sendable {
  private var engine: MT19937
  /// The second value of the last double Box–Muller pair, as the generator caches it.
  private var cachedNormal: Double?
  /// The code path reproduced for `randn` of 16 or more values.
  public var normalPath: TorchNormalPath

  /// `torch.Generator().manual_seed(seed)`.
  public init(seed: UInt64, normalPath: TorchNormalPath = .vectorized) {
    engine = MT19937(seed: seed)
    self.normalPath = normalPath
  }

  /// `torch.manual_seed` for a signed seed (negative seeds wrap as in PyTorch).
  public init(signedSeed seed: Int64, normalPath: TorchNormalPath = .vectorized) {
    self.init(seed: UInt64(bitPattern: seed), normalPath: normalPath)
  }

  /// `torch.rand(count)` float32: 24 random bits per value, times 2⁻²⁴.
  public mutating func rand(count: Int) -> [Float] {
    (0..<max(count, 0)).map { _ in uniformFloat() }
  }

  /// `torch.randn(count)` float32 (any shape with that many elements, contiguous).
  public mutating func randn(count: Int) -> [Float] {
    var values = [Float](repeating: 0, count: max(count, 0))
    fillNormal(&values)
    return values
  }

  /// Fills `values` as `torch.randn` would fill a contiguous float32 tensor of that size.
  public mutating func fillNormal(_ values: inout [Float]) {
    let count = values.count
    guard count >= 16 else {
      // `normal_distribution<double>` one value at a time, then cast to float.
      for index in 0..<count { values[index] = Float(nextDoubleNormal()) }
      return
    }
    for index in 0..<count { values[index] = uniformFloat() }
    var block = 0
    while block + 16 <= count {
      transform16(&values, at: block)
      block += 16
    }
    if count % 16 != 0 {
      // PyTorch redraws the last 16 values (overlapping the last full block) and transforms them.
      let start = count - 16
      for index in start..<count { values[index] = uniformFloat() }
      transform16(&values, at: start)
    }
  }

  // MARK: - Distributions

  /// `uniform_real_distribution<float>(0, 1)`.
  @inline(__always) mutating func uniformFloat() -> Float {
    Float(engine.next() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
  }

  /// `uniform_real_distribution<double>(0, 1)` on `random64()` (first draw in the high half).
  @inline(__always) mutating func uniformDouble() -> Double {
    let high = UInt64(engine.next())
    let low = UInt64(engine.next())
    return Double(((high << 32) | low) & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
  }

  /// `normal_distribution<double>(0, 1)` with the generator's cached second value.
  mutating func nextDoubleNormal() -> Double {
    if let cached = cachedNormal {
      cachedNormal = nil
      return cached
    }
    let u1 = uniformDouble()
    let u2 = uniformDouble()
    let radius = (-2.0 * log1p(-u2)).squareRoot()
    let theta = 2.0 * Double.pi * u1
    cachedNormal = radius * sin(theta)
    return radius * cos(theta)
  }

  /// Box–Muller on one block: `data[j]`, `data[j+8]` from uniforms `data[j]`, `data[j+8]`.
  private func transform16(_ data: inout [Float], at start: Int) {
    for lane in 0..<8 {
      let u1 = 1 - data[start + lane]
      let u2 = data[start + lane + 8]
      switch normalPath {
      case .vectorized:
        let radius = (-2 * CephesAVX.log(u1)).squareRoot()
        let theta = CephesAVX.twoPi * u2
        let (sine, cosine) = CephesAVX.sincos(theta)
        // `_mm256_fmadd_ps(n, std, mean)` with std 1, mean 0 (turns −0 into +0).
        data[start + lane] = radius * cosine + 0
        data[start + lane + 8] = radius * sine + 0
      case .scalar:
        let radius = (-2 * Foundation.log(u1)).squareRoot()
        // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
        let theta = Float(2.0 * Double.pi * Double(u2))
        data[start + lane] = radius * Foundation.cos(theta) * 1 + 0
        data[start + lane + 8] = radius * Foundation.sin(theta) * 1 + 0
      }
    }
  }
}

/// Scalar emulation of `avx_mathfun.h`'s `log256_ps` and `sincos256_ps` as PyTorch's AVX2 kernel
/// runs them: GCC (`-O2 -mfma`, default `-ffp-contract=fast`) fuses every multiply whose only use
/// is an add into an FMA, and this code makes the same fusions explicit. Checked bit for bit
/// against torch 2.15 on 2²¹ values (Scripts/fixtures/make_sampling_goldens.py).
enum CephesAVX {
  /// `_mm256_set1_ps(2.0f * c10::pi<double>)`.
  static let twoPi = Float(2.0 * Double.pi)

  static func log(_ input: Float) -> Float {
    if input.isNaN || input <= 0 { return .nan }
    let minimumNormal = Float(bitPattern: 0x0080_0000)
    var x = max(input, minimumNormal)
    let exponent = Int32(bitPattern: x.bitPattern >> 23) - 0x7F
    x = Float(bitPattern: (x.bitPattern & ~0x7F80_0000) | Float(0.5).bitPattern)
    var e = Float(exponent) + 1
    let below = x < 0.707106781186547524
    let low: Float = below ? x : 0
    x = x - 1
    e = e - (below ? 1 : 0)
    x = x + low
    let z = x * x
    var y: Float = 7.0376836292E-2
    y = y.fusedMultiplyAdd(x, -1.1514610310E-1)
    y = y.fusedMultiplyAdd(x, 1.1676998740E-1)
    y = y.fusedMultiplyAdd(x, -1.2420140846E-1)
    y = y.fusedMultiplyAdd(x, 1.4249322787E-1)
    y = y.fusedMultiplyAdd(x, -1.6668057665E-1)
    y = y.fusedMultiplyAdd(x, 2.0000714765E-1)
    y = y.fusedMultiplyAdd(x, -2.4999993993E-1)
    y = y.fusedMultiplyAdd(x, 3.3333331174E-1)
    y = y * x
    y = y.fusedMultiplyAdd(z, e * -2.12194440e-4)
    y = y - z * 0.5
    x = x + y
    x = x + e * 0.693359375
    return x
  }

  static func sincos(_ input: Float) -> (sine: Float, cosine: Float) {
    var signSine = input.bitPattern & 0x8000_0000
    var x = abs(input)
    var y = x * 1.27323954473516
    // cvttps: truncation, 0x80000000 for NaN and out-of-range values.
    var j = y.isFinite && abs(y) < 2_147_483_648 ? Int32(y) : Int32.min
    j = (j &+ 1) & ~1
    y = Float(j)
    let swapSine = UInt32(bitPattern: j & 4) << 29
    let sinePolynomial = (j & 2) == 0
    x = y.fusedMultiplyAdd(-0.78515625, x)
    x = y.fusedMultiplyAdd(-2.4187564849853515625e-4, x)
    x = y.fusedMultiplyAdd(-3.77489497744594108e-8, x)
    let signCosine = (UInt32(bitPattern: ~(j &- 2)) & 4) << 29
    signSine ^= swapSine
    let z = x * x
    var cosinePart: Float = 2.443315711809948E-005
    cosinePart = cosinePart.fusedMultiplyAdd(z, -1.388731625493765E-003)
    cosinePart = cosinePart.fusedMultiplyAdd(z, 4.166664568298827E-002)
    cosinePart = cosinePart * z
    cosinePart = cosinePart.fusedMultiplyAdd(z, -(z * 0.5))
    cosinePart = cosinePart + 1
    var sinePart: Float = -1.9515295891E-4
    sinePart = sinePart.fusedMultiplyAdd(z, 8.3321608736E-3)
    sinePart = sinePart.fusedMultiplyAdd(z, -1.6666654611E-1)
    sinePart = sinePart * z
    sinePart = sinePart.fusedMultiplyAdd(x, x)
    // The blend adds the other polynomial's masked-out +0 (and x − x), as the vector code does.
    let sine = sinePolynomial ? 0 + sinePart : cosinePart + 0
    let cosine =
      sinePolynomial
      ? cosinePart + (sinePart - sinePart)
      : (cosinePart - cosinePart)
        + sinePart
    return (
      Float(bitPattern: sine.bitPattern ^ signSine),
      Float(bitPattern: cosine.bitPattern ^ signCosine)
    )
  }
}

extension Float {
  /// `self * multiplier + addend` rounded once (an FMA instruction).
  @inline(__always) fileprivate func fusedMultiplyAdd(_ multiplier: Float, _ addend: Float)
    -> Float
  {
    addend.addingProduct(self, multiplier)
  }
}
