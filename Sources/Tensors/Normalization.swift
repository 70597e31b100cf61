import CTensorKernels

/// An activation fused into a normalisation's output pass.
public enum FusedActivation: Sendable {
  /// No activation.
  case none
  /// SiLU x·σ(x), as in GroupNorm → SiLU at the head of every ResBlock.
  case silu
}

extension ComputeContext {
  /// Group normalisation over `[N, C, …]` (PyTorch `nn.GroupNorm`): channels split into `groups`
  /// contiguous groups, each normalised over its channels and all trailing positions with the
  /// biased variance, then scaled and shifted per channel, optionally followed by SiLU.
  ///
  /// Statistics are accumulated in Double, so the result does not depend on the thread split.
  /// - Parameters:
  ///   - groups: 32 in SDXL's UNet and VAE; must divide C.
  ///   - epsilon: 1e-5 in UNet ResBlocks and `out`, 1e-6 in UNet transformers and the VAE.
  ///   - weight, bias: `[C]` affine parameters, or nil for none.
  ///   - output: same shape as `x`; may be `x`.
  public func groupNorm(
    _ x: Tensor, groups: Int = 32, epsilon: Float, weight: Tensor?, bias: Tensor?,
    activation: FusedActivation = .none, into output: Tensor
  ) {
    precondition(x.shape.rank >= 2 && x.shape == output.shape, "groupNorm \(x.shape) into \(output.shape)")
    let batch = x.shape[0], channels = x.shape[1]
    precondition(groups > 0 && channels % groups == 0, "groupNorm: \(groups) groups for \(channels) channels")
    if let weight { precondition(weight.count == channels, "groupNorm weight \(weight.shape)") }
    if let bias { precondition(bias.count == channels, "groupNorm bias \(bias.shape)") }
    let plane = x.count / Swift.max(1, batch * channels)
    let channelsPerGroup = channels / groups
    let groupSize = channelsPerGroup * plane
    let input = x.pointer, result = output.pointer
    let gamma = weight?.pointer, beta = bias?.pointer
    let reference = usesReferenceKernels
    let body: (Range<Int>) -> Void = { range in
      for groupIndex in range {
        let start = groupIndex * groupSize
        let (mean, variance) =
          reference
          ? ReferenceKernels.meanAndVariance(input + start, count: groupSize)
          : ComputeContext.meanAndVariance(input + start, count: groupSize)
        let inverse = Float(1 / (variance + Double(epsilon)).squareRoot())
        let firstChannel = (groupIndex % groups) * channelsPerGroup
        for local in 0..<channelsPerGroup {
          let channel = firstChannel + local
          let scale = inverse * (gamma?[channel] ?? 1)
          let shift = (beta?[channel] ?? 0) - Float(mean) * scale
          let offset = start + local * plane
          if reference {
            for element in 0..<plane {
              // (x − μ)/σ·γ + β written out, as PyTorch's reference does.
              let normalised = (input[offset + element] - Float(mean)) * inverse
              let value = normalised * (gamma?[channel] ?? 1) + (beta?[channel] ?? 0)
              result[offset + element] = activation == .silu ? ReferenceKernels.silu(value) : value
            }
          } else {
            tk_affine(input + offset, result + offset, plane, scale, shift, activation == .silu ? 1 : 0)
          }
        }
      }
    }
    if reference {
      body(0..<(batch * groups))
    } else {
      pool.forEachChunk(batch * groups, body)
    }
  }

  /// A GroupNorm of `x` as one affine map per sample and channel (its group's mean and 1/σ folded
  /// with γ and β), which can then be applied to any part of `x` — a band of rows — and gives
  /// exactly what `groupNorm` gives there (the same statistics and the same arithmetic).
  public func groupNormAffine(
    _ x: Tensor, groups: Int = 32, epsilon: Float, weight: Tensor?, bias: Tensor?,
    activation: FusedActivation = .none
  ) -> GroupNormAffine {
    precondition(x.shape.rank >= 2, "groupNormAffine \(x.shape)")
    let batch = x.shape[0], channels = x.shape[1]
    precondition(groups > 0 && channels % groups == 0, "groupNorm: \(groups) groups for \(channels) channels")
    if let weight { precondition(weight.count == channels, "groupNorm weight \(weight.shape)") }
    if let bias { precondition(bias.count == channels, "groupNorm bias \(bias.shape)") }
    let plane = x.count / Swift.max(1, batch * channels)
    let channelsPerGroup = channels / groups
    let groupSize = channelsPerGroup * plane
    var scales = [Float](repeating: 0, count: batch * channels)
    var shifts = [Float](repeating: 0, count: batch * channels)
    let input = x.pointer
    let gamma = weight?.pointer, beta = bias?.pointer
    scales.withUnsafeMutableBufferPointer { scaleBuffer in
      shifts.withUnsafeMutableBufferPointer { shiftBuffer in
        let scale = scaleBuffer.baseAddress!, shift = shiftBuffer.baseAddress!
        pool.forEachChunk(batch * groups) { range in
          for groupIndex in range {
            let (mean, variance) = ComputeContext.meanAndVariance(
              input + groupIndex * groupSize, count: groupSize)
            let inverse = Float(1 / (variance + Double(epsilon)).squareRoot())
            let sample = groupIndex / groups
            let firstChannel = (groupIndex % groups) * channelsPerGroup
            for channel in firstChannel..<(firstChannel + channelsPerGroup) {
              let channelScale = inverse * (gamma?[channel] ?? 1)
              scale[sample * channels + channel] = channelScale
              shift[sample * channels + channel] = (beta?[channel] ?? 0) - Float(mean) * channelScale
            }
          }
        }
      }
    }
    return GroupNormAffine(channels: channels, scales: scales, shifts: shifts, silu: activation == .silu)
  }

