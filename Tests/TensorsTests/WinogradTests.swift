import Foundation
import Testing

@testable import Tensors

/// Winograd F(4×4, 3×3) for 3×3 convolutions (`winogradConvolution3x3`): against a Float64 sum
/// within a bound of the direct kernel's own error, and independent of threads, batch, chunks
/// and bands bit for bit; which planes take it.
@Suite struct WinogradTests {
  typealias Case = ConvolutionKernelTests.Case
  typealias Inputs = ConvolutionKernelTests.Inputs

  /// Channel vectors of 16 and their tails (37, 13), 64-channel panels and blocks with a tail (70,
  /// 66), partial tiles at the right and bottom (outputs 9 × 67, 13 × 33), both paddings, one-row
  /// planes; U whole in memory (72 tiles and more) and a panel at a time (the rest).
  static let cases = [
    Case(batch: 1, inChannels: 37, outChannels: 13, height: 11, width: 69, padding: 0, bias: true, accumulate: false),
    Case(batch: 2, inChannels: 16, outChannels: 70, height: 13, width: 33, padding: 1, bias: false, accumulate: true),
    Case(batch: 2, inChannels: 5, outChannels: 3, height: 1, width: 20, padding: 1, bias: true, accumulate: true),
    Case(batch: 1, inChannels: 64, outChannels: 32, height: 32, width: 32, padding: 1, bias: true, accumulate: false),
    Case(batch: 2, inChannels: 70, outChannels: 66, height: 8, width: 10, padding: 1, bias: true, accumulate: false),
  ]

  /// A context that takes Winograd's form for every plane (`winograd`), or never.
  static func context(threads: Int = 2, winograd: Bool = true) -> ComputeContext {
    let context = ComputeContext(pool: ThreadPool(threadCount: threads))
    context.usesWinogradConvolution = winograd
    context.winogradMinimumTiles = 1
    return context
  }

  static func convolve(_ c: Case, _ inputs: Inputs, _ context: ComputeContext) -> Tensor {
    ConvolutionKernelTests.convolve(c, inputs, in: context)
  }

  /// The convolution summed in Float64.
  static func exact(_ c: Case, _ inputs: Inputs) -> [Double] {
    let shape = inputs.initial.shape
    var result = [Double](repeating: 0, count: shape.count)
    var index = 0
    for n in 0..<c.batch {
      for o in 0..<c.outChannels {
        for y in 0..<shape[2] {
          for x in 0..<shape[3] {
            var sum = Double(inputs.bias?.pointer[o] ?? 0)
            for channel in 0..<c.inChannels {
              for ky in 0..<3 {
                for kx in 0..<3 {
                  let (row, column) = (y + ky - c.padding, x + kx - c.padding)
                  guard row >= 0 && row < c.height && column >= 0 && column < c.width else { continue }
                  sum += Double(inputs.weight[o, channel, ky, kx]) * Double(inputs.x[n, channel, row, column])
                }
              }
            }
            result[index] = sum + (c.accumulate ? Double(inputs.initial[n, o, y, x]) : 0)
            index += 1
          }
        }
      }
    }
    return result
  }

  static func squaredError(_ actual: Tensor, _ exact: [Double]) -> (error: Double, energy: Double) {
    var error = 0.0, energy = 0.0
    for (value, truth) in zip(actual.scalars, exact) {
      error += (Double(value) - truth) * (Double(value) - truth)
      energy += truth * truth
    }
    return (error, energy)
  }

  /// Against a Float64 sum: an NMSE within 50 times the direct kernel's on the same inputs, and
  /// below 1e-11 (fp32 rounding, magnified a few times by the transforms, not a wrong tile).
  @Test(arguments: cases)
  func closeToTheExactSum(_ c: Case) {
    guard ComputeContext.hasWinogradKernel else { return }
    let inputs = ConvolutionKernelTests.inputs(c), exact = Self.exact(c, inputs)
    let winograd = Self.squaredError(Self.convolve(c, inputs, Self.context()), exact)
    let direct = Self.squaredError(Self.convolve(c, inputs, Self.context(winograd: false)), exact)
    let (nmse, directNMSE) = (winograd.error / winograd.energy, direct.error / direct.energy)
    #expect(nmse < 1e-11 && nmse <= 50 * directNMSE, "Winograd NMSE \(nmse), direct \(directNMSE)")
  }

  /// One, two or three threads, a sample alone or in its batch, transformed buffers small enough
  /// to take one tile row and one 64-channel panel per chunk, and U made whole or a panel at a
  /// time (`winogradFusedTiles`) give the same bits.
  @Test(arguments: cases)
  func resultDoesNotDependOnTheSplit(_ c: Case) {
    guard ComputeContext.hasWinogradKernel else { return }
    let inputs = ConvolutionKernelTests.inputs(c)
    let one = Self.convolve(c, inputs, Self.context(threads: 1))
    for threads in [2, 3] {
      #expect(Self.convolve(c, inputs, Self.context(threads: threads)).scalars == one.scalars, "\(threads) threads")
    }
    let chunked = Self.context()
    chunked.winogradBudget = 1
    chunked.winogradWeightBudget = 1
    #expect(Self.convolve(c, inputs, chunked).scalars == one.scalars, "chunks")
    for fusedTiles in [0, Int.max] {
      let context = Self.context()
      context.winogradFusedTiles = fusedTiles
      #expect(Self.convolve(c, inputs, context).scalars == one.scalars, "fused up to \(fusedTiles) tiles")
    }
    ConvolutionKernelTests.expectSamplesAlone(c, inputs, batched: one, in: Self.context())
  }

