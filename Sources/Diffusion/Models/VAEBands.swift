import Tensors

/// The decoder's ResnetBlocks in bands of rows, bit-identical to the whole-plane path.
///
/// A GroupNorm needs statistics over a whole plane, so its input stays whole; what no longer
/// exists whole is everything that only feeds the next convolution: the normalised (and SiLU'd)
/// input of each `conv1` and `conv2` is made a band at a time, with a row above and below, and
/// convolved at once (a normalisation in place before conv2 cost a write and a read of the whole
/// plane). The first block of a level that halves the width (SDXL's up.1 and up.0: 512→256 and
/// 256→128 channels) works inside its input's block: each band's shortcut and `conv1` results are
/// written back over rows of the input that no later band reads, so the whole level runs in one
/// block of the input's size, whose second half is given back to the system when the level ends.
///
/// Every value is computed by the same kernels in the same order as on whole planes (the norm's
/// affine map per channel, the convolution's gemm over the same reduction), so the result is the
/// same bit for bit (`AutoencoderTests`; one-row bands, whose narrow gemms OpenBLAS sums in another
/// order, agree to fp32 rounding).
extension VAEPass {
  /// Whether `block` can run inside its input's block (the width halves, 3×3 convolutions).
  func halvesInPlace(_ block: VAEResnetBlock) -> Bool {
    guard banded, let shortcut = block.shortcut else { return false }
    return block.norm1.channels == 2 * block.outChannels && shortcut.weight.shape[2] == 1
      && block.conv1.weight.shape[2] == 3
  }

  /// A ResnetBlock whose width halves, computed inside `x`'s block: the result (a `[N, C/2, H, W]`
  /// tensor on the same storage) replaces `x`, which must not be used afterwards.
  ///
  /// Per sample, the input's `[C, H, W]` slot ends up holding the output in its first half and
  /// conv1's result in its second: band by band, the shortcut of the band's rows and conv1 of the
  /// band (its normalised rows plus one above and below) are computed, and written back only
  /// after the next band has read its rows, so no band reads a row already overwritten.
  func halvingResnet(_ block: VAEResnetBlock, _ x: Tensor) -> Tensor {
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let half = block.outChannels
    let plane = height * width
    let shortcutLayer = block.shortcut!
    let norm1 = compute.groupNormAffine(
      x, epsilon: block.norm1.epsilon, weight: block.norm1.weight, bias: block.norm1.bias, activation: .silu)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    // The shortcut's few weights get their own copy: conv1's widened weight holds the scratch.
    let shortcutWeight = arena.tensor([half, channels])
    shortcutWeight.pointer.update(from: shortcutLayer.weight.view(compute).pointer, count: half * channels)
    let sweep = BandSweep(self, channels: channels, outChannels: half, height: height, width: width)
    let conv1Bands = [arena.tensor(sweep.bandShape(half)), arena.tensor(sweep.bandShape(half))]
    let shortcutBands = [arena.tensor(sweep.bandShape(half)), arena.tensor(sweep.bandShape(half))]
    for sample in 0..<batch {
      // Per sample: conv2 below may widen its weight into the same scratch (fp16 weights are
      // read as stored where the 3×3 kernel runs, and not widened at all).
      let conv1Weight = block.conv1.weight.convolutionView(compute, stride: 1)
      let slot = x.view(offset: sample * channels * plane, shape: [1, channels, height, width])
      var pending: (index: Int, first: Int, rows: Int)? = nil
      for (index, band) in sweep.bands.enumerated() {
        let input = sweep.normalizedBand(norm1, sample: sample, of: slot, first: band.first, rows: band.rows)
        let conv1Result = conv1Bands[index % 2].view(offset: 0, shape: [1, half, band.rows, width])
        compute.conv2d(input, weight: conv1Weight, bias: block.conv1.bias, padding: 0, into: conv1Result)
        let shortcutResult = shortcutBands[index % 2].view(offset: 0, shape: [1, half, band.rows, width])
        if let bias = shortcutLayer.bias {
          fillChannels(shortcutResult, with: bias)
        }
        compute.gemm(
          transposeA: false, transposeB: false, m: half, n: band.rows * width, k: channels,
          a: shortcutWeight.pointer, lda: channels, b: slot.pointer + band.first * width, ldb: plane,
          beta: shortcutLayer.bias == nil ? 0 : 1, c: shortcutResult.pointer, ldc: band.rows * width)
        // The previous band's rows are free now: this band has read the last of them.
        if let previous = pending {
          writeBack(previous, slot: slot, half: half, conv1: conv1Bands, shortcut: shortcutBands)
        }
        pending = (index, band.first, band.rows)
      }
      if let last = pending { writeBack(last, slot: slot, half: half, conv1: conv1Bands, shortcut: shortcutBands) }
      // out = shortcut + conv2(silu(norm2(h))), the residual accumulated into the shortcut half.
      let output = slot.view(offset: 0, shape: [1, half, height, width])
      let h = slot.view(offset: half * plane, shape: [1, half, height, width])
      normalizedConvolutions(block.norm2, block.conv2, h, into: output, accumulate: true)
    }
    // Samples after the first move down to make one `[N, C/2, H, W]` tensor (a no-op for one).
    for sample in 1..<Swift.max(1, batch) {
      (x.pointer + sample * half * plane).update(from: x.pointer + sample * channels * plane, count: half * plane)
    }
    // conv1's halves are dead: their pages go back now rather than when the block is next used.
    x.storage.discardPages((batch * half * plane)..<(batch * channels * plane))
    return Tensor(storage: x.storage, offset: 0, shape: [batch, half, height, width])
  }

