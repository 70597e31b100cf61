import Foundation

/// The naive forms of every kernel: direct loops from the defining formulas, single-threaded,
/// accumulating in Double. `ComputeContext(referenceKernels: true)` runs these instead of the
/// optimised kernels, and the tests check the optimised kernels against them.
public enum ReferenceKernels {
  /// C = α·op(A)·op(B) + β·C by the triple loop (row-major, strides as in `ComputeContext.gemm`).
  public static func gemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    for row in 0..<m {
      for column in 0..<n {
        var sum = 0.0
        for inner in 0..<k {
          let left = transposeA ? a[inner * lda + row] : a[row * lda + inner]
          let right = transposeB ? b[column * ldb + inner] : b[inner * ldb + column]
          sum += Double(left) * Double(right)
        }
        let previous = beta == 0 ? 0 : Double(beta) * Double(c[row * ldc + column])
        c[row * ldc + column] = Float(Double(alpha) * sum + previous)
      }
    }
  }

  /// Direct convolution: out[n, o, y, x] = b[o] + Σ_{c, ky, kx} w[o, c, ky, kx] ·
  /// in[n, c, y·s − p + ky, x·s − p + kx] (zero outside the image).
  public static func conv2d(
    _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, into output: Tensor,
    accumulate: Bool
  ) {
    let (batch, inChannels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (outChannels, kernelHeight, kernelWidth) = (weight.shape[0], weight.shape[2], weight.shape[3])
    let (outHeight, outWidth) = (output.shape[2], output.shape[3])
    for sample in 0..<batch {
      for outChannel in 0..<outChannels {
        for outRow in 0..<outHeight {
          for outColumn in 0..<outWidth {
            var sum = Double(bias?.pointer[outChannel] ?? 0)
            for inChannel in 0..<inChannels {
              for ky in 0..<kernelHeight {
                let row = outRow * stride - padding + ky
                if row < 0 || row >= height { continue }
                for kx in 0..<kernelWidth {
                  let column = outColumn * stride - padding + kx
                  if column < 0 || column >= width { continue }
                  sum +=
                    Double(x[sample, inChannel, row, column])
                    * Double(weight[outChannel, inChannel, ky, kx])
                }
              }
            }
            let previous = accumulate ? Double(output[sample, outChannel, outRow, outColumn]) : 0
            output[sample, outChannel, outRow, outColumn] = Float(previous + sum)
          }
        }
      }
    }
  }

  /// Mean and biased variance in Double (two passes).
  public static func meanAndVariance(_ values: UnsafePointer<Float>, count: Int) -> (Double, Double) {
    guard count > 0 else { return (0, 0) }
    var sum = 0.0
    for index in 0..<count { sum += Double(values[index]) }
    let mean = sum / Double(count)
    var squares = 0.0
    for index in 0..<count {
      let difference = Double(values[index]) - mean
      squares += difference * difference
    }
    return (mean, squares / Double(count))
  }

  /// x·σ(x) with libm's `exp`.
  public static func silu(_ x: Float) -> Float { Float(Double(x) / (1 + Foundation.exp(-Double(x)))) }

  /// ½x(1 + erf(x/√2)) with libm's `erf`.
  public static func gelu(_ x: Float) -> Float {
    Float(0.5 * Double(x) * (1 + Foundation.erf(Double(x) / 2.0.squareRoot())))
  }

  /// x·σ(1.702x) with libm's `exp`.
  public static func quickGELU(_ x: Float) -> Float {
    Float(Double(x) / (1 + Foundation.exp(-1.702 * Double(x))))
  }

  /// Softmax of `count` values in Double with libm's `exp`, max-subtracted.
  public static func softmaxRow(
    _ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<Float>, count: Int
  ) {
    guard count > 0 else { return }
    var maximum = -Double.infinity
    for index in 0..<count { maximum = Swift.max(maximum, Double(source[index])) }
    var total = 0.0
    for index in 0..<count { total += Foundation.exp(Double(source[index]) - maximum) }
    for index in 0..<count {
      destination[index] = Float(Foundation.exp(Double(source[index]) - maximum) / total)
    }
  }

  /// Nearest ×2 upsampling, element by element: out[n, c, y, x] = in[n, c, y/2, x/2].
  public static func upsampleNearest2x(_ x: Tensor, into output: Tensor) {
    for sample in 0..<output.shape[0] {
      for channel in 0..<output.shape[1] {
        for row in 0..<output.shape[2] {
          for column in 0..<output.shape[3] {
            output[sample, channel, row, column] = x[sample, channel, row / 2, column / 2]
          }
        }
      }
    }
  }

  /// Attention with the whole score matrix per head, by loops: out[n, i, h·d + j] =
  /// Σ_t softmax_t(q_i·k_t/√d) · v[t, h·d + j], keys t ≤ i only when `causal`.
  public static func attention(
    query: Tensor, key: Tensor, value: Tensor, headCount: Int, causal: Bool, into output: Tensor
  ) {
    let (batch, queryTokens, channels) = (query.shape[0], query.shape[1], query.shape[2])
    let keyTokens = key.shape[1], valueChannels = value.shape[2]
    let headDimension = channels / headCount, valueHeadDimension = valueChannels / headCount
    let scale = 1 / Double(headDimension).squareRoot()
    var weights = [Double](repeating: 0, count: keyTokens)
    for sample in 0..<batch {
      let keySample = key.shape[0] == 1 ? 0 : sample
      for head in 0..<headCount {
        for row in 0..<queryTokens {
          let visible = causal ? row + 1 : keyTokens
          var maximum = -Double.infinity
          for token in 0..<visible {
            var dot = 0.0
            for inner in 0..<headDimension {
              dot +=
                Double(query[sample, row, head * headDimension + inner])
                * Double(key[keySample, token, head * headDimension + inner])
            }
            weights[token] = dot * scale
            maximum = Swift.max(maximum, weights[token])
          }
          var total = 0.0
          for token in 0..<visible {
            weights[token] = Foundation.exp(weights[token] - maximum)
            total += weights[token]
          }
          for inner in 0..<valueHeadDimension {
            var sum = 0.0
            for token in 0..<visible {
              sum += weights[token] * Double(value[keySample, token, head * valueHeadDimension + inner])
            }
            output[sample, row, head * valueHeadDimension + inner] = visible == 0 ? 0 : Float(sum / total)
          }
        }
      }
    }
  }
}
