import CTensorKernels

extension ComputeContext {
  /// The NCHW output shape of `conv2d` for an NCHW input and a `[out, in, kh, kw]` weight.
  public static func conv2dOutputShape(
    input: Shape, weight: Shape, stride: Int = 1, padding: Int = 0
  ) -> Shape {
    precondition(input.rank == 4 && weight.rank == 4, "conv2d needs NCHW input and 4-D weight")
    let height = (input[2] + 2 * padding - weight[2]) / stride + 1
    let width = (input[3] + 2 * padding - weight[3]) / stride + 1
    return Shape(input[0], weight[0], height, width)
  }

  /// A 2-D convolution (cross-correlation, as PyTorch's `nn.Conv2d`) with square stride and
  /// zero padding, and an optional bias.
  ///
  /// Each sample is one gemm `W[out, in·kh·kw] · columns[in·kh·kw, Ho·Wo]`, the columns (im2col)
  /// built in bands of output rows of at most `im2colBudget` floats so that memory stays bounded
  /// at any image size; 1×1 convolutions with stride 1 and no padding skip im2col entirely.
  ///
  /// - Parameters:
  ///   - x: `[N, in, H, W]`.
  ///   - weight: `[out, in, kh, kw]`.
  ///   - bias: `[out]`, or nil.
  ///   - output: `[N, out, Ho, Wo]` (see `conv2dOutputShape`); must not overlap `x`.
  ///   - accumulate: when true, adds the convolution to `output` (a fused residual).
  public func conv2d(
    _ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
    into output: Tensor, accumulate: Bool = false
  ) {
    conv2d(
      x, weight: WeightView(weight), bias: bias, stride: stride, padding: padding, into: output, accumulate: accumulate)
  }

  /// `conv2d` with a weight that may live outside tensor storage (see `WeightView`).
  public func conv2d(
    _ x: Tensor, weight: WeightView, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
    into output: Tensor, accumulate: Bool = false
  ) {
    let profiling = startProfiling()
    var kind = OperationProfile.Kind.convolution
    defer { finishProfiling(profiling, kind, shape: Self.convolutionShape(x, weight)) }
    precondition(stride >= 1 && padding >= 0, "conv2d stride \(stride) padding \(padding)")
    precondition(x.shape.rank == 4 && weight.shape.rank == 4, "conv2d shapes \(x.shape), \(weight.shape)")
    precondition(weight.shape[1] == x.shape[1], "conv2d weight \(weight.shape) for input \(x.shape)")
    let expected = ComputeContext.conv2dOutputShape(
      input: x.shape, weight: weight.shape, stride: stride, padding: padding)
    precondition(expected[2] > 0 && expected[3] > 0, "conv2d output would be empty for \(x.shape)")
    precondition(output.shape == expected, "conv2d output \(output.shape), need \(expected)")
    if let bias { precondition(bias.count == weight.shape[0], "conv2d bias \(bias.shape)") }
    let outPlane = expected[2] * expected[3]
    if takesFloat16ConvolutionWeights(weightShape: weight.shape, stride: stride) {
      // The kernel reads fp16 weights as stored, widening them while it packs.
      kind = convolution3x3(
        x, weight: weight, bias: bias, padding: padding, into: output.pointer, channelStride: outPlane,
        positions: outPlane, planeHeight: expected[2], accumulate: accumulate)
      return
    }
    var copy: Tensor?
    let weight = weight.float32(keeping: &copy)
    defer { withExtendedLifetime(copy) {} }
    if usesReferenceKernels {
      ReferenceKernels.conv2d(
        x, weight: weight.tensor(), bias: bias, stride: stride, padding: padding, into: output,
        accumulate: accumulate)
      return
    }
    let batch = x.shape[0], inChannels = x.shape[1], height = x.shape[2], width = x.shape[3]
    let outChannels = weight.shape[0], kernelHeight = weight.shape[2], kernelWidth = weight.shape[3]
    let outHeight = expected[2], outWidth = expected[3]
    let reduction = inChannels * kernelHeight * kernelWidth

    gemmOperations += 2 * Double(batch * outChannels * reduction * outPlane)
    var beta: Float = accumulate ? 1 : 0
    if let bias {
      addChannelBias(output, bias: bias, accumulate: accumulate)
      beta = 1
    }
    let pointwise = kernelHeight == 1 && kernelWidth == 1 && stride == 1 && padding == 0
    for sample in 0..<batch {
      let input = x.pointer + sample * inChannels * height * width
      let result = output.pointer + sample * outChannels * outPlane
      if pointwise {
        uncountedGemm(
          transposeA: false, transposeB: false, m: outChannels, n: outPlane, k: reduction,
          a: weight.pointer, lda: reduction, b: input, ldb: outPlane, beta: beta, c: result,
          ldc: outPlane)
        continue
      }
      let bandRows = Swift.max(1, Swift.min(outHeight, im2colBudget / Swift.max(1, reduction * outWidth)))
      let columns = workspace.buffer(reduction * bandRows * outWidth)
      var firstRow = 0
      while firstRow < outHeight {
        let rows = Swift.min(bandRows, outHeight - firstRow)
        let bandWidth = rows * outWidth
        im2col(
          input, channels: inChannels, height: height, width: width, kernelHeight: kernelHeight,
          kernelWidth: kernelWidth, stride: stride, padding: padding, outWidth: outWidth,
          firstRow: firstRow, rows: rows, into: columns)
        uncountedGemm(
          transposeA: false, transposeB: false, m: outChannels, n: bandWidth, k: reduction,
          a: weight.pointer, lda: reduction, b: columns, ldb: bandWidth, beta: beta,
          c: result + firstRow * outWidth, ldc: outPlane)
        firstRow += rows
      }
    }
  }