  /// Rows of band `band` of both results into the slot: the shortcut's over the first half of the
  /// channels (the output so far), conv1's over the second.
  private func writeBack(
    _ band: (index: Int, first: Int, rows: Int), slot: Tensor, half: Int, conv1: [Tensor], shortcut: [Tensor]
  ) {
    let (height, width) = (slot.shape[2], slot.shape[3])
    let count = band.rows * width
    let conv1Band = conv1[band.index % 2].pointer, shortcutBand = shortcut[band.index % 2].pointer
    compute.pool.forEachChunk(half) { range in
      for channel in range {
        (slot.pointer + (channel * height + band.first) * width).update(
          from: shortcutBand + channel * count, count: count)
        (slot.pointer + ((half + channel) * height + band.first) * width).update(
          from: conv1Band + channel * count, count: count)
      }
    }
  }

  /// Sets every value of channel c of `[1, C, rows, W]` to `bias[c]` (as `conv2d` starts a
  /// convolution with a bias).
  private func fillChannels(_ tensor: Tensor, with bias: Tensor) {
    let count = tensor.shape[2] * tensor.shape[3]
    for channel in 0..<tensor.shape[1] {
      (tensor.pointer + channel * count).update(repeating: bias.pointer[channel], count: count)
    }
  }

  /// conv(silu(norm(x))) for every sample of `x` `[N, C, H, W]` into `output` (added to it when
  /// `accumulate`), the normalised input made a band at a time: the statistics take one pass over
  /// `x`, and no normalised copy of it is ever written whole.
  func normalizedConvolutions(
    _ norm: NormLayer, _ conv: ConvolutionLayer, _ x: Tensor, into output: Tensor, accumulate: Bool = false
  ) {
    let affine = compute.groupNormAffine(
      x, epsilon: norm.epsilon, weight: norm.weight, bias: norm.bias, activation: .silu)
    for sample in 0..<x.shape[0] {
      normalizedConvolution(
        affine, sample: sample, conv, x.slice(sample..<(sample + 1)), into: output.slice(sample..<(sample + 1)),
        accumulate: accumulate)
    }
  }

