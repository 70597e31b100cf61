import CCodecKernels
import Weights

/// ggml's K-quant encoders (256-value super-blocks), written from ggml-quants.c's algorithms and
/// checked byte for byte against ggml built without FMA contraction (Scripts/fixtures/make_kquant_goldens.py).
/// Two encoders per type: `reference` (`quantize_row_q*_K_ref`, what ggml, stable-diffusion.cpp and
/// llama-quantize write without an importance matrix) and `unitImportance` (`quantize_row_q*_K_impl`
/// with an importance matrix of ones: a longer scale search and least-squares super-block scales).
/// Every operation follows ggml's order, without fused multiply-adds, so float results match.
enum KQuants {
  /// Scratch space for one super-block, allocated once per quantization call.
  struct Scratch {
    let L: UnsafeMutablePointer<Int8>  // signed levels (Q3_K, Q6_K) or unsigned ones (bit pattern)
    let Laux: UnsafeMutablePointer<UInt8>
    let weights: UnsafeMutablePointer<Float>  // one per value of the super-block
    let scales: UnsafeMutablePointer<Float>
    let mins: UnsafeMutablePointer<Float>
    let sw: UnsafeMutablePointer<Float>
    let Ls: UnsafeMutablePointer<UInt8>
    let Lm: UnsafeMutablePointer<UInt8>
    let Lq: UnsafeMutablePointer<Int8>

    init() {
      L = .allocate(capacity: 256)
      Laux = .allocate(capacity: 64)
      weights = .allocate(capacity: 256)
      scales = .allocate(capacity: 16)
      mins = .allocate(capacity: 16)
      sw = .allocate(capacity: 16)
      Ls = .allocate(capacity: 16)
      Lm = .allocate(capacity: 16)
      Lq = .allocate(capacity: 16)
    }

    func deallocate() {
      L.deallocate()
      Laux.deallocate()
      weights.deallocate()
      scales.deallocate()
      mins.deallocate()
      sw.deallocate()
      Ls.deallocate()
      Lm.deallocate()
      Lq.deallocate()
    }

    var levels: UnsafeMutablePointer<UInt8> { UnsafeMutableRawPointer(L).assumingMemoryBound(to: UInt8.self) }
  }

  static let groupMaxEps: Float = 1e-15

  /// ggml `nearest_int`: round half to even through the float adder's rounding (|f| ≤ 2^22).
  @inline(__always) static func nearestInt(_ f: Float) -> Int {
    let v = f + 12_582_912
    return Int(v.bitPattern & 0x007F_FFFF) - 0x0040_0000
  }

  @inline(__always) static func storeHalf(_ value: Float, _ y: UnsafeMutableRawPointer, _ offset: Int) {
    let bits = FloatCodec.half(value)
    y.storeBytes(of: bits.littleEndian, toByteOffset: offset, as: UInt16.self)
  }

