import Foundation
import Testing

@testable import Tensors

/// The AVX-512 direct 3×3 convolution kernel (`tk_conv3x3`, through `conv2d`): against the reference
/// loops, against its documented order of operations bit for bit, and independent of how the work
/// is split (threads, batch).
@Suite struct ConvolutionKernelTests {
  struct Case: CustomStringConvertible, Sendable {
    let batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, padding: Int
    let bias: Bool, accumulate: Bool
    var description: String {
      "\(batch)×\(inChannels)×\(height)×\(width) → \(outChannels), p\(padding)"
        + "\(bias ? " bias" : "")\(accumulate ? " accumulate" : "")"
    }
  }

  /// Channel blocks of 16 and their tail (37 = 16 + 16 + 5), register tiles of 6 output channels
  /// and their tail (13, 20), position tiles of 64 across several rows (width 5, 11) and within
  /// long rows (130), groups of 256 positions, one-row and one-position outputs, both paddings.
  static let cases = [
    Case(batch: 1, inChannels: 3, outChannels: 2, height: 7, width: 6, padding: 0, bias: true, accumulate: false),
    Case(batch: 2, inChannels: 5, outChannels: 7, height: 9, width: 11, padding: 1, bias: true, accumulate: false),
    Case(batch: 1, inChannels: 37, outChannels: 13, height: 20, width: 130, padding: 1, bias: true, accumulate: true),
    Case(batch: 2, inChannels: 17, outChannels: 6, height: 5, width: 5, padding: 1, bias: false, accumulate: true),
    Case(batch: 1, inChannels: 4, outChannels: 20, height: 1, width: 70, padding: 1, bias: true, accumulate: false),
    Case(batch: 1, inChannels: 2, outChannels: 3, height: 3, width: 3, padding: 0, bias: false, accumulate: false),
    Case(batch: 1, inChannels: 16, outChannels: 1, height: 66, width: 66, padding: 0, bias: true, accumulate: true),
  ]

  struct Inputs {
    let x: Tensor, weight: Tensor, bias: Tensor?, initial: Tensor
  }

  static func inputs(_ c: Case) -> Inputs {
    let x = randomTensor([c.batch, c.inChannels, c.height, c.width], seed: 40)
    let weight = randomTensor([c.outChannels, c.inChannels, 3, 3], seed: 41, scale: 0.3)
    let shape = ComputeContext.conv2dOutputShape(input: x.shape, weight: weight.shape, padding: c.padding)
    return Inputs(
      x: x, weight: weight, bias: c.bias ? randomTensor([c.outChannels], seed: 42) : nil,
      initial: randomTensor(shape, seed: 43))
  }

  static func convolve(_ c: Case, _ inputs: Inputs, threads: Int, kernel: Bool = true) -> Tensor {
    let context = ComputeContext(pool: ThreadPool(threadCount: threads))
    context.usesConvolutionKernel = kernel
    context.usesWinogradConvolution = false  // the direct kernel (WinogradTests has the other form)
    return convolve(c, inputs, in: context)
  }

  /// The case's convolution in `context`, into a copy of its initial output.
  static func convolve(_ c: Case, _ inputs: Inputs, in context: ComputeContext) -> Tensor {
    let output = clone(inputs.initial)
    context.conv2d(
      inputs.x, weight: inputs.weight, bias: inputs.bias, padding: c.padding, into: output, accumulate: c.accumulate)
    return output
  }

  @Test(arguments: cases)
  func againstTheReference(_ c: Case) {
    let inputs = Self.inputs(c)
    let expected = clone(inputs.initial)
    ComputeContext(referenceKernels: true).conv2d(
      inputs.x, weight: inputs.weight, bias: inputs.bias, padding: c.padding, into: expected,
      accumulate: c.accumulate)
    for kernel in [true, false] {
      let actual = Self.convolve(c, inputs, threads: 2, kernel: kernel)
      #expect(closeness(actual, expected).nmse <= 1e-10, "kernel \(kernel): \(closeness(actual, expected))")
    }
  }

