import Foundation

extension ComputeContext {
  /// Below this many elements, element-wise work stays on the calling thread (waking a worker
  /// costs more than it saves).
  static let parallelGrain = 1 << 14

  /// output = a + b, element by element (equal element counts; `output` may be `a` or `b`).
  public func add(_ a: Tensor, _ b: Tensor, into output: Tensor) {
    binary(a, b, output) { $0 + $1 }
  }

  /// output = a · b, element by element (equal element counts; `output` may be `a` or `b`).
  public func multiply(_ a: Tensor, _ b: Tensor, into output: Tensor) {
    binary(a, b, output) { $0 * $1 }
  }

  /// output = a + scale · b, element by element (`output` may be `a` or `b`).
  public func addScaled(_ a: Tensor, _ b: Tensor, scale: Float, into output: Tensor) {
    binary(a, b, output) { $0 + scale * $1 }
  }

  /// output = factor · x (`output` may be `x`).
  public func scale(_ x: Tensor, by factor: Float, into output: Tensor) {
    unary(x, output, vector: { $0 * factor }, scalar: { $0 * factor })
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
    unary(x, output, vector: VectorMath.silu, scalar: ReferenceKernels.silu)
  }

  /// Exact GELU ½x(1 + erf(x/√2)) (PyTorch `F.gelu`, approximate='none'); `output` may be `x`.
  public func gelu(_ x: Tensor, into output: Tensor) {
    unary(x, output, vector: VectorMath.gelu, scalar: ReferenceKernels.gelu)
  }

  /// Quick-GELU x·σ(1.702x) (OpenAI CLIP's activation); `output` may be `x`.
  public func quickGELU(_ x: Tensor, into output: Tensor) {
    unary(x, output, vector: VectorMath.quickGELU, scalar: ReferenceKernels.quickGELU)
  }

  /// GEGLU as in sgm `attention.GEGLU`: the last dimension of `x` (2·D) is split into
  /// [value ‖ gate] and output = value · GELU(gate), with `output` `[…, D]`.
  public func geglu(_ x: Tensor, into output: Tensor) {
    let width = output.shape.last
    precondition(x.shape.last == 2 * width && x.shape.rows == output.shape.rows,
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
        let value = input + row * 2 * width, destination = result + row * width
        // GELU of the gate into the output row, then multiply by the value half.
        VectorMath.map(value + width, destination, count: width, VectorMath.gelu)
        for column in 0..<width { destination[column] *= value[column] }
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
    var maximum = -Float.infinity
    for index in 0..<count { maximum = Swift.max(maximum, source[index]) }
    let shift = VectorMath.Vector(repeating: maximum)
    VectorMath.map(source, destination, count: count) { VectorMath.exp($0 - shift) }
    var lanes = VectorMath.Vector(repeating: 0)
    var index = 0
    while index + 8 <= count {
      lanes += UnsafeRawPointer(destination + index).loadUnaligned(as: VectorMath.Vector.self)
      index += 8
    }
    var total = lanes.sum()
    while index < count {
      total += destination[index]
      index += 1
    }
    let inverse = 1 / total
    for index in 0..<count { destination[index] *= inverse }
  }

  private func unary(
    _ x: Tensor, _ output: Tensor, vector: @escaping (VectorMath.Vector) -> VectorMath.Vector,
    scalar: (Float) -> Float
  ) {
    precondition(x.count == output.count, "element-wise \(x.shape) into \(output.shape)")
    let input = x.pointer, result = output.pointer
    if usesReferenceKernels {
      for index in 0..<x.count { result[index] = scalar(input[index]) }
      return
    }
    pool.forEachChunk(x.count / 8, minimumChunk: Self.parallelGrain / 8) { range in
      let end = range.upperBound == x.count / 8 ? x.count : range.upperBound * 8
      let start = range.lowerBound * 8
      VectorMath.map(input + start, result + start, count: end - start, vector)
    }
    if x.count < 8 { VectorMath.map(input, result, count: x.count, vector) }
  }

  private func binary(
    _ a: Tensor, _ b: Tensor, _ output: Tensor, _ operation: @escaping (Float, Float) -> Float
  ) {
    precondition(a.count == b.count && a.count == output.count,
      "element-wise \(a.shape), \(b.shape) into \(output.shape)")
    let left = a.pointer, right = b.pointer, result = output.pointer
    let body: (Range<Int>) -> Void = { range in
      for index in range { result[index] = operation(left[index], right[index]) }
    }
    if usesReferenceKernels {
      body(0..<a.count)
    } else {
      pool.forEachChunk(a.count, minimumChunk: Self.parallelGrain, body)
    }
  }
}
