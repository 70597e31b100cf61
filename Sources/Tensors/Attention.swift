extension ComputeContext {
  /// Multi-head scaled dot-product attention, softmax(Q·Kᵀ/√d)·V per head, through gemm.
  ///
  /// Heads are column ranges of the channel dimension (head h is channels h·d..<(h+1)·d, as after
  /// PyTorch's `view(B, T, heads, d)`), addressed in place with gemm strides, so Q, K, V and the
  /// output are plain `[N, T, C]` tensors straight from linear layers. Scores are computed for one
  /// head and one block of query rows at a time (at most `attentionBlockBudget` floats, and never
  /// more than tokens² per head), so memory does not grow with the head count or batch.
  ///
  /// For cross-attention, compute K and V from the context once per prompt and pass the same
  /// tensors every step; nothing here depends on them being fresh.
  /// - Parameters:
  ///   - query: `[N, Tq, C]`.
  ///   - key: `[N, Tk, C]`, or `[1, Tk, C]` shared by every sample.
  ///   - value: `[N, Tk, Cv]` (or `[1, Tk, Cv]`), Cv divisible by `headCount`.
  ///   - headCount: heads; C / headCount is the head dimension d.
  ///   - causal: when true, query i sees keys 0…i only (CLIP's text encoders).
  ///   - output: `[N, Tq, Cv]`; must not overlap the inputs.
  public func attention(
    query: Tensor, key: Tensor, value: Tensor, headCount: Int, causal: Bool = false,
    into output: Tensor
  ) {
    precondition(query.shape.rank == 3 && key.shape.rank == 3 && value.shape.rank == 3
      && output.shape.rank == 3, "attention needs [N, T, C] tensors")
    let batch = query.shape[0], queryTokens = query.shape[1], channels = query.shape[2]
    let keyTokens = key.shape[1], valueChannels = value.shape[2]
    precondition(key.shape[0] == batch || key.shape[0] == 1, "attention key batch \(key.shape)")
    precondition(value.shape[0] == key.shape[0] && value.shape[1] == keyTokens,
      "attention value \(value.shape) for key \(key.shape)")
    precondition(key.shape[2] == channels, "attention key \(key.shape) for query \(query.shape)")
    precondition(headCount > 0 && channels % headCount == 0 && valueChannels % headCount == 0,
      "attention: \(headCount) heads for \(channels) channels")
    precondition(output.shape == Shape(batch, queryTokens, valueChannels),
      "attention output \(output.shape)")
    precondition(!causal || queryTokens == keyTokens, "causal attention needs Tq == Tk")
    let headDimension = channels / headCount, valueHeadDimension = valueChannels / headCount
    let scale = 1 / Float(headDimension).squareRoot()
    if usesReferenceKernels {
      ReferenceKernels.attention(
        query: query, key: key, value: value, headCount: headCount, causal: causal, into: output)
      return
    }
    if keyTokens == 0 || queryTokens == 0 {
      output.fill(0)
      return
    }
    let blockRows = Swift.max(1, Swift.min(queryTokens, attentionBlockBudget / keyTokens))
    // Score block, then one softmax denominator per row.
    let scores = workspace.buffer(blockRows * keyTokens + blockRows)
    let sums = scores + blockRows * keyTokens
    for sample in 0..<batch {
      let keySample = key.shape[0] == 1 ? 0 : sample
      let queries = query.pointer + sample * queryTokens * channels
      let keys = key.pointer + keySample * keyTokens * channels
      let values = value.pointer + keySample * keyTokens * valueChannels
      let results = output.pointer + sample * queryTokens * valueChannels
      for head in 0..<headCount {
        var firstRow = 0
        while firstRow < queryTokens {
          let rows = Swift.min(blockRows, queryTokens - firstRow)
          // Scores[rows, Tk] = scale · Q[rows, head] · K[:, head]ᵀ.
          gemm(
            transposeA: false, transposeB: true, m: rows, n: keyTokens, k: headDimension,
            alpha: scale, a: queries + firstRow * channels + head * headDimension, lda: channels,
            b: keys + head * headDimension, ldb: channels, beta: 0, c: scores, ldc: keyTokens)
          // Unnormalised softmax: P = exp(S − rowmax), row sums kept aside.
          let start = firstRow
          pool.forEachChunk(rows, minimumChunk: Swift.max(1, Self.parallelGrain / keyTokens)) { range in
            for row in range {
              let line = scores + row * keyTokens
              let visible = causal ? start + row + 1 : keyTokens
              sums[row] = ComputeContext.exponentiateRow(line, line, count: visible)
              if visible < keyTokens { (line + visible).update(repeating: 0, count: keyTokens - visible) }
            }
          }
          // Out[rows, head] = P[rows, Tk] · V[:, head], then divided by the row sums: dividing
          // the d-wide output instead of the Tk-wide scores saves a pass over the block.
          let target = results + firstRow * valueChannels + head * valueHeadDimension
          gemm(
            transposeA: false, transposeB: false, m: rows, n: valueHeadDimension, k: keyTokens,
            a: scores, lda: keyTokens, b: values + head * valueHeadDimension, ldb: valueChannels,
            beta: 0, c: target, ldc: valueChannels)
          for row in 0..<rows {
            let inverse = 1 / sums[row]
            let line = target + row * valueChannels
            for column in 0..<valueHeadDimension { line[column] *= inverse }
          }
          firstRow += rows
        }
      }
    }
  }
}
