import Foundation
import Testing

@testable import Tensors

/// The AVX-512 linear kernel (`tk_linear`, through `linear`), with fp32 and fp16 weights: against
/// the reference loops, against its documented order of operations bit for bit, and independent
/// of how the work is split (threads, batch).
@Suite struct LinearKernelTests {
  struct Case: CustomStringConvertible, Sendable {
    let rows: Int, inFeatures: Int, outFeatures: Int, bias: Bool, accumulate: Bool
    var description: String {
      "\(rows)×\(inFeatures) → \(outFeatures)\(bias ? " bias" : "")\(accumulate ? " accumulate" : "")"
    }
  }

  /// Register tiles of 6 rows and their tails (1, 5, 7, 13), row blocks of 192 (200, 390),
  /// panels of 64 features and their tails (1, 20, 70, 130), transposed blocks of 16 in the
  /// reduction and their tails (1, 17), reduction blocks of 128 (129, 300), chunks of twelve panels
  /// (1700 features: two whole chunks and a partial one, crossed inside each thread's part), passes
  /// of five reduction blocks with chunks of six panels (641: a second pass of one value; with 449
  /// features a chunk and a partial one, with 193 rows two row blocks in each pass), and parts
  /// large enough to be split over threads by features (200 × 300 → 200) and by rows (390 × 200 → 70).
  static let cases = [
    Case(rows: 1, inFeatures: 1, outFeatures: 1, bias: true, accumulate: false),
    Case(rows: 5, inFeatures: 17, outFeatures: 20, bias: false, accumulate: false),
    Case(rows: 7, inFeatures: 16, outFeatures: 64, bias: true, accumulate: true),
    Case(rows: 13, inFeatures: 129, outFeatures: 130, bias: true, accumulate: false),
    Case(rows: 200, inFeatures: 300, outFeatures: 200, bias: true, accumulate: true),
    Case(rows: 390, inFeatures: 200, outFeatures: 70, bias: false, accumulate: true),
    Case(rows: 40, inFeatures: 140, outFeatures: 1700, bias: true, accumulate: true),
    Case(rows: 13, inFeatures: 641, outFeatures: 449, bias: true, accumulate: true),
    Case(rows: 193, inFeatures: 641, outFeatures: 70, bias: false, accumulate: true),
  ]

  struct Inputs {
    let x: Tensor, weight: Tensor, halves: [UInt16], bias: Tensor?, initial: Tensor
  }

  /// Inputs whose weight is exactly representable in fp16 (`halves` holds the same values).
  static func inputs(_ c: Case) -> Inputs {
    let x = randomTensor([c.rows, c.inFeatures], seed: 50)
    let halves = randomTensor([c.outFeatures, c.inFeatures], seed: 51, scale: 0.3).scalars.map {
      Float16($0).bitPattern
    }
    let weight = Tensor(shape: [c.outFeatures, c.inFeatures], values: halves.map { Float(Float16(bitPattern: $0)) })
    return Inputs(
      x: x, weight: weight, halves: halves, bias: c.bias ? randomTensor([c.outFeatures], seed: 52) : nil,
      initial: randomTensor([c.rows, c.outFeatures], seed: 53))
  }

  static func apply(
    _ c: Case, _ inputs: Inputs, threads: Int, halves: Bool = false, kernel: Bool = true
  ) -> Tensor {
    let output = clone(inputs.initial)
    let context = ComputeContext(pool: ThreadPool(threadCount: threads))
    context.usesLinearKernel = kernel
    inputs.halves.withUnsafeBytes { stored in
      let weight =
        halves
        ? WeightView(float16: stored.baseAddress!, shape: inputs.weight.shape) : WeightView(inputs.weight)
      context.linear(inputs.x, weight: weight, bias: inputs.bias, into: output, accumulate: c.accumulate)
    }
    return output
  }