  /// conv(silu(norm(x))) for one sample `[1, C, H, W]` and a 3×3, stride-1, padding-1 `conv`, into
  /// `output` `[1, C_out, H, W]` (added to it when `accumulate`), with the normalised input made a
  /// band at a time.
  func normalizedConvolution(
    _ affine: GroupNormAffine, sample: Int, _ conv: ConvolutionLayer, _ x: Tensor, into output: Tensor,
    accumulate: Bool = false
  ) {
    precondition(conv.weight.shape[2] == 3 && conv.stride == 1 && conv.padding == 1, "3×3 convolutions only")
    let (channels, height, width) = (x.shape[1], x.shape[2], x.shape[3])
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let sweep = BandSweep(self, channels: channels, outChannels: conv.outChannels, height: height, width: width)
    var resultBand: Tensor? = nil  // only where the kernel cannot write into the output
    let weight = conv.weight.convolutionView(compute, stride: 1)
    for band in sweep.bands {
      let input = sweep.normalizedBand(affine, sample: sample, of: x, first: band.first, rows: band.rows)
      // Straight into the output's rows where the kernel can; else a band buffer and copies.
      if compute.convolveBand(
        input, weight: weight, bias: conv.bias, intoRows: band.first, of: output, accumulate: accumulate)
      {
        continue
      }
      if resultBand == nil { resultBand = arena.tensor(sweep.bandShape(conv.outChannels)) }
      let result = resultBand!.view(offset: 0, shape: [1, conv.outChannels, band.rows, width])
      if accumulate { copyRows(of: output, first: band.first, into: result) }
      compute.conv2d(input, weight: weight, bias: conv.bias, padding: 0, into: result, accumulate: accumulate)
      copyBand(result, into: output, sample: 0, firstRow: band.first)
    }
  }

  /// Rows `first…` of `[1, C, H, W]` into the band `[1, C, rows, W]`.
  private func copyRows(of tensor: Tensor, first: Int, into band: Tensor) {
    let (height, width) = (tensor.shape[2], tensor.shape[3])
    let count = band.shape[2] * width
    compute.pool.forEachChunk(band.shape[1]) { range in
      for channel in range {
        (band.pointer + channel * count).update(from: tensor.pointer + (channel * height + first) * width, count: count)
      }
    }
  }
}

/// The bands of output rows of a 3×3 convolution over `[C, H, W]` planes, and the buffer their
/// normalised, zero-bordered input rows are made in.
struct BandSweep {
  let pass: VAEPass
  let channels: Int, height: Int, width: Int
  /// Output rows per band (the last may have fewer).
  let bandRows: Int
  /// `[1, C, bandRows + 2, W + 2]`: a band's input rows with a zero border.
  let inputBuffer: Tensor

  init(_ pass: VAEPass, channels: Int, outChannels: Int, height: Int, width: Int) {
    self.pass = pass
    (self.channels, self.height, self.width) = (channels, height, width)
    bandRows = ComputeContext.tileAlignedBandRows(
      Swift.max(1, Swift.min(height, pass.bandBudget / (channels * (width + 2)) - 2)))
    inputBuffer = pass.arena.tensor([1, channels, bandRows + 2, width + 2])
  }

  var bands: [(first: Int, rows: Int)] {
    stride(from: 0, to: height, by: bandRows).map { ($0, Swift.min(bandRows, height - $0)) }
  }

  /// The shape of a band of results with `channels` channels.
  func bandShape(_ channels: Int) -> Shape { [1, channels, bandRows, width] }

  /// Rows `first − 1 … first + rows` of sample `sample`'s plane `x` `[1, C, H, W]`, normalised by
  /// `affine`, with zeros outside the image (the convolution's padding), as `[1, C, rows + 2, W + 2]`.
  func normalizedBand(_ affine: GroupNormAffine, sample: Int, of x: Tensor, first: Int, rows: Int) -> Tensor {
    let paddedWidth = width + 2
    let band = inputBuffer.view(offset: 0, shape: [1, channels, rows + 2, paddedWidth])
    let (height, width) = (height, width)
    pass.compute.pool.forEachChunk(channels) { range in
      for channel in range {
        let plane = x.pointer + channel * height * width
        let target = band.pointer + channel * (rows + 2) * paddedWidth
        for line in 0..<(rows + 2) {
          let row = target + line * paddedWidth
          let sourceRow = first - 1 + line
          guard sourceRow >= 0, sourceRow < height else {
            row.update(repeating: 0, count: paddedWidth)
            continue
          }
          row[0] = 0
          affine.apply(sample: sample, channel: channel, plane + sourceRow * width, into: row + 1, count: width)
          row[paddedWidth - 1] = 0
        }
      }
    }
    return band
  }
}
