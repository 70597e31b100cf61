import CTensorKernels

extension ComputeContext {
  /// Whether a 3×3, stride-1 convolution with an output plane of `height` × `width` runs Winograd
  /// F(4×4, 3×3) (`tk_winograd_*`): 36 multiply-adds per 16 outputs and input channel instead of
  /// 144. Smaller planes keep the direct kernel: the weight transform, per call, outweighs the
  /// products it saves (a 16² plane of 1280 channels alone: 38 against 64 ms on one core, an 8²
  /// plane has 4 tiles). The choice rests on the whole plane,
  /// never on the batch or band, so an image's values do not depend on what it is computed with.
  func runsWinograd(planeHeight height: Int, width: Int) -> Bool {
    let tileSide = Int(TK_WINOGRAD_TILE)
    let tiles = ((height + tileSide - 1) / tileSide) * ((width + tileSide - 1) / tileSide)
    return usesWinogradConvolution && ComputeContext.hasWinogradKernel && tiles >= winogradMinimumTiles
  }

  /// A 3×3, stride-1 convolution by Winograd F(4×4, 3×3), in chunks of tile rows (all samples'
  /// rows in order) whose transformed inputs and outputs fit `winogradBudget`, and chunks of
  /// output channels whose transformed weights fit `winogradWeightBudget`:
  ///   1. each chunk's tiles transformed (V), split by tile rows between threads;
  ///   2. the transformed weights (U) of a channel chunk, split by channels (once per call where
  ///      one chunk holds them all);
  ///   3. 36 products M[ξ] = V[ξ] · U[ξ]ᵀ through the linear kernel, split by ξ (or, for at most
  ///      `winogradFusedTiles` tiles, `tk_winograd_products` making U a panel at a time instead of
  ///      step 2, split by panels: the same values);
  ///   4. the outputs transformed back (+ bias, + the output when accumulating), split by tile rows.
  /// Tiles start at each plane's (or band's) first output, so an output depends only on its own
  /// image, never on the batch, chunk or thread.
  ///
  /// Output channel o of sample n starts at `output + (n · C_out + o) · channelStride`, with
  /// `outHeight` rows of `outWidth` values there.
  func winogradConvolution3x3(
    _ x: Tensor, weight: WeightView, bias: Tensor?, padding: Int, into output: UnsafeMutablePointer<Float>,
    channelStride: Int, outHeight: Int, outWidth: Int, accumulate: Bool
  ) {
    let batch = x.shape[0], inChannels = x.shape[1], height = x.shape[2], width = x.shape[3]
    let outChannels = weight.shape[0]
    let elements = Int(TK_WINOGRAD_ELEMENTS), tileSide = Int(TK_WINOGRAD_TILE)
    let tileRows = (outHeight + tileSide - 1) / tileSide, tilesX = (outWidth + tileSide - 1) / tileSide
    let allRows = batch * tileRows
    let rowsPerChunk = Swift.max(
      1, Swift.min(allRows, winogradBudget / (elements * (inChannels + outChannels) * tilesX)))
    let panel = tk_linear_panel_features()
    let featuresPerChunk = Swift.min(
      outChannels, Swift.max(panel, winogradWeightBudget / (elements * inChannels) / panel * panel))
    let chunkTiles = rowsPerChunk * tilesX
    // Few tiles in all: U made per panel in the products' workspace instead of whole in memory.
    let fused = allRows * tilesX <= winogradFusedTiles
    let threads = pool.threadCount
    let threadFloats = Self.roundedToVector(
      Swift.max(
        tk_winograd_input_workspace_floats(inChannels, outWidth),
        tk_winograd_output_workspace_floats(outChannels, outWidth),
        fused ? tk_winograd_products_workspace_floats() : tk_linear_workspace_floats(featuresPerChunk, inChannels)))
    let inputStride = Self.elementStride(chunkTiles * inChannels)
    let outputStride = Self.elementStride(chunkTiles * outChannels)
    let weightFloats = fused ? 0 : elements * Self.elementStride(featuresPerChunk * inChannels)
    let transformedInputs = workspace.alignedBuffer(
      elements * inputStride + elements * outputStride + weightFloats
        + threads * threadFloats)
    let products = transformedInputs + elements * inputStride
    let transformedWeights = products + elements * outputStride
    let scratch = transformedWeights + weightFloats
    let inputPlanes = inChannels * height * width, outputPlanes = outChannels * channelStride

    // Calls `body(sample, tile rows of it, first tile of them in the chunk)` for this worker's share of
    // the chunk's rows, one call per sample they fall in.
    func forEachSample(
      of rows: Range<Int>, worker: Int, _ body: (Int, Range<Int>, Int) -> Void
    ) {
      let first = rows.lowerBound + rows.count * worker / threads
      let end = rows.lowerBound + rows.count * (worker + 1) / threads
      var row = first
      while row < end {
        let sample = row / tileRows, sampleEnd = Swift.min(end, (sample + 1) * tileRows)
        body(sample, (row - sample * tileRows)..<(sampleEnd - sample * tileRows), (row - rows.lowerBound) * tilesX)
        row = sampleEnd
      }
    }
    func transformWeights(_ features: Range<Int>) {
      pool.forEachChunk(features.count, minimumChunk: 16) { part in
        tk_winograd_transform_weights(
          weight.address, weight.kernelFormat, inChannels, features.lowerBound + part.lowerBound, part.count,
          transformedWeights + part.lowerBound * inChannels, Self.elementStride(features.count * inChannels))
      }
    }

    let weightsOnce = featuresPerChunk >= outChannels
    if weightsOnce && !fused { transformWeights(0..<outChannels) }
    var firstRow = 0
    while firstRow < allRows {
      let rows = firstRow..<Swift.min(allRows, firstRow + rowsPerChunk)
      pool.forEachChunk(threads) { workers in
        for worker in workers {
          forEachSample(of: rows, worker: worker) { sample, sampleRows, firstTile in
            tk_winograd_transform_input(
              x.pointer + sample * inputPlanes, inChannels, height, width, padding, sampleRows.lowerBound,
              sampleRows.upperBound, transformedInputs + firstTile * inChannels, inputStride,
              scratch + worker * threadFloats)
          }
        }
      }
      if fused {
        let panels = (outChannels + tk_winograd_products_panel() - 1) / tk_winograd_products_panel()
        pool.forEachChunk(threads) { workers in
          for worker in workers where panels * worker / threads < panels * (worker + 1) / threads {
            tk_winograd_products(
              weight.address, weight.kernelFormat, inChannels, outChannels, panels * worker / threads,
              panels * (worker + 1) / threads, transformedInputs, inputStride, rows.count * tilesX, products,
              outputStride, scratch + worker * threadFloats)
          }
        }
      }
      var firstFeature = fused ? outChannels : 0
      while firstFeature < outChannels {
        let features = firstFeature..<Swift.min(outChannels, firstFeature + featuresPerChunk)
        if !weightsOnce { transformWeights(features) }
        let weightStride = Self.elementStride(features.count * inChannels)
        pool.forEachChunk(threads) { workers in
          for worker in workers {
            for element in (elements * worker / threads)..<(elements * (worker + 1) / threads) {
              tk_linear(
                transformedInputs + element * inputStride, inChannels, 0, rows.count * tilesX, inChannels,
                transformedWeights + element * weightStride, Int32(TK_WEIGHT_F32), features.count, 0, features.count,
                nil, 0, scratch + worker * threadFloats, products + element * outputStride + features.lowerBound,
                outChannels)
            }
          }
        }
        firstFeature = features.upperBound
      }
      pool.forEachChunk(threads) { workers in
        for worker in workers {
          forEachSample(of: rows, worker: worker) { sample, sampleRows, firstTile in
            tk_winograd_transform_output(
              products + firstTile * outChannels, outputStride, outChannels, outHeight, outWidth,
              sampleRows.lowerBound, sampleRows.upperBound, bias?.pointer, accumulate ? 1 : 0,
              scratch + worker * threadFloats, output + sample * outputPlanes, channelStride)
          }
        }
      }
      firstRow = rows.upperBound
    }
  }

  /// `rows` of a band of a taller plane, rounded down to whole Winograd tile rows where it has
  /// more than one: bands cut this way start where the whole plane's tiles do, so a convolution
  /// in bands gives the same values, bit for bit, as on the whole plane.
  public static func tileAlignedBandRows(_ rows: Int) -> Int {
    let tileSide = Int(TK_WINOGRAD_TILE)
    return rows >= tileSide ? rows / tileSide * tileSide : rows
  }

  /// `count` rounded up to whole 16-float vectors, so that buffers cut from one stay 64-byte aligned.
  static func roundedToVector(_ count: Int) -> Int { (count + 15) / 16 * 16 }

  /// Floats from one transformed element ξ to the next for `count` floats each: whole vectors and
  /// a cache line more, so that the 36 elements of one tile, read or written together, fall in
  /// different cache sets (sizes such as 1024 tiles × 320 channels are multiples of 4 KB, which
  /// put all 36 in one set).
  static func elementStride(_ count: Int) -> Int { roundedToVector(count) + 16 }
}
