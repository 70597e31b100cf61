import CCodecKernels
import Foundation
import Testing
import Weights

@testable import Transforms

/// The vectorised scale search (eight sub-blocks per call, CCodecKernels/kquant_kernels.c) against
/// the scalar `KQuants.makeQKX`/`makeQX` written from ggml's `make_qkx2_quants`/`make_qx_quants`: the same levels, scales and
/// mins, bit for bit, on every setting the K-quant and unit-importance encoders use, over random
/// super-blocks with the edge cases that take other branches (flat, all positive, zeros, spikes).
@Suite(.serialized) struct KQuantKernelTests {  // serialized: the portable switch is global
  /// (n, nmax, rmin, rdelta, nstep, useMAD) as the encoders call the search.
  static let settings: [(Int, Int, Float, Float, Int, Bool)] = [
    (32, 15, -1, 0.1, 20, false),  // Q4_K reference
    (32, 31, -0.5, 0.1, 15, false),  // Q5_K reference
    (32, 15, -0.9, 0.05, 36, false),  // Q4_K unit importance
    (32, 31, -0.9, 0.05, 36, false),  // Q5_K unit importance
    (16, 3, -0.5, 0.1, 15, true),  // Q2_K reference
    (16, 3, -0.9, 0.05, 36, false),  // Q2_K unit importance
  ]

  /// A super-block of 256 values; `kind` picks the distribution, sub-block edge cases mixed in.
  static func superBlock(_ kind: Int, _ rng: inout SplitMix) -> [Float] {
    func uniform() -> Float { Float(Double(rng.next() >> 11) / Double(1 << 53)) }
    var x = (0..<256).map { _ -> Float in
      switch kind % 4 {
      case 0: return (uniform() - 0.5) * 0.1
      case 1:
        let u = Double(uniform()) - 0.5
        return -0.02 * Float(u < 0 ? -1 : 1) * Float(log(1 - 2 * abs(u) + 1e-12))
      case 2: return uniform() * 3 + 0.01  // all positive: min clamps to 0
      default: return (uniform() - 0.5) * 1e-3
      }
    }
    let sub = Int(rng.next() % 16) * 16
    switch kind % 5 {
    case 0: for i in sub..<(sub + 16) { x[i] = 0 }
    case 1: for i in sub..<(sub + 32) where i < 256 { x[i] = 0.25 }
    case 2: x[Int(rng.next() % 256)] = 40
    case 3: for i in 0..<256 where i % 7 == 0 { x[i] = -x[i] }
    default: break
    }
    return x
  }

  @Test(arguments: [false, true])
  func vectorisedSearchMatchesScalar(portable: Bool) {
    ck_kquant_force_portable(portable ? 1 : 0)
    defer { ck_kquant_force_portable(0) }
    var rng = SplitMix(seed: 2026)
    let s = KQuants.Scratch()
    defer { s.deallocate() }
    var mismatches: [String] = []
    for (n, nmax, rmin, rdelta, nstep, mad) in Self.settings {
      for kind in 0..<200 {
        let x = Self.superBlock(kind, &rng)
        let weights = x.map { mad ? abs($0) : (0.01 + $0 * $0).squareRoot() + abs($0) }
        var scalarLevels = [UInt8](repeating: 0, count: 256)
        var scalarScales = [Float](repeating: 0, count: 16), scalarMins = [Float](repeating: 0, count: 16)
        x.withUnsafeBufferPointer { xp in
          weights.withUnsafeBufferPointer { wp in
            scalarLevels.withUnsafeMutableBufferPointer { lp in
              for j in 0..<(256 / n) {
                scalarScales[j] = KQuants.makeQKX(
                  n, nmax, xp.baseAddress! + j * n, wp.baseAddress! + j * n, lp.baseAddress! + j * n,
                  &scalarMins[j], s.Laux, rmin, rdelta, nstep, mad)
              }
            }
            for i in 0..<256 { s.weights[i] = wp[i] }
            KQuants.qkxSearch(
              n, nmax, xp.baseAddress!, s, s.levels, rmin: rmin, rdelta: rdelta, nstep: nstep, useMAD: mad)
          }
        }
        for j in 0..<(256 / n) {
          let levels = (0..<n).map { s.levels[j * n + $0] }
          if s.scales[j].bitPattern != scalarScales[j].bitPattern || s.mins[j].bitPattern != scalarMins[j].bitPattern
            || levels != Array(scalarLevels[(j * n)..<(j * n + n)])
          {
            mismatches.append("n \(n) nmax \(nmax) nstep \(nstep) block \(kind) sub-block \(j)")
          }
        }
      }
    }
    #expect(mismatches.count == 0, "\(mismatches.count) differ, first: \(mismatches.prefix(3))")
  }