  @Test(arguments: cases)
  func againstTheReference(_ c: Case) {
    let inputs = Self.inputs(c)
    let expected = clone(inputs.initial)
    ComputeContext(referenceKernels: true).linear(
      inputs.x, weight: inputs.weight, bias: inputs.bias, into: expected, accumulate: c.accumulate)
    for (kernel, halves) in [(true, false), (true, true), (false, false), (false, true)] {
      let actual = Self.apply(c, inputs, threads: 2, halves: halves, kernel: kernel)
      #expect(
        closeness(actual, expected).nmse <= 1e-10,
        "kernel \(kernel), fp16 \(halves): \(closeness(actual, expected))")
    }
  }

  /// Each output is init + Σ x·w as one chain of fused multiply-adds over k in order, init being
  /// the bias, or output + bias when accumulating: recomputed here the same way, the kernel's
  /// result must match bit for bit, with the weight in fp32 and in fp16 alike.
  @Test(arguments: cases)
  func followsItsOrderOfOperations(_ c: Case) {
    guard ComputeContext.hasLinearKernel else { return }
    let inputs = Self.inputs(c)
    for halves in [false, true] {
      let actual = Self.apply(c, inputs, threads: 2, halves: halves)
      var mismatches = 0
      for r in 0..<c.rows {
        for o in 0..<c.outFeatures {
          let bias = inputs.bias?.pointer[o] ?? 0
          var sum = c.accumulate ? inputs.initial[r, o] + bias : bias
          for k in 0..<c.inFeatures { sum = sum.addingProduct(inputs.x[r, k], inputs.weight[o, k]) }
          if sum.bitPattern != actual[r, o].bitPattern { mismatches += 1 }
        }
      }
      #expect(mismatches == 0, "fp16 \(halves): \(mismatches) of \(actual.count) outputs differ")
    }
  }

  /// One, two or three threads (features or rows split among them), and a row alone, give the
  /// same bits.
  @Test(arguments: cases)
  func resultDoesNotDependOnTheSplit(_ c: Case) {
    let inputs = Self.inputs(c)
    let one = Self.apply(c, inputs, threads: 1, halves: true)
    for threads in [2, 3] {
      #expect(Self.apply(c, inputs, threads: threads, halves: true).scalars == one.scalars, "\(threads) threads")
    }
    guard ComputeContext.hasLinearKernel else { return }
    for row in [0, c.rows / 2, c.rows - 1] {
      let x = Tensor(
        shape: [1, c.inFeatures], values: Array(inputs.x.scalars[(row * c.inFeatures)..<((row + 1) * c.inFeatures)]))
      let initial = Tensor(
        shape: [1, c.outFeatures],
        values: Array(inputs.initial.scalars[(row * c.outFeatures)..<((row + 1) * c.outFeatures)]))
      let single = Case(
        rows: 1, inFeatures: c.inFeatures, outFeatures: c.outFeatures, bias: c.bias, accumulate: c.accumulate)
      let alone = Self.apply(
        single, Inputs(x: x, weight: inputs.weight, halves: inputs.halves, bias: inputs.bias, initial: initial),
        threads: 2, halves: true)
      #expect(alone.scalars == Array(one.scalars[(row * c.outFeatures)..<((row + 1) * c.outFeatures)]), "row \(row)")
    }
  }

  /// A half-float view gives the same bits as its widened Float32 copy on every path: the kernel
  /// widens exactly, and sgemm gets a widened copy.
  @Test(arguments: cases)
  func halvesEqualTheirWidenedValues(_ c: Case) {
    let inputs = Self.inputs(c)
    for kernel in [true, false] {
      #expect(
        Self.apply(c, inputs, threads: 2, halves: true, kernel: kernel).scalars
          == Self.apply(c, inputs, threads: 2, halves: false, kernel: kernel).scalars, "kernel \(kernel)")
    }
  }

  /// The kernel is in use wherever the CPU reports AVX-512F and F16C (read here from /proc/cpuinfo).
  @Test func runsWhereTheCPUHasAVX512() {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
      let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return }
    let names = flags.split(separator: " ")
    #expect(ComputeContext.hasLinearKernel == (names.contains("avx512f") && names.contains("f16c")))
    #expect(ComputeContext().takesFloat16Weights == ComputeContext.hasLinearKernel)
    #expect(!ComputeContext(referenceKernels: true).takesFloat16Weights)
  }
}
