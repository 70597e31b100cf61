import CTensorKernels
import Foundation

extension ComputeContext {
  /// Below this many elements, element-wise work stays on the calling thread (waking a worker
  /// costs more than it saves).
  static let parallelGrain = 1 << 14

  /// output = a + b, element by element (equal element counts; `output` may be `a` or `b`).
  public func add(_ a: Tensor, _ b: Tensor, into output: Tensor) {
    binary(a, b, output, scale: 1)
  }

  /// output = a · b, element by element (equal element counts; `output` may be `a` or `b`).
  public func multiply(_ a: Tensor, _ b: Tensor, into output: Tensor) {
    binary(a, b, output, scale: nil)
  }

  /// output = a + scale · b, element by element (`output` may be `a` or `b`).
  public func addScaled(_ a: Tensor, _ b: Tensor, scale: Float, into output: Tensor) {
    binary(a, b, output, scale: scale)
  }

  /// output = factor · x (`output` may be `x`).
  public func scale(_ x: Tensor, by factor: Float, into output: Tensor) {
    unary(x, output, scalar: { $0 * factor }, { tk_scale($0, $1, $2, factor) })
  }

  /// Adds a per-channel value broadcast over the trailing (spatial) dimensions:
  /// output[n, c, …] = x[n, c, …] + bias[c] (bias `[C]`) or + bias[n, c] (bias `[N, C]`), as in
  /// a ResBlock's `h + emb_layers(emb)[:, :, None, None]`. `output` may be `x`.
  public func addChannelBias(_ x: Tensor, bias: Tensor, into output: Tensor) {
    precondition(x.count == output.count, "addChannelBias \(x.shape) into \(output.shape)")
    channelBias(source: x, bias: bias, output: output)
  }

  /// output = bias (broadcast per channel), plus output itself when `accumulate`.
  func addChannelBias(_ output: Tensor, bias: Tensor, accumulate: Bool) {
    channelBias(source: accumulate ? output : nil, bias: bias, output: output)
  }