  /// A plane convolved in bands of whole tile rows (`tileAlignedBandRows`, the last band shorter)
  /// through `convolveBand`, with and without accumulating, gives the bits of the whole plane:
  /// the choice rests on the plane, and the bands' tiles are the plane's.
  @Test(arguments: [false, true])
  func bandsOfWholeTileRowsEqualTheWholePlane(accumulate: Bool) {
    guard ComputeContext.hasWinogradKernel else { return }
    let (channels, outChannels, height, width) = (19, 21, 30, 35)
    let x = randomTensor([1, channels, height, width], seed: 80)
    let weight = randomTensor([outChannels, channels, 3, 3], seed: 81, scale: 0.3)
    let bias = randomTensor([outChannels], seed: 82)
    let initial = randomTensor([1, outChannels, height, width], seed: 83)
    let context = ComputeContext(pool: ThreadPool(threadCount: 2))
    context.winogradMinimumTiles = 60  // this 30 × 35 plane has 8 × 9 tiles; a band has fewer
    context.profile = OperationProfile()
    let whole = clone(initial)
    context.conv2d(x, weight: weight, bias: bias, padding: 1, into: whole, accumulate: accumulate)
    let bandRows = ComputeContext.tileAlignedBandRows(10)
    #expect(bandRows == 8)
    let banded = clone(initial)
    for first in stride(from: 0, to: height, by: bandRows) {
      let rows = Swift.min(bandRows, height - first)
      // The band's input rows first − 1 ... first + rows with a zero border.
      let band = Tensor(zeros: [1, channels, rows + 2, width + 2])
      for c in 0..<channels {
        for y in 0..<(rows + 2) where first + y - 1 >= 0 && first + y - 1 < height {
          for column in 0..<width { band[0, c, y, column + 1] = x[0, c, first + y - 1, column] }
        }
      }
      #expect(
        context.convolveBand(
          band, weight: WeightView(weight), bias: bias, intoRows: first, of: banded, accumulate: accumulate))
    }
    #expect(banded.scalars.map(\.bitPattern) == whole.scalars.map(\.bitPattern))
    #expect(context.profile?.kinds[.winograd]?.calls == 1 + (height + bandRows - 1) / bandRows)
    #expect(context.profile?.kinds[.convolution3x3] == nil)
  }

  /// Half-float weights, widened while transformed, give the bits of the same values widened first.
  @Test func halfFloatWeightsAreWidenedWhileTransformed() {
    guard ComputeContext.hasWinogradKernel else { return }
    let (inChannels, outChannels) = (37, 13)
    let widened = randomTensor([outChannels, inChannels, 3, 3], seed: 90, scale: 0.3)
    let halves = widened.scalars.map { Float16($0).bitPattern }
    for index in 0..<widened.count { widened.pointer[index] = Float(Float16(bitPattern: halves[index])) }
    let x = randomTensor([2, inChannels, 17, 21], seed: 91)
    let bias = randomTensor([outChannels], seed: 92)
    let context = Self.context()
    halves.withUnsafeBytes { stored in
      let half = WeightView(float16: stored.baseAddress!, shape: widened.shape)
      let expected = Tensor(zeros: [2, outChannels, 17, 21]), actual = Tensor(zeros: expected.shape)
      context.conv2d(x, weight: WeightView(widened), bias: bias, padding: 1, into: expected)
      context.conv2d(x, weight: half, bias: bias, padding: 1, into: actual)
      #expect(actual.scalars.map(\.bitPattern) == expected.scalars.map(\.bitPattern))
    }
  }

  /// By default a 16² output plane (16 tiles) takes Winograd's form and a 12² one (9) the direct
  /// kernel, whatever the batch; `usesWinogradConvolution = false` keeps every plane direct.
  @Test func planesOf16TilesOrMoreTakeIt() {
    guard ComputeContext.hasWinogradKernel else { return }
    let weight = randomTensor([8, 4, 3, 3], seed: 95)
    func kind(size: Int, batch: Int, enabled: Bool = true) -> OperationProfile.Kind? {
      let context = ComputeContext(pool: ThreadPool(threadCount: 2))
      context.usesWinogradConvolution = enabled
      context.profile = OperationProfile()
      let x = randomTensor([batch, 4, size, size], seed: 96)
      context.conv2d(x, weight: weight, padding: 1, into: Tensor(zeros: [batch, 8, size, size]))
      return context.profile?.kinds.keys.first
    }
    #expect(kind(size: 16, batch: 1) == .winograd)
    #expect(kind(size: 12, batch: 4) == .convolution3x3)
    #expect(kind(size: 16, batch: 1, enabled: false) == .convolution3x3)
    #expect(ComputeContext.tileAlignedBandRows(3) == 3 && ComputeContext.tileAlignedBandRows(13) == 12)
  }
}