  @inline(__always) static func loadHalf(_ y: UnsafeMutableRawPointer, _ offset: Int) -> Float {
    FloatCodec.floatFromHalf(UInt16(littleEndian: y.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
  }

  // MARK: - Searches (ggml `make_qx_quants`, `make_q3_quants`, `make_qkx2/3_quants`, `make_qp_quants`)

  /// Symmetric levels in [-nmax, nmax-1] stored as `l + nmax`; weights `qw`, or x² when nil.
  static func makeQX(
    _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>, _ qw: UnsafePointer<Float>?
  ) -> Float {
    var max: Float = 0, amax: Float = 0
    for i in 0..<n {
      let ax = abs(x[i])
      if ax > amax { amax = ax; max = x[i] }
    }
    if amax < groupMaxEps {
      for i in 0..<n { L[i] = 0 }
      return 0
    }
    let fmax = Float(nmax)
    var iscale = Float(-nmax) / max
    var sumlx: Float = 0, suml2: Float = 0
    for i in 0..<n {
      var l = nearestInt(iscale * x[i])
      l = Swift.max(-nmax, Swift.min(nmax - 1, l))
      L[i] = Int8(truncatingIfNeeded: l + nmax)
      let w = qw?[i] ?? x[i] * x[i]
      sumlx += w * x[i] * Float(l)
      suml2 += w * Float(l) * Float(l)
    }
    var scale: Float = suml2 != 0 ? sumlx / suml2 : 0
    var best = scale * sumlx
    for step in -9...9 where step != 0 {
      iscale = -(fmax + 0.1 * Float(step)) / max
      sumlx = 0
      suml2 = 0
      for i in 0..<n {
        var l = nearestInt(iscale * x[i])
        l = Swift.max(-nmax, Swift.min(nmax - 1, l))
        let w = qw?[i] ?? x[i] * x[i]
        sumlx += w * x[i] * Float(l)
        suml2 += w * Float(l) * Float(l)
      }
      if suml2 > 0 && sumlx * sumlx > best * suml2 {
        for i in 0..<n {
          let l = nearestInt(iscale * x[i])
          L[i] = Int8(truncatingIfNeeded: nmax + Swift.max(-nmax, Swift.min(nmax - 1, l)))
        }
        scale = sumlx / suml2
        best = scale * sumlx
      }
    }
    return scale
  }

  /// `makeQX(16, nmax, …)` for the 16 sub-blocks of the super-block at `x` (weights `qw`, one per
  /// value, or x² when nil): levels into `L`, scales into `s.scales`; eight sub-blocks per call of
  /// the C kernel (ck_qx_search8), the same float operations.
  static func qxSearch(
    _ nmax: Int, _ x: UnsafePointer<Float>, _ qw: UnsafePointer<Float>?, _ s: Scratch, _ L: UnsafeMutablePointer<Int8>
  ) {
    for first in stride(from: 0, to: 16, by: 8) {
      ck_qx_search8(16, Int32(nmax), x + first * 16, qw.map { $0 + first * 16 }, L + first * 16, s.scales + first)
    }
  }

  /// `make_q3_quants(n, nmax, x, L, do_rmse: true)`.
  static func makeQ3(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
    var max: Float = 0, amax: Float = 0
    for i in 0..<n {
      let ax = abs(x[i])
      if ax > amax { amax = ax; max = x[i] }
    }
    if amax < groupMaxEps {
      for i in 0..<n { L[i] = 0 }
      return 0
    }
    let iscale = Float(-nmax) / max
    var sumlx: Float = 0, suml2: Float = 0
    for i in 0..<n {
      var l = nearestInt(iscale * x[i])
      l = Swift.max(-nmax, Swift.min(nmax - 1, l))
      L[i] = Int8(l)
      let w = x[i] * x[i]
      sumlx += w * x[i] * Float(l)
      suml2 += w * Float(l) * Float(l)
    }
    for _ in 0..<5 {
      var changed = 0
      for i in 0..<n {
        let w = x[i] * x[i]
        var slx = sumlx - w * x[i] * Float(L[i])
        if slx > 0 {
          var sl2 = suml2 - w * Float(L[i]) * Float(L[i])
          var newL = nearestInt(x[i] * sl2 / slx)
          newL = Swift.max(-nmax, Swift.min(nmax - 1, newL))
          if newL != Int(L[i]) {
            slx += w * x[i] * Float(newL)
            sl2 += w * Float(newL) * Float(newL)
            if sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
              L[i] = Int8(newL)
              sumlx = slx
              suml2 = sl2
              changed += 1
            }
          }
        }
      }
      if changed == 0 { break }
    }
    for i in 0..<n { L[i] += Int8(nmax) }
    return suml2 > 0 ? sumlx / suml2 : 0
  }

  /// `make_qkx2_quants`/`make_qkx3_quants` with explicit weights (identical then): levels in
  /// [0, nmax], returns the scale and stores `-min` in `theMin`.
  static func makeQKX(
    _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>,
    _ theMin: inout Float, _ Laux: UnsafeMutablePointer<UInt8>, _ rmin: Float, _ rdelta: Float, _ nstep: Int,
    _ useMAD: Bool
  ) -> Float {
    var min = x[0], max = x[0]
    var sumW = weights[0]
    var sumX = sumW * x[0]
    for i in 1..<n {
      if x[i] < min { min = x[i] }
      if x[i] > max { max = x[i] }
      let w = weights[i]
      sumW += w
      sumX += w * x[i]
    }
    if min > 0 { min = 0 }
    if max == min {
      for i in 0..<n { L[i] = 0 }
      theMin = -min
      return 0
    }
    let fmax = Float(nmax)
    let iscale = fmax / (max - min)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
      let l = nearestInt(iscale * (x[i] - min))
      L[i] = UInt8(Swift.max(0, Swift.min(nmax, l)))
      var diff = scale * Float(L[i]) + min - x[i]
      diff = useMAD ? abs(diff) : diff * diff
      bestError += weights[i] * diff
    }
    if nstep < 1 {
      theMin = -min
      return scale
    }
    // Steps run in pairs: the sums of step s+1 are taken in the same pass as those of step s
    // (independent accumulators, so twice the work per float-add latency), and are used only when
    // step s left `min` unchanged; otherwise step s+1 is summed again with the new `min`. Every
    // sum is the one ggml computes, in ggml's order.
    let LauxB = Laux + n
    var step = 0
    while step <= nstep {
      let paired = step + 1 <= nstep
      let iscaleA = (rmin + rdelta * Float(step) + fmax) / (max - min)
      let iscaleB = (rmin + rdelta * Float(step + 1) + fmax) / (max - min)
      var a: (Float, Float, Float) = (0, 0, 0), b: (Float, Float, Float) = (0, 0, 0)
      if paired {
        for i in 0..<n {
          let la = Swift.max(0, Swift.min(nmax, nearestInt(iscaleA * (x[i] - min))))
          let lb = Swift.max(0, Swift.min(nmax, nearestInt(iscaleB * (x[i] - min))))
          Laux[i] = UInt8(la)
          LauxB[i] = UInt8(lb)
          let w = weights[i]
          let fa = Float(la), fb = Float(lb)
          a.0 += w * fa
          a.1 += w * fa * fa
          a.2 += w * fa * x[i]
          b.0 += w * fb
          b.1 += w * fb * fb
          b.2 += w * fb * x[i]
        }
      } else {
        a = qkxSums(n, nmax, x, weights, Laux, iscaleA, min)
      }
      if qkxTry(n, x, weights, Laux, L, a, sumW, sumX, useMAD, &bestError, &scale, &min) && paired {
        b = qkxSums(n, nmax, x, weights, LauxB, (rmin + rdelta * Float(step + 1) + fmax) / (max - min), min)
      }
      if paired { _ = qkxTry(n, x, weights, LauxB, L, b, sumW, sumX, useMAD, &bestError, &scale, &min) }
      step += 2
    }
    theMin = -min
    return scale
  }

