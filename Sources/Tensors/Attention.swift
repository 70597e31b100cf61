import CTensorKernels
import Foundation

extension ComputeContext {
  /// Multi-head scaled dot-product attention, softmax(Q·Kᵀ/√d)·V per head, through gemm.
  ///
  /// Heads are column ranges of the channel dimension (head h is channels h·d..<(h+1)·d, as after
  /// PyTorch's `view(B, T, heads, d)`), addressed in place with gemm strides, so Q, K, V and the
  /// output are plain `[N, T, C]` tensors straight from linear layers. The work is split into
  /// tasks of one sample, one head and one block of query rows (`attentionTile`), run one per
  /// thread; each walks the keys a tile at a time with an online softmax, so the scores of a task
  /// never exceed one tile (they stay in cache) and memory does not grow with tokens, heads or
  /// batch.
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
    let profiling = startProfiling()
    defer { finishProfiling(profiling, .attention, shape: "\(headCount)×\(query.shape[1])×\(key.shape[1])") }
    precondition(
      query.shape.rank == 3 && key.shape.rank == 3 && value.shape.rank == 3
        && output.shape.rank == 3, "attention needs [N, T, C] tensors")
    let batch = query.shape[0], queryTokens = query.shape[1], channels = query.shape[2]
    let keyTokens = key.shape[1], valueChannels = value.shape[2]
    precondition(key.shape[0] == batch || key.shape[0] == 1, "attention key batch \(key.shape)")
    precondition(
      value.shape[0] == key.shape[0] && value.shape[1] == keyTokens,
      "attention value \(value.shape) for key \(key.shape)")
    precondition(key.shape[2] == channels, "attention key \(key.shape) for query \(query.shape)")
    precondition(
      headCount > 0 && channels % headCount == 0 && valueChannels % headCount == 0,
      "attention: \(headCount) heads for \(channels) channels")
    precondition(
      output.shape == Shape(batch, queryTokens, valueChannels),
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
    gemmOperations += attentionOperations(
      batch: batch, headCount: headCount, queryTokens: queryTokens, keyTokens: keyTokens,
      headDimension: headDimension, valueHeadDimension: valueHeadDimension, causal: causal)
    if !causal && headDimension == 64 && valueHeadDimension == 64 && usesAttentionKernel
      && ComputeContext.hasAttentionKernel
    {
      attentionKernel(
        query: query, key: key, value: value, headCount: headCount, scale: scale, into: output)
      return
    }
    let tile = (
      queries: Swift.max(1, Swift.min(queryTokens, attentionTile.queries)),
      keys: Swift.max(1, Swift.min(keyTokens, attentionTile.keys))
    )
    let queryBlocks = (queryTokens + tile.queries - 1) / tile.queries
    let taskCount = batch * headCount * queryBlocks
    // One scratch per thread: a score tile, then the running row maxima and sums.
    let workers = Swift.min(pool.threadCount, taskCount)
    let scratchFloats = tile.queries * tile.keys + 2 * tile.queries
    let scratch = workspace.buffer(workers * scratchFloats)
    let geometry = AttentionGeometry(
      queryTokens: queryTokens, keyTokens: keyTokens, channels: channels, valueChannels: valueChannels,
      headDimension: headDimension, valueHeadDimension: valueHeadDimension, scale: scale, causal: causal,
      tileQueries: tile.queries, tileKeys: tile.keys)
    pool.forEachChunk(workers) { slots in
      for worker in slots {
        let scores = scratch + worker * scratchFloats
        // Tasks are dealt round-robin: they cost the same (up to the causal triangle).
        var task = worker
        while task < taskCount {
          let block = task % queryBlocks, head = (task / queryBlocks) % headCount
          let sample = task / (queryBlocks * headCount)
          let keySample = key.shape[0] == 1 ? 0 : sample
          attentionTile(
            geometry, firstRow: block * tile.queries, head: head,
            queries: query.pointer + sample * queryTokens * channels,
            keys: key.pointer + keySample * keyTokens * channels,
            values: value.pointer + keySample * keyTokens * valueChannels,
            results: output.pointer + sample * queryTokens * valueChannels, scratch: scores)
          task += workers
        }
      }
    }
  }

  /// The gemm-equivalent work of one attention call (2·m·n·k of Q·Kᵀ and P·V per head), counted
  /// once here rather than by the tasks' gemms, which run on several threads at once. Causal
  /// blocks count the key tiles they compute, as the gemm-based form walks them.
  func attentionOperations(
    batch: Int, headCount: Int, queryTokens: Int, keyTokens: Int, headDimension: Int,
    valueHeadDimension: Int, causal: Bool
  ) -> Double {
    var products = Double(queryTokens) * Double(keyTokens)
    if causal {
      let rows = Swift.max(1, Swift.min(queryTokens, attentionTile.queries))
      products = 0
      for firstRow in stride(from: 0, to: queryTokens, by: rows) {
        let blockRows = Swift.min(rows, queryTokens - firstRow)
        let keyEnd = Swift.min(keyTokens, firstRow + blockRows)
        products += Double(blockRows) * Double(keyEnd)
      }
    }
    return 2 * Double(batch * headCount) * products * Double(headDimension + valueHeadDimension)
  }

