import Foundation
import Tensors

/// A linear layer `y = x·Wᵀ + b` with its weight `[out, in]` widened to Float32.
struct LinearLayer {
  let weight: Tensor
  let bias: Tensor?
  var inFeatures: Int { weight.shape[1] }
  var outFeatures: Int { weight.shape[0] }

  /// Loads `<key>.weight` (and `<key>.bias` when present). A 1×1 convolution weight
  /// `[out, in, 1, 1]` is accepted as the same linear map (SD 1.x `proj_in`/`proj_out`).
  init(_ weights: ModelWeights, _ key: String, bias hasBias: Bool? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    guard shape.count == 2 || (shape.count == 4 && shape[2] == 1 && shape[3] == 1) else {
      throw ModelError.badShape(file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: "[out, in] (a linear layer)")
    }
    weight = try weights.tensor(key + ".weight", shape: shape).reshaped([shape[0], shape[1]])
    if hasBias == false {
      bias = nil
    } else if hasBias == true {
      bias = try weights.tensor(key + ".bias", shape: [shape[0]])
    } else {
      bias = try weights.optionalTensor(key + ".bias", shape: [shape[0]])
    }
  }

  /// `output = x·Wᵀ + b`, or `output += x·Wᵀ + b` when `accumulate`.
  func callAsFunction(_ context: ComputeContext, _ x: Tensor, into output: Tensor, accumulate: Bool = false) {
    context.linear(x, weight: weight, bias: bias, into: output, accumulate: accumulate)
  }
}

/// A 2-D convolution with its weight `[out, in, kh, kw]` widened to Float32.
struct ConvolutionLayer {
  let weight: Tensor
  let bias: Tensor?
  let stride: Int
  let padding: Int
  var inChannels: Int { weight.shape[1] }
  var outChannels: Int { weight.shape[0] }

  init(_ weights: ModelWeights, _ key: String, stride: Int = 1, padding: Int? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    guard shape.count == 4, shape[2] == shape[3], shape[2] % 2 == 1 else {
      throw ModelError.badShape(file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: "[out, in, k, k] with odd k (a convolution)")
    }
    weight = try weights.tensor(key + ".weight", shape: shape)
    bias = try weights.optionalTensor(key + ".bias", shape: [shape[0]])
    self.stride = stride
    self.padding = padding ?? shape[2] / 2
  }

  func outputShape(for input: Shape) -> Shape {
    ComputeContext.conv2dOutputShape(input: input, weight: weight.shape, stride: stride, padding: padding)
  }

  func callAsFunction(_ context: ComputeContext, _ x: Tensor, into output: Tensor, accumulate: Bool = false) {
    context.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, into: output, accumulate: accumulate)
  }
}

/// Affine parameters of a GroupNorm or LayerNorm, with its ε.
struct NormLayer {
  let weight: Tensor
  let bias: Tensor
  let epsilon: Float
  var channels: Int { weight.count }

  init(_ weights: ModelWeights, _ key: String, epsilon: Float, channels: Int? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    let count = channels ?? (shape.count == 1 ? shape[0] : -1)
    guard count > 0, shape == [count] else {
      throw ModelError.badShape(file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: channels.map { "[\($0)]" } ?? "[C] (a normalisation weight)")
    }
    weight = try weights.tensor(key + ".weight", shape: [count])
    bias = try weights.tensor(key + ".bias", shape: [count])
    self.epsilon = epsilon
  }

  func groupNorm(_ context: ComputeContext, _ x: Tensor, groups: Int = 32, silu: Bool = false, into output: Tensor) {
    context.groupNorm(x, groups: groups, epsilon: epsilon, weight: weight, bias: bias,
      activation: silu ? .silu : .none, into: output)
  }

  func layerNorm(_ context: ComputeContext, _ x: Tensor, into output: Tensor) {
    context.layerNorm(x, epsilon: epsilon, weight: weight, bias: bias, into: output)
  }
}

/// The sinusoidal embedding of sgm's `timestep_embedding` (also used for SDXL's size
/// conditioning): for a `dimension`-wide embedding with half = dimension/2,
/// freqs[i] = exp(−ln(10000)·i/half) and the result is [cos(t·freqs) ‖ sin(t·freqs)], in Float32
/// like PyTorch.
public func sinusoidalEmbedding(_ values: [Float], dimension: Int, maxPeriod: Float = 10000) -> Tensor {
  let half = dimension / 2
  let result = Tensor(zeros: [values.count, dimension])
  let logPeriod = Float(Foundation.log(Double(maxPeriod)))
  var frequencies = [Float](repeating: 0, count: half)
  for index in 0..<half {
    frequencies[index] = Foundation.exp(-logPeriod * Float(index) / Float(half))
  }
  for (row, value) in values.enumerated() {
    let line = result.pointer + row * dimension
    for index in 0..<half {
      let argument = value * frequencies[index]
      line[index] = Foundation.cos(argument)
      line[half + index] = Foundation.sin(argument)
    }
  }
  return result
}