  /// A convolution's shape as its profile records it: "N×C×H×W→out".
  static func convolutionShape(_ x: Tensor, _ weight: WeightView) -> String {
    "\(x.shape.dimensions.map(String.init).joined(separator: "×"))→\(weight.shape[0])"
  }

  /// Whether `conv2d` runs a convolution with this `[out, in, kh, kw]` weight and stride through
  /// the AVX-512 3×3 kernel, which takes `.float16` weight views as they are (widening while it
  /// packs: no widened copy); elsewhere a half-float view is widened into a temporary copy first,
  /// so callers holding half floats widen them themselves where this is false.
  public func takesFloat16ConvolutionWeights(weightShape: Shape, stride: Int) -> Bool {
    weightShape.rank == 4 && weightShape[2] == 3 && weightShape[3] == 3 && stride == 1 && usesConvolutionKernel
      && ComputeContext.hasConvolutionKernel && !usesReferenceKernels
  }

  /// A 3×3, stride-1, unpadded convolution of a band of rows `x` `[1, C, rows + 2, W + 2]` (its
  /// border already in place) straight into rows `firstRow ..< firstRow + rows` of `output`
  /// `[1, C_out, H, W]` (added to them when `accumulate`), with no band buffer and no copy;
  /// the same values as `conv2d` into a band and a copy. The weight may be a `.float16` view
  /// (widened while packed). Returns false, having done nothing, where the AVX-512 kernel does
  /// not run (the caller then takes that way).
  public func convolveBand(
    _ x: Tensor, weight: WeightView, bias: Tensor?, intoRows firstRow: Int, of output: Tensor, accumulate: Bool
  ) -> Bool {
    guard takesFloat16ConvolutionWeights(weightShape: weight.shape, stride: 1) else { return false }
    precondition(
      x.shape.rank == 4 && x.shape[0] == 1 && output.shape.rank == 4 && output.shape[0] == 1,
      "convolveBand: one sample, got \(x.shape) into \(output.shape)")
    precondition(
      weight.shape[1] == x.shape[1] && weight.shape[0] == output.shape[1],
      "convolveBand weight \(weight.shape) for \(x.shape) into \(output.shape)")
    let rows = x.shape[2] - 2, width = x.shape[3] - 2
    precondition(
      rows >= 1 && width == output.shape[3] && firstRow >= 0 && firstRow + rows <= output.shape[2],
      "convolveBand: band \(x.shape) at row \(firstRow) of \(output.shape)")
    if let bias { precondition(bias.count == weight.shape[0], "convolveBand bias \(bias.shape)") }
    let profiling = startProfiling()
    var kind = OperationProfile.Kind.convolution3x3
    defer { finishProfiling(profiling, kind, shape: Self.convolutionShape(x, weight)) }
    let plane = output.shape[2] * output.shape[3]
    kind = convolution3x3(
      x, weight: weight, bias: bias, padding: 0, into: output.pointer + firstRow * width, channelStride: plane,
      positions: rows * width, planeHeight: output.shape[2], accumulate: accumulate)
    return true
  }

