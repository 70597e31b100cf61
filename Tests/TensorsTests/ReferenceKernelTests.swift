import Foundation
import Tensors
import Testing

/// The reference loops themselves, on cases small enough to work out by hand.
@Suite struct ReferenceKernelTests {
  @Test func gemmByHand() {
    let a = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
    let b = Tensor(shape: [3, 2], values: [7, 8, 9, 10, 11, 12])
    let c = Tensor(shape: [2, 2], values: [1, 1, 1, 1])
    reference.matmul(a, b, alpha: 2, beta: 10, into: c)
    // [[58, 64], [139, 154]]·2 + 10
    #expect(c.scalars == [126, 138, 288, 318])
    let cT = Tensor(zeros: [3, 3])
    reference.matmul(a, a, transposeA: true, into: cT)
    #expect(cT.scalars == [17, 22, 27, 22, 29, 36, 27, 36, 45])
  }

  @Test func linearByHand() {
    let x = Tensor(shape: [1, 2], values: [1, 2])
    let weight = Tensor(shape: [3, 2], values: [1, 0, 0, 1, 1, 1])
    let bias = Tensor(shape: [3], values: [10, 20, 30])
    let y = Tensor(shape: [1, 3], values: [100, 100, 100])
    reference.linear(x, weight: weight, bias: bias, into: y)
    #expect(y.scalars == [11, 22, 33])
    reference.linear(x, weight: weight, bias: bias, into: y, accumulate: true)
    #expect(y.scalars == [22, 44, 66])
  }

  @Test func convolutionByHand() {
    // 1×1×3×3 input 1…9, a 2×2 kernel of ones, padding 1, stride 2: sums of corner windows.
    let x = Tensor(shape: [1, 1, 3, 3], values: (1...9).map(Float.init))
    let weight = Tensor(shape: [1, 1, 2, 2], repeating: 1)
    let y = Tensor(zeros: ComputeContext.conv2dOutputShape(input: x.shape, weight: weight.shape, stride: 2, padding: 1))
    #expect(y.shape == [1, 1, 2, 2])
    reference.conv2d(x, weight: weight, bias: Tensor(shape: [1], values: [0.5]), stride: 2, padding: 1, into: y)
    #expect(y.scalars == [1.5, 5.5, 11.5, 28.5])
  }

  @Test func normalisationByHand() {
    // One group of [1, 3]: mean 2, variance 1 → ±1 (ε = 0), then ·2 + 1.
    let x = Tensor(shape: [1, 2, 1], values: [1, 3])
    let y = Tensor(zeros: x.shape)
    reference.groupNorm(
      x, groups: 1, epsilon: 0, weight: Tensor(shape: [2], values: [2, 2]),
      bias: Tensor(shape: [2], values: [1, 1]), into: y)
    #expect(y.scalars == [-1, 3])
    reference.layerNorm(x.reshaped([1, 2]), epsilon: 0, weight: nil, bias: nil, into: y.reshaped([1, 2]))
    #expect(y.scalars == [-1, 1])
  }

  @Test func activationsByHand() {
    let x = Tensor(shape: [3], values: [0, 1, -1])
    let y = Tensor(zeros: [3])
    reference.gelu(x, into: y)
    #expect(abs(y[1] - 0.8413447) < 1e-6 && abs(y[2] + 0.1586553) < 1e-6 && y[0] == 0)
    reference.silu(x, into: y)
    #expect(abs(y[1] - 0.7310586) < 1e-6 && abs(y[2] + 0.2689414) < 1e-6)
    let scores = Tensor(shape: [1, 2], values: [0, Float(Foundation.log(2.0))])
    reference.softmax(scores, into: scores)
    #expect(abs(scores[0, 0] - 1 / 3) < 1e-7 && abs(scores[0, 1] - 2 / 3) < 1e-7)
    let pair = Tensor(shape: [1, 2], values: [3, 1])
    let gated = Tensor(zeros: [1, 1])
    reference.geglu(pair, into: gated)
    #expect(abs(gated[0, 0] - 3 * 0.8413447) < 1e-6)
  }

  @Test func attentionByHand() {
    // Two keys with equal scores average their values; with a causal mask row 0 sees key 0 only.
    let query = Tensor(shape: [1, 2, 2], values: [0, 0, 0, 0])
    let key = Tensor(shape: [1, 2, 2], values: [1, 2, 3, 4])
    let value = Tensor(shape: [1, 2, 2], values: [10, 20, 30, 40])
    let output = Tensor(zeros: [1, 2, 2])
    reference.attention(query: query, key: key, value: value, headCount: 1, into: output)
    #expect(output.scalars == [20, 30, 20, 30])
    reference.attention(query: query, key: key, value: value, headCount: 1, causal: true, into: output)
    #expect(output.scalars == [10, 20, 20, 30])
  }

  @Test func layoutByHand() {
    let x = Tensor(shape: [1, 1, 1, 2], values: [1, 2])
    let up = Tensor(zeros: [1, 1, 2, 4])
    reference.upsampleNearest2x(x, into: up)
    #expect(up.scalars == [1, 1, 2, 2, 1, 1, 2, 2])
    let a = Tensor(shape: [2, 1, 1], values: [1, 2]), b = Tensor(shape: [2, 2, 1], values: [3, 4, 5, 6])
    let joined = Tensor(zeros: [2, 3, 1])
    reference.concatenate(a, b, axis: 1, into: joined)
    #expect(joined.scalars == [1, 3, 4, 2, 5, 6])
    let matrix = Tensor(shape: [1, 2, 3], values: [1, 2, 3, 4, 5, 6]), flipped = Tensor(zeros: [1, 3, 2])
    reference.transposeLastTwo(matrix, into: flipped)
    #expect(flipped.scalars == [1, 4, 2, 5, 3, 6])
  }
}