  private func channelBias(source: Tensor?, bias: Tensor, output: Tensor) {
    precondition(output.shape.rank >= 2, "channel bias needs [N, C, …], got \(output.shape)")
    let batch = output.shape[0], channels = output.shape[1]
    let plane = output.count / Swift.max(1, batch * channels)
    let perSample = bias.count == batch * channels && bias.count != channels
    precondition(bias.count == channels || perSample, "bias \(bias.shape) for \(output.shape)")
    let input = source?.pointer, result = output.pointer, values = bias.pointer
    let body: (Range<Int>) -> Void = { range in
      for index in range {
        let value = values[perSample ? index : index % channels]
        let destination = result + index * plane
        if let input {
          let origin = input + index * plane
          for element in 0..<plane { destination[element] = origin[element] + value }
        } else {
          destination.update(repeating: value, count: plane)
        }
      }
    }
    if usesReferenceKernels {
      body(0..<(batch * channels))
    } else {
      pool.forEachChunk(batch * channels, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(plane, 1)), body)
    }
  }

  /// SiLU x·σ(x) (PyTorch `F.silu`); `output` may be `x`.
  public func silu(_ x: Tensor, into output: Tensor) {
    unary(x, output, scalar: ReferenceKernels.silu) { tk_silu($0, $1, $2) }
  }

  /// Exact GELU ½x(1 + erf(x/√2)) (PyTorch `F.gelu`, approximate='none'); `output` may be `x`.
  public func gelu(_ x: Tensor, into output: Tensor) {
    unary(x, output, scalar: ReferenceKernels.gelu) { tk_gelu($0, $1, $2) }
  }

  /// Quick-GELU x·σ(1.702x) (OpenAI CLIP's activation); `output` may be `x`.
  public func quickGELU(_ x: Tensor, into output: Tensor) {
    unary(x, output, scalar: ReferenceKernels.quickGELU) { tk_quick_gelu($0, $1, $2) }
  }

  /// GEGLU as in sgm `attention.GEGLU`: the last dimension of `x` (2·D) is split into
  /// [value ‖ gate] and output = value · GELU(gate), with `output` `[…, D]`.
  public func geglu(_ x: Tensor, into output: Tensor) {
    let width = output.shape.last
    precondition(
      x.shape.last == 2 * width && x.shape.rows == output.shape.rows,
      "geglu \(x.shape) into \(output.shape)")
    let rows = output.shape.rows, input = x.pointer, result = output.pointer
    if usesReferenceKernels {
      for row in 0..<rows {
        for column in 0..<width {
          let value = input[row * 2 * width + column], gate = input[row * 2 * width + width + column]
          result[row * width + column] = value * ReferenceKernels.gelu(gate)
        }
      }
      return
    }
    pool.forEachChunk(rows, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(width, 1))) { range in
      for row in range {
        let value = input + row * 2 * width
        tk_geglu(value, value + width, result + row * width, width)
      }
    }
  }

  /// Softmax over the last dimension, max-subtracted (PyTorch `softmax(dim=-1)`); `output` may
  /// be `x`.
  public func softmax(_ x: Tensor, into output: Tensor) {
    precondition(x.shape == output.shape, "softmax \(x.shape) into \(output.shape)")
    let columns = x.shape.last
    softmaxRows(
      x.pointer, output.pointer, rows: x.shape.rows, columns: columns, stride: columns,
      validColumns: nil)
  }

  /// Softmax of `rows` rows of `columns` values (row stride `stride`). With `validColumns`, row r
  /// uses only its first `validColumns(r)` values and the rest of the row is set to 0 (a causal
  /// mask without −∞ arithmetic).
  func softmaxRows(
    _ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, rows: Int,
    columns: Int, stride: Int, validColumns: ((Int) -> Int)?
  ) {
    let body: (Range<Int>) -> Void = { range in
      for row in range {
        let valid = validColumns?(row) ?? columns
        let source = input + row * stride, destination = output + row * stride
        if self.usesReferenceKernels {
          ReferenceKernels.softmaxRow(source, destination, count: valid)
        } else {
          ComputeContext.softmaxRow(source, destination, count: valid)
        }
        if valid < columns { (destination + valid).update(repeating: 0, count: columns - valid) }
      }
    }
    if usesReferenceKernels {
      body(0..<rows)
    } else {
      pool.forEachChunk(rows, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(columns, 1)), body)
    }
  }

  private static func softmaxRow(
    _ source: UnsafeMutablePointer<Float>, _ destination: UnsafeMutablePointer<Float>, count: Int
  ) {
    guard count > 0 else { return }
    let inverse = 1 / exponentiateRow(source, destination, count: count)
    tk_scale(destination, destination, count, inverse)
  }

  /// destination = exp(source − max(source)) over `count` values; returns their sum (the
  /// softmax denominator), computed in the same pass.
  static func exponentiateRow(
    _ source: UnsafeMutablePointer<Float>, _ destination: UnsafeMutablePointer<Float>, count: Int
  ) -> Float {
    guard count > 0 else { return 0 }
    return tk_exp_shifted_sum(source, destination, count, tk_max(source, count))
  }

  /// Runs a vector kernel `(source, destination, count)` over chunks, or `scalar` per element
  /// under the reference kernels.
  private func unary(
    _ x: Tensor, _ output: Tensor, scalar: (Float) -> Float,
    _ kernel: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
  ) {
    precondition(x.count == output.count, "element-wise \(x.shape) into \(output.shape)")
    let input = x.pointer, result = output.pointer
    if usesReferenceKernels {
      for index in 0..<x.count { result[index] = scalar(input[index]) }
      return
    }
    pool.forEachChunk(x.count, minimumChunk: Self.parallelGrain) { range in
      kernel(input + range.lowerBound, result + range.lowerBound, range.count)
    }
  }

  /// output = a + scale·b, or a·b when `scale` is nil: plain loops the compiler vectorises.
  private func binary(_ a: Tensor, _ b: Tensor, _ output: Tensor, scale: Float?) {
    precondition(
      a.count == b.count && a.count == output.count,
      "element-wise \(a.shape), \(b.shape) into \(output.shape)")
    let left = a.pointer, right = b.pointer, result = output.pointer
    let body: (Range<Int>) -> Void = { range in
      if let scale {
        if scale == 1 {
          for index in range { result[index] = left[index] + right[index] }
        } else {
          for index in range { result[index] = left[index] + scale * right[index] }
        }
      } else {
        for index in range { result[index] = left[index] * right[index] }
      }
    }
    if usesReferenceKernels {
      body(0..<a.count)
    } else {
      pool.forEachChunk(a.count, minimumChunk: Self.parallelGrain, body)
    }
  }
}
