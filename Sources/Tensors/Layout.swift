extension ComputeContext {
  /// Nearest-neighbour ×2 upsampling of `[N, C, H, W]` into `[N, C, 2H, 2W]` (PyTorch
  /// `F.interpolate(scale_factor=2, mode="nearest")`, as in sgm `Upsample`).
  public func upsampleNearest2x(_ x: Tensor, into output: Tensor) {
    precondition(x.shape.rank == 4, "upsample needs NCHW, got \(x.shape)")
    let height = x.shape[2], width = x.shape[3]
    precondition(
      output.shape == Shape(x.shape[0], x.shape[1], 2 * height, 2 * width),
      "upsample \(x.shape) into \(output.shape)")
    let input = x.pointer, result = output.pointer
    let planes = x.shape[0] * x.shape[1]
    let body: (Range<Int>) -> Void = { range in
      for plane in range {
        let source = input + plane * height * width
        let destination = result + plane * 4 * height * width
        for row in 0..<height {
          let line = destination + 2 * row * 2 * width
          let origin = source + row * width
          for column in 0..<width {
            line[2 * column] = origin[column]
            line[2 * column + 1] = origin[column]
          }
          (line + 2 * width).update(from: line, count: 2 * width)
        }
      }
    }
    if usesReferenceKernels {
      ReferenceKernels.upsampleNearest2x(x, into: output)
    } else {
      pool.forEachChunk(planes, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(1, 4 * height * width)), body)
    }
  }

  /// Concatenates `a` and `b` along `axis` (all other dimensions equal), as `torch.cat([a, b],
  /// dim=axis)`: axis 1 of NCHW for UNet skip connections ([h ‖ skip]), the last axis of
  /// `[N, T, C]` for the [CLIP-L ‖ CLIP-G] context. `output` must not overlap the inputs.
  public func concatenate(_ a: Tensor, _ b: Tensor, axis: Int, into output: Tensor) {
    let rank = a.shape.rank
    precondition(
      b.shape.rank == rank && output.shape.rank == rank && axis >= 0 && axis < rank,
      "concatenate \(a.shape), \(b.shape) on axis \(axis)")
    var outer = 1
    for index in 0..<rank where index != axis {
      precondition(
        a.shape[index] == b.shape[index] && a.shape[index] == output.shape[index],
        "concatenate \(a.shape), \(b.shape) into \(output.shape) on axis \(axis)")
      if index < axis { outer *= a.shape[index] }
    }
    precondition(
      output.shape[axis] == a.shape[axis] + b.shape[axis],
      "concatenate \(a.shape), \(b.shape) into \(output.shape) on axis \(axis)")
    let aBlock = outer == 0 ? 0 : a.count / outer, bBlock = outer == 0 ? 0 : b.count / outer
    let left = a.pointer, right = b.pointer, result = output.pointer
    let body: (Range<Int>) -> Void = { range in
      for index in range {
        let destination = result + index * (aBlock + bBlock)
        destination.update(from: left + index * aBlock, count: aBlock)
        (destination + aBlock).update(from: right + index * bBlock, count: bBlock)
      }
    }
    if usesReferenceKernels {
      body(0..<outer)
    } else {
      pool.forEachChunk(outer, minimumChunk: Swift.max(1, Self.parallelGrain / Swift.max(1, aBlock + bBlock)), body)
    }
  }

  /// Swaps the last two dimensions: `[N, A, B]` into `[N, B, A]` (e.g. NCHW features `[N, C, HW]`
  /// to tokens `[N, HW, C]` and back). `output` must not overlap `x`.
  public func transposeLastTwo(_ x: Tensor, into output: Tensor) {
    precondition(x.shape.rank >= 2 && output.count == x.count, "transpose \(x.shape) into \(output.shape)")
    let rows = x.shape[x.shape.rank - 2], columns = x.shape.last
    precondition(
      output.shape.last == rows && output.shape[output.shape.rank - 2] == columns,
      "transpose \(x.shape) into \(output.shape)")
    let matrices = x.count / Swift.max(1, rows * columns)
    let input = x.pointer, result = output.pointer
    if usesReferenceKernels {
      for matrix in 0..<matrices {
        for row in 0..<rows {
          for column in 0..<columns {
            result[matrix * rows * columns + column * rows + row] =
              input[matrix * rows * columns + row * columns + column]
          }
        }
      }
      return
    }
    // 32×32 tiles keep both the reads and the writes within a few cache lines.
    let tile = 32
    let rowTiles = (rows + tile - 1) / tile
    pool.forEachChunk(matrices * rowTiles) { range in
      for job in range {
        let matrix = job / rowTiles, firstRow = (job % rowTiles) * tile
        let source = input + matrix * rows * columns, destination = result + matrix * rows * columns
        let lastRow = Swift.min(rows, firstRow + tile)
        var firstColumn = 0
        while firstColumn < columns {
          let lastColumn = Swift.min(columns, firstColumn + tile)
          for row in firstRow..<lastRow {
            for column in firstColumn..<lastColumn {
              destination[column * rows + row] = source[row * columns + column]
            }
          }
          firstColumn = lastColumn
        }
      }
    }
  }
}
