import Foundation
import Tensors
import Testing

/// `ComputeContext.profile`: every linear layer, convolution and attention call is counted once
/// under its kind and shape, with the work the context counted for it, and nothing is recorded
/// without a profile.
@Suite struct OperationProfileTests {
  @Test func callsAreCountedByKindAndShapeWithTheirWork() throws {
    let context = fast
    let profile = OperationProfile()
    context.profile = profile
    let x = randomTensor([2, 5, 8], seed: 1), weight = randomTensor([3, 8], seed: 2)
    let y = Tensor(zeros: [2, 5, 3])
    context.linear(x, weight: weight, into: y)
    context.linear(x, weight: weight, into: y, accumulate: true)
    let image = randomTensor([1, 4, 6, 6], seed: 3)
    let conv3x3 = randomTensor([5, 4, 3, 3], seed: 4), conv1x1 = randomTensor([5, 4, 1, 1], seed: 5)
    let out = Tensor(zeros: [1, 5, 6, 6])
    context.conv2d(image, weight: conv3x3, padding: 1, into: out)
    context.conv2d(image, weight: conv1x1, into: out)
    let q = randomTensor([1, 7, 16], seed: 6), kv = randomTensor([1, 9, 16], seed: 7)
    let attended = Tensor(zeros: [1, 7, 16])
    let before = context.gemmOperations
    context.attention(query: q, key: kv, value: kv, headCount: 2, into: attended)
    let attentionWork = context.gemmOperations - before

    let linear = try #require(profile.kinds[.linear])
    #expect(linear.calls == 2)
    #expect(linear.operations == 2 * (2 * 10 * 8 * 3))
    #expect(profile.shapes[.linear]?["10×8→3"]?.calls == 2)
    // The 3×3 convolution goes to the kernel where the CPU has it, else to im2col + sgemm.
    let threeByThree: OperationProfile.Kind =
      ComputeContext.hasConvolutionKernel ? .convolution3x3 : .convolution
    let convolution = try #require(profile.shapes[threeByThree]?["1×4×6×6→5"])
    #expect(convolution.calls == 1 && convolution.operations == Double(2 * 5 * 36 * 36))
    #expect(profile.shapes[.convolution]?["1×4×6×6→5"]?.calls == 1)
    let attention = try #require(profile.shapes[.attention]?["2×7×9"])
    #expect(attention.calls == 1 && attention.operations == attentionWork && attentionWork > 0)
    let counted = OperationProfile.Kind.allCases.reduce(0) { $0 + (profile.kinds[$1]?.calls ?? 0) }
    #expect(counted == 5)
    #expect(profile.totalSeconds > 0)
    for entry in profile.kinds.values { #expect(entry.seconds >= 0) }

    context.profile = nil
    context.linear(x, weight: weight, into: y)
    #expect(profile.kinds[.linear]?.calls == 2)
  }
}