  /// A 3×3, stride-1 convolution through the AVX-512 kernels, without an im2col matrix; returns
  /// the kind it ran as. Planes of enough tiles take Winograd's form (`runsWinograd`: the whole
  /// output plane has `planeHeight` rows, more than a band's). Otherwise
  /// the weights are packed once per call, then each sample's output positions are split into one
  /// contiguous range per thread (in multiples of 64), or, where a plane has fewer positions than
  /// a group of them per thread, its output channels are. Every output is the same chain of
  /// multiply-adds in any split, band or batch (`tk_conv3x3`).
  ///
  /// Output channel o of sample n starts at `output + (n · C_out + o) · channelStride`, and has
  /// `positions` values there (a band of rows of a taller plane has fewer than its stride).
  private func convolution3x3(
    _ x: Tensor, weight: WeightView, bias: Tensor?, padding: Int, into output: UnsafeMutablePointer<Float>,
    channelStride: Int, positions: Int, planeHeight: Int, accumulate: Bool
  ) -> OperationProfile.Kind {
    let batch = x.shape[0], inChannels = x.shape[1], height = x.shape[2], width = x.shape[3]
    let outChannels = weight.shape[0]
    // Dense-equivalent work, whichever form runs.
    gemmOperations += 2 * Double(batch * outChannels * inChannels * 9 * positions)
    let outWidth = width + 2 * padding - 2, outHeight = positions / outWidth
    if runsWinograd(planeHeight: planeHeight, width: outWidth) {
      winogradConvolution3x3(
        x, weight: weight, bias: bias, padding: padding, into: output, channelStride: channelStride,
        outHeight: outHeight, outWidth: outWidth, accumulate: accumulate)
      return .winograd
    }
    let tileChannels = tk_conv3x3_tile_channels()
    let weightTiles = (outChannels + tileChannels - 1) / tileChannels
    let packedFloats = (tk_conv3x3_packed_weight_floats(outChannels, inChannels) + 15) / 16 * 16
    let scratchFloats = tk_conv3x3_workspace_floats(weightTiles)
    let threads = pool.threadCount
    let packed = workspace.alignedBuffer(packedFloats + threads * scratchFloats), scratch = packed + packedFloats
    pool.forEachChunk(weightTiles, minimumChunk: 8) { tiles in
      tk_conv3x3_pack_weights(
        weight.address, weight.kernelFormat, outChannels, inChannels, tiles.lowerBound, tiles.count, packed)
    }
    let positionTiles = (positions + 63) / 64
    // Positions are split only where every thread gets a whole group of them: a 16² plane (256
    // positions) split in two read all the weights once per 128 outputs in each thread (69 % of the
    // peak in a 64² forward); split by output channels, each thread reads half of them once.
    let splitsPositions = positions >= threads * tk_conv3x3_group_positions()
    for sample in 0..<batch {
      let input = x.pointer + sample * inChannels * height * width
      let result = output + sample * outChannels * channelStride
      pool.forEachChunk(threads) { workers in
        for worker in workers {
          var (firstPosition, endPosition, firstTile, endTile) = (0, positions, 0, weightTiles)
          if splitsPositions {
            firstPosition = Swift.min(positions, positionTiles * worker / threads * 64)
            endPosition = Swift.min(positions, positionTiles * (worker + 1) / threads * 64)
          } else {
            (firstTile, endTile) = (weightTiles * worker / threads, weightTiles * (worker + 1) / threads)
          }
          guard firstPosition < endPosition, firstTile < endTile else { continue }
          tk_conv3x3(
            input, inChannels, height, width, padding, packed, outChannels, bias?.pointer,
            accumulate ? 1 : 0, firstPosition, endPosition, firstTile, endTile, scratch + worker * scratchFloats,
            result, channelStride)
        }
      }
    }
    return .convolution3x3
  }

  /// Lays out the receptive fields of output rows `firstRow..<firstRow+rows` as the columns of a
  /// `[channels·kh·kw, rows·outWidth]` matrix (row index (c·kh + ky)·kw + kx, matching the
  /// weight's `[out, in, kh, kw]` layout), zero where the field leaves the image.
  private func im2col(
    _ input: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int,
    kernelHeight: Int, kernelWidth: Int, stride: Int, padding: Int, outWidth: Int,
    firstRow: Int, rows: Int, into columns: UnsafeMutablePointer<Float>
  ) {
    let bandWidth = rows * outWidth
    let fieldsPerChannel = kernelHeight * kernelWidth
    pool.forEachChunk(channels * fieldsPerChannel, minimumChunk: 4) { range in
      for fieldRow in range {
        let channel = fieldRow / fieldsPerChannel
        let ky = (fieldRow / kernelWidth) % kernelHeight
        let kx = fieldRow % kernelWidth
        let plane = input + channel * height * width
        // Output columns whose input column is inside the image: ox·stride − padding + kx ∈ [0, W).
        let firstInside = Swift.max(0, (padding - kx + stride - 1) / stride)
        let span = width - 1 + padding - kx
        let endInside = span < 0 ? 0 : Swift.min(outWidth, span / stride + 1)
        for row in 0..<rows {
          let destination = columns + fieldRow * bandWidth + row * outWidth
          let inputRow = (firstRow + row) * stride - padding + ky
          if inputRow < 0 || inputRow >= height || firstInside >= endInside {
            destination.update(repeating: 0, count: outWidth)
            continue
          }
          let source = plane + inputRow * width
          if firstInside > 0 { destination.update(repeating: 0, count: firstInside) }
          if stride == 1 {
            let start = firstInside - padding + kx
            (destination + firstInside).update(from: source + start, count: endInside - firstInside)
          } else {
            var inputColumn = firstInside * stride - padding + kx
            for column in firstInside..<endInside {
              destination[column] = source[inputColumn]
              inputColumn += stride
            }
          }
          if endInside < outWidth {
            (destination + endInside).update(repeating: 0, count: outWidth - endInside)
          }
        }
      }
    }
  }
}