  /// Each output is init + Σ w·x as one chain of fused multiply-adds over (c, ky, kx) in order,
  /// init being the bias, or output + bias when accumulating: recomputed here the same way, the
  /// kernel's result must match bit for bit.
  @Test(arguments: cases)
  func followsItsOrderOfOperations(_ c: Case) {
    guard ComputeContext.hasConvolutionKernel else { return }
    let inputs = Self.inputs(c)
    let actual = Self.convolve(c, inputs, threads: 2)
    let (outHeight, outWidth) = (actual.shape[2], actual.shape[3])
    var mismatches = 0
    for n in 0..<c.batch {
      for o in 0..<c.outChannels {
        for y in 0..<outHeight {
          for x in 0..<outWidth {
            let bias = inputs.bias?.pointer[o] ?? 0
            var sum = c.accumulate ? inputs.initial[n, o, y, x] + bias : bias
            for channel in 0..<c.inChannels {
              for ky in 0..<3 {
                for kx in 0..<3 {
                  let (row, column) = (y + ky - c.padding, x + kx - c.padding)
                  let value =
                    row >= 0 && row < c.height && column >= 0 && column < c.width
                    ? inputs.x[n, channel, row, column] : 0
                  sum = sum.addingProduct(inputs.weight[o, channel, ky, kx], value)
                }
              }
            }
            if sum.bitPattern != actual[n, o, y, x].bitPattern { mismatches += 1 }
          }
        }
      }
    }
    #expect(mismatches == 0, "\(mismatches) of \(actual.count) outputs differ")
  }

  /// One, two or three threads (positions or output channels split among them), and a sample
  /// alone or in its batch, give the same bits.
  @Test(arguments: cases)
  func resultDoesNotDependOnTheSplit(_ c: Case) {
    let inputs = Self.inputs(c)
    let one = Self.convolve(c, inputs, threads: 1)
    for threads in [2, 3] {
      #expect(Self.convolve(c, inputs, threads: threads).scalars == one.scalars, "\(threads) threads")
    }
    let context = ComputeContext(pool: ThreadPool(threadCount: 2))
    context.usesWinogradConvolution = false
    Self.expectSamplesAlone(c, inputs, batched: one, in: context)
  }