  /// `makeQKX` for every sub-block of `n` values of the super-block at `x` (weights in
  /// `s.weights`, one per value): levels into `L`, scales into `s.scales`, `-min` into `s.mins`.
  /// Eight sub-blocks at a time in the C kernel (ck_qkx_search8), the same float operations.
  static func qkxSearch(
    _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ s: Scratch, _ L: UnsafeMutablePointer<UInt8>, rmin: Float,
    rdelta: Float, nstep: Int, useMAD: Bool
  ) {
    for first in stride(from: 0, to: 256 / n, by: 8) {
      ck_qkx_search8(
        Int32(n), Int32(nmax), x + first * n, s.weights + first * n, L + first * n, s.scales + first, s.mins + first,
        rmin, rdelta, Int32(nstep), useMAD ? 1 : 0)
    }
  }

  /// One step's level sums (Σw·l, Σw·l², Σw·l·x) for `iscale`, levels into `Laux`.
  @inline(__always)
  static func qkxSums(
    _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
    _ Laux: UnsafeMutablePointer<UInt8>,
    _ iscale: Float, _ min: Float
  ) -> (Float, Float, Float) {
    var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
    for i in 0..<n {
      let l = Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - min))))
      Laux[i] = UInt8(l)
      let w = weights[i]
      let fl = Float(l)
      sumL += w * fl
      sumL2 += w * fl * fl
      sumXL += w * fl * x[i]
    }
    return (sumL, sumL2, sumXL)
  }

  /// One step's least-squares scale and min for the levels in `Laux`; kept (into `L`, `scale`,
  /// `min`) when its error beats `bestError`. Returns whether it was kept.
  @inline(__always)
  static func qkxTry(
    _ n: Int, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ Laux: UnsafeMutablePointer<UInt8>,
    _ L: UnsafeMutablePointer<UInt8>, _ sums: (Float, Float, Float), _ sumW: Float, _ sumX: Float, _ useMAD: Bool,
    _ bestError: inout Float, _ scale: inout Float, _ min: inout Float
  ) -> Bool {
    let (sumL, sumL2, sumXL) = sums
    let D = sumW * sumL2 - sumL * sumL
    guard D > 0 else { return false }
    var thisScale = (sumW * sumXL - sumX * sumL) / D
    var thisMin = (sumL2 * sumX - sumL * sumXL) / D
    if thisMin > 0 {
      thisMin = 0
      thisScale = sumXL / sumL2
    }
    var error: Float = 0
    for i in 0..<n {
      var diff = thisScale * Float(Laux[i]) + thisMin - x[i]
      diff = useMAD ? abs(diff) : diff * diff
      error += weights[i] * diff
    }
    guard error < bestError else { return false }
    for i in 0..<n { L[i] = Laux[i] }
    bestError = error
    scale = thisScale
    min = thisMin
    return true
  }

  /// `make_qp_quants`: non-negative levels in [0, nmax] for the sub-block scales/mins.
  static func makeQP(
    _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>, _ qw: UnsafePointer<Float>
  ) -> Float {
    var max: Float = 0
    for i in 0..<n { max = Swift.max(max, x[i]) }
    if max < groupMaxEps {
      for i in 0..<n { L[i] = 0 }
      return 0
    }
    let fmax = Float(nmax)
    var iscale = fmax / max
    for i in 0..<n { L[i] = UInt8(truncatingIfNeeded: nearestInt(iscale * x[i])) }
    let scale = 1 / iscale
    var bestMSE: Float = 0
    for i in 0..<n {
      let diff = x[i] - scale * Float(L[i])
      bestMSE += qw[i] * diff * diff
    }
    for step in -4...4 where step != 0 {
      let iscaleStep = (0.1 * Float(step) + fmax) / max
      let scaleStep = 1 / iscaleStep
      var mse: Float = 0
      for i in 0..<n {
        let l = Swift.min(nmax, nearestInt(iscaleStep * x[i]))
        let diff = x[i] - scaleStep * Float(l)
        mse += qw[i] * diff * diff
      }
      if mse < bestMSE {
        bestMSE = mse
        iscale = iscaleStep
      }
    }
    var sumlx: Float = 0, suml2: Float = 0
    for i in 0..<n {
      let l = Swift.min(nmax, nearestInt(iscale * x[i]))
      L[i] = UInt8(truncatingIfNeeded: l)
      let w = qw[i]
      sumlx += w * x[i] * Float(l)
      suml2 += w * Float(l) * Float(l)
    }
    for _ in 0..<5 {
      var changed = 0
      for i in 0..<n {
        let w = qw[i]
        var slx = sumlx - w * x[i] * Float(L[i])
        var sl2 = suml2 - w * Float(L[i]) * Float(L[i])
        if slx > 0 && sl2 > 0 {
          let newL = Swift.min(nmax, nearestInt(x[i] * sl2 / slx))
          if newL != Int(L[i]) {
            slx += w * x[i] * Float(newL)
            sl2 += w * Float(newL) * Float(newL)
            if slx * slx * suml2 > sumlx * sumlx * sl2 {
              L[i] = UInt8(truncatingIfNeeded: newL)
              sumlx = slx
              suml2 = sl2
              changed += 1
            }
          }
        }
      }
      if changed == 0 { break }
    }
    return suml2 > 0 ? sumlx / suml2 : 0
  }

  // MARK: - Q2_K: scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin

  static func q2_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: Scratch, unitImportance: Bool) {
    let L = s.levels
    let q4scale: Float = 15
    if unitImportance {
      var sumx2: Float = 0
      for j in 0..<256 { sumx2 += x[j] * x[j] }
      let sigma2 = sumx2 / 256
      for j in 0..<16 {
        var sumw: Float = 0
        for l in 0..<16 {
          let v = x[16 * j + l]
          s.weights[16 * j + l] = (sigma2 + v * v).squareRoot()
          sumw += s.weights[16 * j + l]
        }
        s.sw[j] = sumw
      }
      qkxSearch(16, 3, x, s, L, rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
      let dm = makeQP(16, 15, s.scales, s.Ls, s.sw)
      let mm = makeQP(16, 15, s.mins, s.Lm, s.sw)
      storeHalf(dm, y, 80)
      storeHalf(mm, y, 82)
      for j in 0..<16 { y.storeBytes(of: s.Ls[j] | (s.Lm[j] << 4), toByteOffset: j, as: UInt8.self) }
    } else {
      var maxScale: Float = 0, maxMin: Float = 0
      for l in 0..<256 { s.weights[l] = abs(x[l]) }
      qkxSearch(16, 3, x, s, L, rmin: -0.5, rdelta: 0.1, nstep: 15, useMAD: true)
      for j in 0..<16 {
        if s.scales[j] > maxScale { maxScale = s.scales[j] }
        if s.mins[j] > maxMin { maxMin = s.mins[j] }
      }
      if maxScale > 0 {
        let iscale = q4scale / maxScale
        for j in 0..<16 {
          y.storeBytes(of: UInt8(truncatingIfNeeded: nearestInt(iscale * s.scales[j])), toByteOffset: j, as: UInt8.self)
        }
        storeHalf(maxScale / q4scale, y, 80)
      } else {
        for j in 0..<16 { y.storeBytes(of: 0, toByteOffset: j, as: UInt8.self) }
        storeHalf(0, y, 80)
      }
      if maxMin > 0 {
        let iscale = q4scale / maxMin
        for j in 0..<16 {
          let l = UInt8(truncatingIfNeeded: nearestInt(iscale * s.mins[j]))
          let old = y.load(fromByteOffset: j, as: UInt8.self)
          y.storeBytes(of: old | (l &<< 4), toByteOffset: j, as: UInt8.self)
        }
        storeHalf(maxMin / q4scale, y, 82)
      } else {
        storeHalf(0, y, 82)
      }
    }
    let dAll = loadHalf(y, 80), mAll = loadHalf(y, 82)
    for j in 0..<16 {
      let sc = y.load(fromByteOffset: j, as: UInt8.self)
      let d = dAll * Float(sc & 0xF)
      if d == 0 { continue }
      let dm = mAll * Float(sc >> 4)
      for ii in 0..<16 {
        let l = nearestInt((x[16 * j + ii] + dm) / d)
        L[16 * j + ii] = UInt8(Swift.max(0, Swift.min(3, l)))
      }
    }
    for j in stride(from: 0, to: 256, by: 128) {
      for l in 0..<32 {
        let byte = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6)
        y.storeBytes(of: byte, toByteOffset: 16 + j / 4 + l, as: UInt8.self)
      }
    }
  }

  // MARK: - Q3_K: hmask[32], qs[64], scales[12] (6-bit, packed), d

  static func q3_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: Scratch, unitImportance: Bool) {
    let L = s.L
    let scalesAt = 96
    for k in 0..<12 { y.storeBytes(of: 0, toByteOffset: scalesAt + k, as: UInt8.self) }
    func putScale(_ j: Int, _ level: Int) {
      var l = level
      if j < 8 {
        y.storeBytes(of: UInt8(l & 0xF), toByteOffset: scalesAt + j, as: UInt8.self)
      } else {
        let old = y.load(fromByteOffset: scalesAt + j - 8, as: UInt8.self)
        y.storeBytes(of: old | UInt8((l & 0xF) << 4), toByteOffset: scalesAt + j - 8, as: UInt8.self)
      }
      l >>= 4
      let at = scalesAt + j % 4 + 8
      let old = y.load(fromByteOffset: at, as: UInt8.self)
      y.storeBytes(of: old | UInt8(truncatingIfNeeded: l << (2 * (j / 4))), toByteOffset: at, as: UInt8.self)
    }
    if unitImportance {
      var sumx2: Float = 0
      for j in 0..<256 { sumx2 += x[j] * x[j] }
      let sigma2 = 2 * sumx2 / 256
      for j in 0..<16 {
        var sumw: Float = 0
        for l in 0..<16 {
          let v = x[16 * j + l]
          s.weights[16 * j + l] = (sigma2 + v * v).squareRoot()
        }
        for l in 0..<16 { sumw += s.weights[16 * j + l] }
        s.sw[j] = sumw
      }
      qxSearch(4, x, s.weights, s, L)
      let dBlock = makeQX(16, 32, s.scales, s.Lq, s.sw)
      for j in 0..<16 { putScale(j, Int(s.Lq[j])) }
      storeHalf(dBlock, y, 108)
    } else {
      var maxScale: Float = 0, amax: Float = 0
      for first in stride(from: 0, to: 16, by: 8) {
        ck_q3_search8(16, 4, x + first * 16, L + first * 16, s.scales + first)  // makeQ3, eight at a time
      }
      for j in 0..<16 {
        let scale = abs(s.scales[j])
        if scale > amax { amax = scale; maxScale = s.scales[j] }
      }
      if maxScale != 0 {
        let iscale = -32 / maxScale
        for j in 0..<16 {
          var l = Int(Int8(truncatingIfNeeded: nearestInt(iscale * s.scales[j])))
          l = Swift.max(-32, Swift.min(31, l)) + 32
          putScale(j, l)
        }
        storeHalf(1 / iscale, y, 108)
      } else {
        storeHalf(0, y, 108)
      }
    }
    let dAll = loadHalf(y, 108)
    for j in 0..<16 {
      let low =
        j < 8
        ? Int(y.load(fromByteOffset: scalesAt + j, as: UInt8.self) & 0xF)
        : Int(y.load(fromByteOffset: scalesAt + j - 8, as: UInt8.self) >> 4)
      let high = Int((y.load(fromByteOffset: scalesAt + 8 + j % 4, as: UInt8.self) >> UInt8(2 * (j / 4))) & 3)
      let sc = (low | (high << 4)) - 32
      let d = dAll * Float(sc)
      if d == 0 { continue }
      for ii in 0..<16 {
        let l = nearestInt(x[16 * j + ii] / d)
        L[16 * j + ii] = Int8(Swift.max(-4, Swift.min(3, l)) + 4)
      }
    }
    for k in 0..<32 { y.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
    var m = 0
    var hm: UInt8 = 1
    for j in 0..<256 {
      if L[j] > 3 {
        let old = y.load(fromByteOffset: m, as: UInt8.self)
        y.storeBytes(of: old | hm, toByteOffset: m, as: UInt8.self)
        L[j] -= 4
      }
      m += 1
      if m == 32 {
        m = 0
        hm = hm &<< 1
      }
    }
    let U = s.levels
    for j in stride(from: 0, to: 256, by: 128) {
      for l in 0..<32 {
        let byte = U[j + l] | (U[j + l + 32] << 2) | (U[j + l + 64] << 4) | (U[j + l + 96] << 6)
        y.storeBytes(of: byte, toByteOffset: 32 + j / 4 + l, as: UInt8.self)
      }
    }
  }

  // MARK: - Q4_K / Q5_K: d, dmin, scales[12] (6-bit scale and min per 32 values), [qh[32]], qs[128]

  static func q45_K(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: Scratch, five: Bool, unitImportance: Bool
  ) {
    let L = s.levels
    let nmax = five ? 31 : 15
    if unitImportance {
      var sumx2: Float = 0
      for l in 0..<256 { sumx2 += x[l] * x[l] }
      let sigma2 = 2 * sumx2 / 256
      for j in 0..<8 {
        for l in 0..<32 {
          let v = x[32 * j + l]
          s.weights[32 * j + l] = (sigma2 + v * v).squareRoot()
        }
        var sumw: Float = 0
        for l in 0..<32 { sumw += s.weights[32 * j + l] }
        s.sw[j] = sumw
      }
      qkxSearch(32, nmax, x, s, L, rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
      let dBlock = makeQP(8, 63, s.scales, s.Ls, s.sw)
      let mBlock = makeQP(8, 63, s.mins, s.Lm, s.sw)
      for j in 0..<8 {
        s.Ls[j] = Swift.min(63, s.Ls[j])
        s.Lm[j] = Swift.min(63, s.Lm[j])
      }
      packScales(s.Ls, s.Lm, y)
      storeHalf(dBlock, y, 0)
      storeHalf(mBlock, y, 2)
    } else {
      var maxScale: Float = 0, maxMin: Float = 0
      for j in 0..<8 {
        var sumx2: Float = 0
        for l in 0..<32 { sumx2 += x[32 * j + l] * x[32 * j + l] }
        let avx = (sumx2 / 32).squareRoot()
        for l in 0..<32 { s.weights[32 * j + l] = avx + abs(x[32 * j + l]) }
      }
      if five {
        qkxSearch(32, 31, x, s, L, rmin: -0.5, rdelta: 0.1, nstep: 15, useMAD: false)
      } else {
        qkxSearch(32, 15, x, s, L, rmin: -1, rdelta: 0.1, nstep: 20, useMAD: false)
      }
      for j in 0..<8 {
        if s.scales[j] > maxScale { maxScale = s.scales[j] }
        if s.mins[j] > maxMin { maxMin = s.mins[j] }
      }
      let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
      let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
      for j in 0..<8 {
        s.Ls[j] = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * s.scales[j])))
        s.Lm[j] = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * s.mins[j])))
      }
      packScales(s.Ls, s.Lm, y)
      storeHalf(maxScale / 63, y, 0)
      storeHalf(maxMin / 63, y, 2)
    }
    let dAll = loadHalf(y, 0), mAll = loadHalf(y, 2)
    for j in 0..<8 {
      let (sc, m) = scaleMin(j, y + 4)
      let d = dAll * sc
      if d == 0 { continue }
      let dm = mAll * m
      for ii in 0..<32 {
        let l = nearestInt((x[32 * j + ii] + dm) / d)
        L[32 * j + ii] = UInt8(Swift.max(0, Swift.min(nmax, l)))
      }
    }
    if five {
      for k in 0..<32 { y.storeBytes(of: 0, toByteOffset: 16 + k, as: UInt8.self) }
      var m1: UInt8 = 1, m2: UInt8 = 2
      var ql = 48
      for n in stride(from: 0, to: 256, by: 64) {
        for j in 0..<32 {
          var l1 = L[n + j], l2 = L[n + j + 32]
          var qh = y.load(fromByteOffset: 16 + j, as: UInt8.self)
          if l1 > 15 { l1 -= 16; qh |= m1 }
          if l2 > 15 { l2 -= 16; qh |= m2 }
          y.storeBytes(of: qh, toByteOffset: 16 + j, as: UInt8.self)
          y.storeBytes(of: l1 | (l2 << 4), toByteOffset: ql + j, as: UInt8.self)
        }
        m1 = m1 &<< 2
        m2 = m2 &<< 2
        ql += 32
      }
    } else {
      var q = 16
      for j in stride(from: 0, to: 256, by: 64) {
        for l in 0..<32 { y.storeBytes(of: L[j + l] | (L[j + l + 32] << 4), toByteOffset: q + l, as: UInt8.self) }
        q += 32
      }
    }
  }

  /// The 12 packed bytes of eight 6-bit scales and mins (ggml's layout read by `get_scale_min_k4`).
  static func packScales(
    _ ls: UnsafeMutablePointer<UInt8>, _ lm: UnsafeMutablePointer<UInt8>, _ y: UnsafeMutableRawPointer
  ) {
    let b = y + 4
    for j in 0..<4 {
      b.storeBytes(of: ls[j], toByteOffset: j, as: UInt8.self)
      b.storeBytes(of: lm[j], toByteOffset: j + 4, as: UInt8.self)
    }
    for j in 4..<8 {
      b.storeBytes(of: (ls[j] & 0xF) | ((lm[j] & 0xF) << 4), toByteOffset: j + 4, as: UInt8.self)
      b.storeBytes(
        of: b.load(fromByteOffset: j - 4, as: UInt8.self) | ((ls[j] >> 4) << 6), toByteOffset: j - 4, as: UInt8.self)
      b.storeBytes(of: b.load(fromByteOffset: j, as: UInt8.self) | ((lm[j] >> 4) << 6), toByteOffset: j, as: UInt8.self)
    }
  }

  /// ggml `get_scale_min_k4` on the 12 packed bytes at `q`.
  @inline(__always) static func scaleMin(_ j: Int, _ q: UnsafeMutableRawPointer) -> (Float, Float) {
    func at(_ k: Int) -> UInt8 { q.load(fromByteOffset: k, as: UInt8.self) }
    if j < 4 { return (Float(at(j) & 63), Float(at(j + 4) & 63)) }
    return (Float((at(j + 4) & 0xF) | ((at(j - 4) >> 6) << 4)), Float((at(j + 4) >> 4) | ((at(j) >> 6) << 4)))
  }

  // MARK: - Q6_K: ql[128], qh[64], scales[16] (int8), d

  static func q6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: Scratch, unitImportance: Bool) {
    let L = s.L
    var maxScale: Float = 0, maxAbsScale: Float = 0
    if unitImportance { for l in 0..<256 { s.weights[l] = 1 } }
    qxSearch(32, x, unitImportance ? UnsafePointer(s.weights) : nil, s, L)
    for ib in 0..<16 {
      let scale = s.scales[ib]
      if abs(scale) > maxAbsScale {
        maxAbsScale = abs(scale)
        maxScale = scale
      }
    }
    if maxAbsScale < groupMaxEps {
      for k in 0..<210 { y.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
      return
    }
    let iscale = -128 / maxScale
    storeHalf(1 / iscale, y, 208)
    for ib in 0..<16 {
      let level = Int8(truncatingIfNeeded: Swift.min(127, nearestInt(iscale * s.scales[ib])))
      y.storeBytes(of: level, toByteOffset: 192 + ib, as: Int8.self)
    }
    let dAll = loadHalf(y, 208)
    for j in 0..<16 {
      let d = dAll * Float(y.load(fromByteOffset: 192 + j, as: Int8.self))
      if d == 0 { continue }
      for ii in 0..<16 {
        let l = nearestInt(x[16 * j + ii] / d)
        L[16 * j + ii] = Int8(Swift.max(-32, Swift.min(31, l)) + 32)
      }
    }
    let U = s.levels
    var ql = 0, qh = 128
    for j in stride(from: 0, to: 256, by: 128) {
      for l in 0..<32 {
        let q1 = U[j + l] & 0xF, q2 = U[j + l + 32] & 0xF, q3 = U[j + l + 64] & 0xF, q4 = U[j + l + 96] & 0xF
        y.storeBytes(of: q1 | (q3 << 4), toByteOffset: ql + l, as: UInt8.self)
        y.storeBytes(of: q2 | (q4 << 4), toByteOffset: ql + l + 32, as: UInt8.self)
        let high =
          (U[j + l] >> 4) | ((U[j + l + 32] >> 4) << 2) | ((U[j + l + 64] >> 4) << 4) | ((U[j + l + 96] >> 4) << 6)
        y.storeBytes(of: high, toByteOffset: qh + l, as: UInt8.self)
      }
      ql += 64
      qh += 32
    }
  }

  // MARK: - Legacy types with unit importance (`quantize_row_q4_0_impl`, … with weights of one)

  /// One 32-value block; `sigma2` is the row's mean square (ggml: `sum_x2 / n_per_row`).
  static func legacyUnit(
    _ type: GGMLType, _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ sigma2: Float, _ s: Scratch
  ) {
    for j in 0..<32 { s.weights[j] = (sigma2 + x[j] * x[j]).squareRoot() }
    switch type {
    case .q4_0, .q5_0:
      s.scales[0] = makeQX(32, type == .q4_0 ? 8 : 16, x, s.L, s.weights)
    case .q4_1, .q5_1:
      s.scales[0] = makeQKX(
        32, type == .q4_1 ? 15 : 31, x, s.weights, s.levels, &s.mins[0], s.Laux, -0.9, 0.05, 36, false)
    default: preconditionFailure("\(type.name) has no unit-importance encoder")
    }
    legacyPack(type, s.levels, s.scales[0], s.mins[0], y)
  }

  /// `legacyUnit` for eight consecutive blocks (256 values, `y` their 8 block encodings), the
  /// searches in the C kernels eight blocks at a time; the same bytes.
  static func legacyUnit8(
    _ type: GGMLType, _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ sigma2: Float, _ s: Scratch
  ) {
    for j in 0..<256 { s.weights[j] = (sigma2 + x[j] * x[j]).squareRoot() }
    switch type {
    case .q4_0, .q5_0: ck_qx_search8(32, type == .q4_0 ? 8 : 16, x, s.weights, s.L, s.scales)
    case .q4_1, .q5_1:
      ck_qkx_search8(32, type == .q4_1 ? 15 : 31, x, s.weights, s.levels, s.scales, s.mins, -0.9, 0.05, 36, 0)
    default: preconditionFailure("\(type.name) has no unit-importance encoder")
    }
    for b in 0..<8 { legacyPack(type, s.levels + 32 * b, s.scales[b], s.mins[b], y + b * type.blockBytes) }
  }

  /// A 32-value block from its levels, scale and `-min` (the affine types).
  static func legacyPack(
    _ type: GGMLType, _ levels: UnsafeMutablePointer<UInt8>, _ d: Float, _ theMin: Float, _ y: UnsafeMutableRawPointer
  ) {
    storeHalf(d, y, 0)
    let nibbles: Int
    switch type {
    case .q4_0: nibbles = 2
    case .q5_0: nibbles = 6
    case .q4_1:
      storeHalf(-theMin, y, 2)
      nibbles = 4
    default:
      storeHalf(-theMin, y, 2)
      nibbles = 8
    }
    var qh: UInt32 = 0
    for j in 0..<16 {
      let a = levels[j], b = levels[j + 16]
      y.storeBytes(of: (a & 0x0F) | ((b & 0x0F) << 4), toByteOffset: nibbles + j, as: UInt8.self)
      qh |= UInt32((a & 0x10) >> 4) << UInt32(j)
      qh |= UInt32((b & 0x10) >> 4) << UInt32(j + 16)
    }
    if type == .q5_0 || type == .q5_1 { y.storeBytes(of: qh.littleEndian, toByteOffset: nibbles - 4, as: UInt32.self) }
  }

  /// One super-block of `type` by the chosen encoder.
  static func encode(
    _ type: GGMLType, _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ s: Scratch, unitImportance: Bool
  ) {
    switch type {
    case .q2_K: q2_K(x, y, s, unitImportance: unitImportance)
    case .q3_K: q3_K(x, y, s, unitImportance: unitImportance)
    case .q4_K: q45_K(x, y, s, five: false, unitImportance: unitImportance)
    case .q5_K: q45_K(x, y, s, five: true, unitImportance: unitImportance)
    case .q6_K: q6_K(x, y, s, unitImportance: unitImportance)
    default: preconditionFailure("\(type.name) is not a K-quant")
    }
  }
}