  /// Attention with head dimension 64 through the AVX-512 kernel: tasks of one sample, one head
  /// and a range of query rows, one per thread; each packs its head's keys and values once into
  /// its own scratch (heads are split into several row ranges only when there are fewer heads
  /// than threads need, so the packing stays a small fraction).
  func attentionKernel(
    query: Tensor, key: Tensor, value: Tensor, headCount: Int, scale: Float, into output: Tensor
  ) {
    let batch = query.shape[0], queryTokens = query.shape[1], channels = query.shape[2]
    let keyTokens = key.shape[1], valueChannels = value.shape[2]
    let blockRows = Swift.max(1, attentionKernelTile.queries)
    let tileKeys = (Swift.max(1, attentionKernelTile.keys) + 15) / 16 * 16
    let heads = batch * headCount
    let queryBlocks = (queryTokens + blockRows - 1) / blockRows
    let rangesPerHead = Swift.min(queryBlocks, Swift.max(1, (2 * pool.threadCount + heads - 1) / heads))
    let rangeRows = (queryBlocks + rangesPerHead - 1) / rangesPerHead * blockRows
    let taskCount = heads * rangesPerHead
    let workers = Swift.min(pool.threadCount, taskCount)
    let scratchFloats = tk_attention_workspace_floats(keyTokens, blockRows, tileKeys)
    let scratch = workspace.buffer(workers * scratchFloats)
    pool.forEachChunk(workers) { slots in
      for worker in slots {
        var task = worker
        while task < taskCount {
          let range = task % rangesPerHead, head = (task / rangesPerHead) % headCount
          let sample = task / (rangesPerHead * headCount)
          let keySample = key.shape[0] == 1 ? 0 : sample
          let firstRow = range * rangeRows
          if firstRow < queryTokens {
            let rows = Swift.min(rangeRows, queryTokens - firstRow)
            tk_attention_head64(
              query.pointer + (sample * queryTokens + firstRow) * channels + head * 64, channels, rows,
              key.pointer + keySample * keyTokens * channels + head * 64, channels,
              value.pointer + keySample * keyTokens * valueChannels + head * 64, valueChannels,
              keyTokens, scale, blockRows, tileKeys, scratch + worker * scratchFloats,
              output.pointer + (sample * queryTokens + firstRow) * valueChannels + head * 64,
              valueChannels)
          }
          task += workers
        }
      }
    }
  }

  /// The sizes one attention call shares between its tasks.
  struct AttentionGeometry {
    let queryTokens: Int, keyTokens: Int, channels: Int, valueChannels: Int
    let headDimension: Int, valueHeadDimension: Int, scale: Float, causal: Bool
    let tileQueries: Int, tileKeys: Int
  }

  /// One block of query rows of one head against every key, a tile of keys at a time, with an
  /// online softmax (flash attention's recurrence): the running row maximum m and sum l are
  /// updated per key tile and the partial output rescaled by exp(m_old − m_new), so the scores
  /// never exist in full and stay in cache between the two gemms.
  func attentionTile(
    _ g: AttentionGeometry, firstRow: Int, head: Int, queries: UnsafePointer<Float>,
    keys: UnsafePointer<Float>, values: UnsafePointer<Float>, results: UnsafeMutablePointer<Float>,
    scratch: UnsafeMutablePointer<Float>
  ) {
    let rows = Swift.min(g.tileQueries, g.queryTokens - firstRow)
    let scores = scratch
    let maxima = scratch + g.tileQueries * g.tileKeys, sums = maxima + g.tileQueries
    let target = results + firstRow * g.valueChannels + head * g.valueHeadDimension
    // Causal rows see keys 0…row: key tiles past the block's last row are skipped whole.
    let keyEnd = g.causal ? Swift.min(g.keyTokens, firstRow + rows) : g.keyTokens
    var firstKey = 0
    while firstKey < keyEnd {
      let keyCount = Swift.min(g.tileKeys, keyEnd - firstKey)
      // S[rows, keys] = scale · Q[rows, head] · K[keys, head]ᵀ.
      uncountedGemm(
        transposeA: false, transposeB: true, m: rows, n: keyCount, k: g.headDimension,
        alpha: g.scale, a: queries + firstRow * g.channels + head * g.headDimension, lda: g.channels,
        b: keys + firstKey * g.channels + head * g.headDimension, ldb: g.channels, beta: 0,
        c: scores, ldc: keyCount, parallel: false)
      for row in 0..<rows {
        let line = scores + row * keyCount
        let visible = g.causal ? Swift.max(0, Swift.min(keyCount, firstRow + row + 1 - firstKey)) : keyCount
        if visible == 0 {
          // Nothing new for this row: its partial output stays as it is (P·V adds zeros).
          line.update(repeating: 0, count: keyCount)
          continue
        }
        let tileMax = tk_max(line, visible)
        if firstKey == 0 {
          maxima[row] = tileMax
          sums[row] = tk_exp_shifted_sum(line, line, visible, tileMax)
        } else {
          let newMax = Swift.max(maxima[row], tileMax)
          let correction = expf(maxima[row] - newMax)
          maxima[row] = newMax
          sums[row] = sums[row] * correction + tk_exp_shifted_sum(line, line, visible, newMax)
          if correction != 1 {
            let out = target + row * g.valueChannels
            for column in 0..<g.valueHeadDimension { out[column] *= correction }
          }
        }
        if visible < keyCount { (line + visible).update(repeating: 0, count: keyCount - visible) }
      }
      // O[rows, head] (+)= P[rows, keys] · V[keys, head].
      uncountedGemm(
        transposeA: false, transposeB: false, m: rows, n: g.valueHeadDimension, k: keyCount,
        a: scores, lda: keyCount, b: values + firstKey * g.valueChannels + head * g.valueHeadDimension,
        ldb: g.valueChannels, beta: firstKey == 0 ? 0 : 1, c: target, ldc: g.valueChannels, parallel: false)
      firstKey += keyCount
    }
    // Dividing the d-wide output instead of the key-wide scores saves a pass.
    for row in 0..<rows {
      let inverse = 1 / sums[row]
      let out = target + row * g.valueChannels
      for column in 0..<g.valueHeadDimension { out[column] *= inverse }
    }
  }
}