  /// Each sample of a batched case, convolved alone in `context`, gives its part of `batched` bit
  /// for bit.
  static func expectSamplesAlone(_ c: Case, _ inputs: Inputs, batched: Tensor, in context: ComputeContext) {
    guard c.batch > 1 else { return }
    let sampleIn = c.inChannels * c.height * c.width, sampleOut = batched.count / c.batch
    for sample in 0..<c.batch {
      let x = Tensor(
        shape: [1, c.inChannels, c.height, c.width],
        values: Array(inputs.x.scalars[(sample * sampleIn)..<((sample + 1) * sampleIn)]))
      let initial = Tensor(
        shape: Shape(1, c.outChannels, batched.shape[2], batched.shape[3]),
        values: Array(inputs.initial.scalars[(sample * sampleOut)..<((sample + 1) * sampleOut)]))
      let alone = convolve(
        Case(
          batch: 1, inChannels: c.inChannels, outChannels: c.outChannels, height: c.height, width: c.width,
          padding: c.padding, bias: c.bias, accumulate: c.accumulate),
        Inputs(x: x, weight: inputs.weight, bias: inputs.bias, initial: initial), in: context)
      #expect(
        alone.scalars == Array(batched.scalars[(sample * sampleOut)..<((sample + 1) * sampleOut)]), "sample \(sample)")
    }
  }

  /// A band of rows convolved straight into a taller plane (`convolveBand`) gives the bits of
  /// `conv2d` into a band buffer copied there, with and without accumulating, and leaves every other
  /// row alone; where the kernel does not run it does nothing and says so.
  @Test(arguments: [false, true])
  func bandStraightIntoThePlane(accumulate: Bool) {
    let (channels, outChannels, height, width) = (19, 13, 11, 70)
    let (firstRow, rows) = (3, 5)
    let band = randomTensor([1, channels, rows + 2, width + 2], seed: 50)
    let weight = randomTensor([outChannels, channels, 3, 3], seed: 51, scale: 0.3)
    let bias = randomTensor([outChannels], seed: 52)
    let initial = randomTensor([1, outChannels, height, width], seed: 53)
    let context = ComputeContext(pool: ThreadPool(threadCount: 2))
    // The way without it: a band buffer holding the plane's rows, conv2d, then the rows copied back.
    let expected = clone(initial)
    let buffer = Tensor(zeros: [1, outChannels, rows, width])
    for o in 0..<outChannels {
      for y in 0..<rows { for x in 0..<width { buffer[0, o, y, x] = initial[0, o, firstRow + y, x] } }
    }
    context.conv2d(band, weight: weight, bias: bias, padding: 0, into: buffer, accumulate: accumulate)
    for o in 0..<outChannels {
      for y in 0..<rows { for x in 0..<width { expected[0, o, firstRow + y, x] = buffer[0, o, y, x] } }
    }
    let actual = clone(initial)
    let ran = context.convolveBand(
      band, weight: WeightView(weight), bias: bias, intoRows: firstRow, of: actual, accumulate: accumulate)
    #expect(ran == ComputeContext.hasConvolutionKernel)
    #expect(actual.scalars == (ran ? expected : initial).scalars)
    let reference = ComputeContext(referenceKernels: true)
    let untouched = clone(initial)
    #expect(
      !reference.convolveBand(
        band, weight: WeightView(weight), bias: bias, intoRows: firstRow, of: untouched, accumulate: accumulate))
    #expect(untouched.scalars == initial.scalars)
  }

  /// Half-float weights (`WeightView(float16:)`), widened while they are packed, give the bits
  /// of the same values widened first, in `conv2d` and in `convolveBand`: whole tiles of six
  /// channels and a partial one, reductions with and without a tail past a multiple of 16.
  @Test(arguments: [(inChannels: 5, outChannels: 13), (inChannels: 37, outChannels: 12)])
  func halfFloatWeightsAreWidenedWhilePacked(inChannels: Int, outChannels: Int) {
    let widened = randomTensor([outChannels, inChannels, 3, 3], seed: 60, scale: 0.3)
    let halves = widened.scalars.map { Float16($0).bitPattern }
    for index in 0..<widened.count { widened.pointer[index] = Float(Float16(bitPattern: halves[index])) }
    let x = randomTensor([2, inChannels, 9, 21], seed: 61)
    let bias = randomTensor([outChannels], seed: 62)
    let context = ComputeContext(pool: ThreadPool(threadCount: 2))
    #expect(
      context.takesFloat16ConvolutionWeights(weightShape: widened.shape, stride: 1)
        == ComputeContext.hasConvolutionKernel)
    halves.withUnsafeBytes { stored in
      let half = WeightView(float16: stored.baseAddress!, shape: widened.shape)
      let expected = Tensor(zeros: [2, outChannels, 9, 21]), actual = Tensor(zeros: expected.shape)
      context.conv2d(x, weight: WeightView(widened), bias: bias, padding: 1, into: expected)
      context.conv2d(x, weight: half, bias: bias, padding: 1, into: actual)
      #expect(actual.scalars.map(\.bitPattern) == expected.scalars.map(\.bitPattern), "conv2d")
      let band = randomTensor([1, inChannels, 6, 23], seed: 63)
      let (bandExpected, bandActual) = (
        Tensor(zeros: [1, outChannels, 7, 21]), Tensor(zeros: [1, outChannels, 7, 21])
      )
      if context.convolveBand(
        band, weight: WeightView(widened), bias: bias, intoRows: 2, of: bandExpected, accumulate: false)
      {
        #expect(context.convolveBand(band, weight: half, bias: bias, intoRows: 2, of: bandActual, accumulate: false))
        #expect(bandActual.scalars.map(\.bitPattern) == bandExpected.scalars.map(\.bitPattern), "convolveBand")
      }
    }
  }

  /// The kernel is in use wherever the CPU reports AVX-512F (read here from /proc/cpuinfo).
  @Test func runsWhereTheCPUHasAVX512() {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
      let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return }
    #expect(ComputeContext.hasConvolutionKernel == flags.split(separator: " ").contains("avx512f"))
  }
}