  /// Layer normalisation over the last dimension (PyTorch `nn.LayerNorm(C)`), biased variance.
  /// - Parameters:
  ///   - epsilon: 1e-5 in CLIP and the UNet's transformer blocks.
  ///   - weight, bias: `[C]`, or nil.
  ///   - output: same shape as `x`; may be `x`.
  public func layerNorm(
    _ x: Tensor, epsilon: Float, weight: Tensor?, bias: Tensor?, into output: Tensor
  ) {
    precondition(x.shape == output.shape, "layerNorm \(x.shape) into \(output.shape)")
    let columns = x.shape.last, rows = x.shape.rows
    if let weight { precondition(weight.count == columns, "layerNorm weight \(weight.shape)") }
    if let bias { precondition(bias.count == columns, "layerNorm bias \(bias.shape)") }
    let input = x.pointer, result = output.pointer
    let gamma = weight?.pointer, beta = bias?.pointer
    let reference = usesReferenceKernels
    let body: (Range<Int>) -> Void = { range in
      for row in range {
        let source = input + row * columns, destination = result + row * columns
        let (mean, variance) =
          reference
          ? ReferenceKernels.meanAndVariance(source, count: columns)
          : ComputeContext.meanAndVariance(source, count: columns)
        let inverse = Float(1 / (variance + Double(epsilon)).squareRoot())
        let center = Float(mean)
        for column in 0..<columns {
          let normalised = (source[column] - center) * inverse
          destination[column] = normalised * (gamma?[column] ?? 1) + (beta?[column] ?? 0)
        }
      }
    }
    if reference {
      body(0..<rows)
    } else {
      pool.forEachChunk(rows, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(columns, 1)), body)
    }
  }

  /// Mean and biased variance (two passes; Float lanes summed into Double every 1024 elements).
  static func meanAndVariance(_ values: UnsafePointer<Float>, count: Int) -> (Double, Double) {
    guard count > 0 else { return (0, 0) }
    let mean = blockedSum(values, count: count) { $0 } / Double(count)
    let center = SIMD8<Float>(repeating: Float(mean))
    let squares = blockedSum(values, count: count) {
      let difference = $0 - center
      return difference * difference
    }
    return (mean, squares / Double(count))
  }

  /// Σ transform(values): Float lanes within 1024-element blocks, the blocks summed in Double.
  private static func blockedSum(
    _ values: UnsafePointer<Float>, count: Int, _ transform: (SIMD8<Float>) -> SIMD8<Float>
  ) -> Double {
    var total = 0.0
    var index = 0
    while index < count {
      let end = Swift.min(count, index + 1024)
      // Four independent sums: one chain of vector adds would wait on each add's latency.
      var lanes = (SIMD8<Float>(repeating: 0), SIMD8<Float>(repeating: 0))
      var more = (SIMD8<Float>(repeating: 0), SIMD8<Float>(repeating: 0))
      while index + 32 <= end {
        let raw = UnsafeRawPointer(values + index)
        lanes.0 += transform(raw.loadUnaligned(as: SIMD8<Float>.self))
        lanes.1 += transform(raw.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
        more.0 += transform(raw.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self))
        more.1 += transform(raw.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self))
        index += 32
      }
      while index + 8 <= end {
        lanes.0 += transform(UnsafeRawPointer(values + index).loadUnaligned(as: SIMD8<Float>.self))
        index += 8
      }
      var block = Double(((lanes.0 + lanes.1) + (more.0 + more.1)).sum())
      while index < end {
        block += Double(transform(SIMD8<Float>(repeating: values[index]))[0])
        index += 1
      }
      total += block
    }
    return total
  }
}

/// One GroupNorm's affine map per sample and channel (see `ComputeContext.groupNormAffine`).
public struct GroupNormAffine: Sendable {
  /// Channels per sample.
  public let channels: Int
  let scales: [Float]
  let shifts: [Float]
  let silu: Bool

  /// Normalises `count` values of `channel` in `sample` (then SiLU when asked) from `source` into
  /// `destination` (which may be `source`).
  public func apply(
    sample: Int, channel: Int, _ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    let index = sample * channels + channel
    tk_affine(source, destination, count, scales[index], shifts[index], silu ? 1 : 0)
  }
}