  @Test(arguments: [(32, false), (32, true), (4, true)], [false, true])
  func vectorisedQXSearchMatchesScalar(settings: (nmax: Int, weighted: Bool), portable: Bool) {
    let (nmax, weighted) = settings
    ck_kquant_force_portable(portable ? 1 : 0)
    defer { ck_kquant_force_portable(0) }
    var rng = SplitMix(seed: 6)
    let s = KQuants.Scratch()
    defer { s.deallocate() }
    var mismatches: [String] = []
    for kind in 0..<300 {
      let x = Self.superBlock(kind, &rng)
      let weights = x.map { (0.01 + $0 * $0).squareRoot() }
      var scalarLevels = [Int8](repeating: 0, count: 256)
      var scalarScales = [Float](repeating: 0, count: 16)
      x.withUnsafeBufferPointer { xp in
        weights.withUnsafeBufferPointer { wp in
          scalarLevels.withUnsafeMutableBufferPointer { lp in
            for j in 0..<16 {
              scalarScales[j] = KQuants.makeQX(
                16, nmax, xp.baseAddress! + 16 * j, lp.baseAddress! + 16 * j, weighted ? wp.baseAddress! + 16 * j : nil)
            }
          }
          KQuants.qxSearch(nmax, xp.baseAddress!, weighted ? wp.baseAddress! : nil, s, s.L)
        }
      }
      for j in 0..<16 {
        let levels = (0..<16).map { s.L[16 * j + $0] }
        if s.scales[j].bitPattern != scalarScales[j].bitPattern
          || levels != Array(scalarLevels[(16 * j)..<(16 * j + 16)])
        {
          mismatches.append("block \(kind) sub-block \(j)")
        }
      }
    }
    #expect(mismatches.count == 0, "nmax \(nmax): \(mismatches.count) differ, first: \(mismatches.prefix(3))")
  }

  @Test(arguments: [false, true])
  func vectorisedQ3SearchMatchesScalar(portable: Bool) {
    ck_kquant_force_portable(portable ? 1 : 0)
    defer { ck_kquant_force_portable(0) }
    var rng = SplitMix(seed: 3)
    var mismatches: [String] = []
    for kind in 0..<300 {
      let x = Self.superBlock(kind, &rng)
      var scalarLevels = [Int8](repeating: 0, count: 256), levels = [Int8](repeating: 0, count: 256)
      var scalarScales = [Float](repeating: 0, count: 16), scales = [Float](repeating: 0, count: 16)
      x.withUnsafeBufferPointer { xp in
        scalarLevels.withUnsafeMutableBufferPointer { lp in
          for j in 0..<16 {
            scalarScales[j] = KQuants.makeQ3(16, 4, xp.baseAddress! + 16 * j, lp.baseAddress! + 16 * j)
          }
        }
        levels.withUnsafeMutableBufferPointer { lp in
          scales.withUnsafeMutableBufferPointer { sp in
            for first in stride(from: 0, to: 16, by: 8) {
              ck_q3_search8(16, 4, xp.baseAddress! + 16 * first, lp.baseAddress! + 16 * first, sp.baseAddress! + first)
            }
          }
        }
      }
      if levels != scalarLevels || scales.map(\.bitPattern) != scalarScales.map(\.bitPattern) {
        mismatches.append("block \(kind)")
      }
    }
    #expect(mismatches.count == 0, "\(mismatches.count) differ, first: \(mismatches.prefix(3))")
  }

  /// The 32-value types' unit-importance encodings, eight blocks per kernel call where a row has
  /// eight left, equal the one-block scalar encoder on rows of 320 (a batch and two single blocks).
  @Test(arguments: [GGMLType.q4_0, .q4_1, .q5_0, .q5_1])
  func batchedLegacyUnitMatchesScalar(type: GGMLType) {
    var rng = SplitMix(seed: 32)
    var values: [Float] = []
    for kind in 0..<5 { values += Self.superBlock(kind, &rng) }
    let row = 320
    var batched = [UInt8](repeating: 0, count: type.byteCount(elements: values.count))
    var scalar = batched
    let s = KQuants.Scratch()
    defer { s.deallocate() }
    values.withUnsafeBufferPointer { v in
      batched.withUnsafeMutableBytes {
        GGMLQuantizer.quantize(v, type: type, method: .unitImportance, rowLength: row, into: $0)
      }
      scalar.withUnsafeMutableBytes { out in
        for start in stride(from: 0, to: values.count, by: row) {
          let sigma2 = (start..<(start + row)).reduce(Float(0)) { $0 + v[$1] * v[$1] } / Float(row)
          for offset in stride(from: start, to: start + row, by: 32) {
            KQuants.legacyUnit(
              type, v.baseAddress! + offset, out.baseAddress! + offset / 32 * type.blockBytes, sigma2, s)
          }
        }
      }
    }
    #expect(batched == scalar)
  }
}
