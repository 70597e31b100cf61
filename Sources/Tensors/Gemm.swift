import CBLAS
import CTensorKernels

/// A read-only weight that need not live in tensor storage: a tensor, or a tensor used in place
/// in a mapped file (no copy), stored as Float32 or, for the kernels that widen while they pack
/// (`ComputeContext.takesFloat16Weights`), as IEEE half floats.
public struct WeightView {
  /// How the values at `address` are stored.
  public enum Format: Sendable { case float32, float16 }

  /// The first value (row-major, contiguous).
  public let address: UnsafeRawPointer
  public let format: Format
  public let shape: Shape

  /// `shape.count` Float32 values at `pointer`, valid while the caller keeps them alive.
  public init(pointer: UnsafePointer<Float>, shape: Shape) {
    address = UnsafeRawPointer(pointer)
    format = .float32
    self.shape = shape
  }

  /// `shape.count` IEEE half floats at `float16`, valid while the caller keeps them alive.
  public init(float16: UnsafeRawPointer, shape: Shape) {
    address = float16
    format = .float16
    self.shape = shape
  }

  /// A view of `tensor` (valid while the tensor's storage is alive).
  public init(_ tensor: Tensor) {
    self.init(pointer: UnsafePointer(tensor.pointer), shape: tensor.shape)
  }

  /// The Float32 values of a `.float32` view.
  public var pointer: UnsafePointer<Float> {
    precondition(format == .float32, "a \(format) weight has no Float32 values in place")
    return address.assumingMemoryBound(to: Float.self)
  }

  /// A Float32 copy (for the reference kernels, and the sgemm paths given a half-float view).
  public func tensor() -> Tensor {
    switch format {
    case .float32:
      return Tensor(shape: shape, values: Array(UnsafeBufferPointer(start: pointer, count: shape.count)))
    case .float16:
      let halves = address.assumingMemoryBound(to: UInt16.self)
      return Tensor(shape: shape, values: (0..<shape.count).map { Float(Float16(bitPattern: halves[$0])) })
    }
  }

  /// The format code of the kernels that read weights as stored (`weight_format.h`).
  var kernelFormat: Int32 { format == .float16 ? Int32(TK_WEIGHT_F16) : Int32(TK_WEIGHT_F32) }

  /// This view with Float32 values: itself, or a widened copy kept alive by `keeping`.
  func float32(keeping copy: inout Tensor?) -> WeightView {
    guard format != .float32 else { return self }
    let widened = tensor()
    copy = widened
    return WeightView(widened)
  }
}

extension ComputeContext {
  /// C = α·op(A)·op(B) + β·C on row-major matrices through OpenBLAS `cblas_sgemm`.
  ///
  /// op(A) is m×k, op(B) is k×n and C is m×n; `lda`, `ldb`, `ldc` are the row strides of A, B, C
  /// as stored (so A is m×k stored with `lda ≥ k`, or k×m with `lda ≥ m` when transposed). Strides
  /// let callers address one head's columns of a `[tokens, channels]` matrix without copying.
  public func gemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "negative gemm size \(m)×\(n)×\(k)")
    precondition(lda >= Swift.max(1, transposeA ? m : k), "lda \(lda) too small")
    precondition(ldb >= Swift.max(1, transposeB ? k : n), "ldb \(ldb) too small")
    precondition(ldc >= Swift.max(1, n), "ldc \(ldc) too small")
    if m == 0 || n == 0 { return }
    gemmOperations += 2 * Double(m) * Double(n) * Double(k)
    uncountedGemm(
      transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
      b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
  }

  /// `gemm` without adding to `gemmOperations`: for callers on several threads at once, which
  /// count their work themselves (and pass `parallel: false`: a pool job cannot use the pool).
  ///
  /// OpenBLAS runs single-threaded here, and a large gemm is split into column (or row) ranges,
  /// one per pool thread. OpenBLAS's own threads spin in `sched_yield` for about 2²⁸ cycles after
  /// every gemm, taking a core from the element-wise work between gemms; on two cores that cost
  /// the SDXL UNet forward 12–13 % at 64² (8.5–8.7 s with their spin cut short through
  /// `OPENBLAS_THREAD_TIMEOUT=4` against 9.6–10.0 s, three interleaved pairs; this split ran as
  /// fast as that setting, 8.7–9.1 s against 8.7–8.8 s).
  /// Splitting columns leaves each thread packing only its share of B, as OpenBLAS's blocking
  /// packs A once per column block anyway. An element's sum runs over k in the same blocked
  /// order in any range, so the result does not depend on the split (tested bit for bit).
  func uncountedGemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int, parallel: Bool = true
  ) {
    if m == 0 || n == 0 { return }
    if usesReferenceKernels {
      ReferenceKernels.gemm(
        transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a,
        lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
      return
    }
    if ComputeContext.blasThreadCount != 1 { ComputeContext.setBLASThreadCount(1) }
    // C's rows `rows` × columns `columns` of the product, on the calling thread.
    func part(rows: Range<Int>, columns: Range<Int>) {
      cblas_sgemm(
        CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
        Int32(rows.count), Int32(columns.count), Int32(k), alpha,
        a + rows.lowerBound * (transposeA ? 1 : lda), Int32(lda),
        b + columns.lowerBound * (transposeB ? ldb : 1), Int32(ldb), beta,
        c + rows.lowerBound * ldc + columns.lowerBound, Int32(ldc))
    }
    let parts = parallel ? gemmParts(m: m, n: n, k: k) : 1
    guard parts > 1 else {
      part(rows: 0..<m, columns: 0..<n)
      return
    }
    // Ranges are multiples of 64 columns (rows), whole register tiles for OpenBLAS's kernels.
    let splitColumns = n >= m
    let length = splitColumns ? n : m
    let step = ((length + parts - 1) / parts + 63) / 64 * 64
    pool.forEachChunk(parts) { chunk in
      for index in chunk where index * step < length {
        let range = index * step..<Swift.min(length, (index + 1) * step)
        if splitColumns { part(rows: 0..<m, columns: range) } else { part(rows: range, columns: 0..<n) }
      }
    }
  }

  /// How many pool threads a gemm is split over: one per thread while every part keeps at least
  /// `gemmSplitOperations` multiply-adds and 64 columns (rows), else 1. The bound keeps each part
  /// far above OpenBLAS's small-matrix limit (100³ in 0.3.21), whose kernel sums in another order.
  func gemmParts(m: Int, n: Int, k: Int) -> Int {
    let length = Swift.max(m, n)
    var parts = Swift.min(pool.threadCount, length / 64)
    while parts > 1 && m * n * k / parts < ComputeContext.gemmSplitOperations { parts -= 1 }
    return Swift.max(1, parts)
  }

  /// C = A·op(B) on OpenBLAS's own `threads` threads, bypassing the pool's split: the benchmarks'
  /// second measure of the machine's sgemm peak. OpenBLAS is set back to one thread after.
  public static func openBLASThreadedMatmul(_ a: Tensor, _ b: Tensor, transposeB: Bool, into c: Tensor, threads: Int) {
    let (m, k) = (a.shape[0], a.shape[1]), n = c.shape[1]
    precondition(c.shape[0] == m && b.count == k * n, "openBLASThreadedMatmul shapes \(a.shape) \(b.shape) \(c.shape)")
    setBLASThreadCount(threads)
    defer { setBLASThreadCount(1) }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
      a.pointer, Int32(k), b.pointer, Int32(transposeB ? k : n), 0, c.pointer, Int32(n))
  }

  /// The fewest multiply-adds per part of a split gemm (2²², 4× OpenBLAS's small-matrix limit;
  /// a part takes about a millisecond, far above the pool's wake-up).
  static let gemmSplitOperations = 1 << 22

  /// C = α·op(A)·op(B) + β·C for tensors read as matrices `[rows, last]` (see `Shape.rows`).
  ///
  /// - Parameters:
  ///   - a: m×k, or k×m when `transposeA`.
  ///   - b: k×n, or n×k when `transposeB`.
  ///   - c: the m×n result; with β ≠ 0 its contents are accumulated into.
  public func matmul(
    _ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
    alpha: Float = 1, beta: Float = 0, into c: Tensor
  ) {
    let (aRows, aColumns) = (a.shape.rows, a.shape.last)
    let (bRows, bColumns) = (b.shape.rows, b.shape.last)
    let m = transposeA ? aColumns : aRows
    let k = transposeA ? aRows : aColumns
    let n = transposeB ? bRows : bColumns
    precondition((transposeB ? bColumns : bRows) == k, "matmul inner sizes: \(a.shape) · \(b.shape)")
    precondition(c.shape.rows == m && c.shape.last == n, "matmul result \(c.shape), need \(m)×\(n)")
    gemm(
      transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
      a: a.pointer, lda: aColumns, b: b.pointer, ldb: bColumns, beta: beta, c: c.pointer, ldc: n)
  }

  /// A linear layer y = x·Wᵀ + b for a weight stored `[out, in]` (PyTorch's `nn.Linear`).
  ///
  /// - Parameters:
  ///   - x: `[…, in]`, read as rows of `in` features.
  ///   - weight: `[out, in]`.
  ///   - bias: `[out]`, or nil.
  ///   - output: `[…, out]` with as many rows as `x`; must not overlap `x`.
  ///   - accumulate: when true, adds the result to `output` (y += x·Wᵀ + b), which fuses a
  ///     residual connection into the layer.
  public func linear(
    _ x: Tensor, weight: Tensor, bias: Tensor? = nil, into output: Tensor, accumulate: Bool = false
  ) {
    linear(x, weight: WeightView(weight), bias: bias, into: output, accumulate: accumulate)
  }

  /// `linear` with a weight that may live outside tensor storage (see `WeightView`).
  public func linear(
    _ x: Tensor, weight: WeightView, bias: Tensor? = nil, into output: Tensor, accumulate: Bool = false
  ) {
    let profiling = startProfiling()
    defer { finishProfiling(profiling, .linear, shape: "\(x.shape.rows)×\(weight.shape[1])→\(weight.shape[0])") }
    precondition(weight.shape.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
    let (outFeatures, inFeatures) = (weight.shape[0], weight.shape[1])
    precondition(x.shape.last == inFeatures, "linear input \(x.shape) for weight \(weight.shape)")
    let rows = x.shape.rows
    precondition(
      output.shape.last == outFeatures && output.shape.rows == rows,
      "linear output \(output.shape) for input \(x.shape) and weight \(weight.shape)")
    if let bias { precondition(bias.count == outFeatures, "linear bias \(bias.shape) for \(outFeatures) outputs") }
    if takesFloat16Weights && inFeatures > 0 {
      gemmOperations += 2 * Double(rows) * Double(outFeatures) * Double(inFeatures)
      linearKernel(x, weight: weight, bias: bias, into: output, accumulate: accumulate)
      return
    }
    var copy: Tensor?
    let weight = weight.float32(keeping: &copy)
    var beta: Float = accumulate ? 1 : 0
    if let bias {
      // Put the bias in first and let gemm accumulate onto it: one pass either way.
      addRowBias(output, bias: bias, accumulate: accumulate)
      beta = 1
    }
    gemm(
      transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures,
      a: x.pointer, lda: inFeatures, b: weight.pointer, ldb: inFeatures, beta: beta,
      c: output.pointer, ldc: outFeatures)
    withExtendedLifetime(copy) {}
  }

  /// Whether `linear` takes `.float16` weight views as they are (the AVX-512 kernel widens while it
  /// packs); elsewhere a half-float view is widened into a temporary copy first, so callers
  /// holding half floats widen them themselves where this is false.
  public var takesFloat16Weights: Bool {
    usesLinearKernel && ComputeContext.hasLinearKernel && !usesReferenceKernels
  }

  /// A linear layer through the AVX-512 kernel: the output features are split into one range of
  /// whole 64-feature panels per thread, or, where there are fewer panels than threads, the rows
  /// are. Every output is the same chain of multiply-adds in any split or batch (`tk_linear`).
  private func linearKernel(_ x: Tensor, weight: WeightView, bias: Tensor?, into output: Tensor, accumulate: Bool) {
    let (outFeatures, inFeatures) = (weight.shape[0], weight.shape[1])
    let rows = x.shape.rows
    guard rows > 0, outFeatures > 0 else { return }
    let panelFeatures = tk_linear_panel_features()
    let panels = (outFeatures + panelFeatures - 1) / panelFeatures
    // A small product runs on the calling thread: waking the pool would cost more.
    let threads = rows * outFeatures * inFeatures >= ComputeContext.gemmSplitOperations ? pool.threadCount : 1
    let splitsFeatures = panels >= threads
    let featuresPerThread = splitsFeatures ? (panels + threads - 1) / threads * panelFeatures : outFeatures
    let scratchFloats = (tk_linear_workspace_floats(featuresPerThread, inFeatures) + 15) / 16 * 16
    let aligned = workspace.alignedBuffer(threads * scratchFloats)
    pool.forEachChunk(threads) { workers in
      for worker in workers {
        var (firstRow, endRow, firstFeature, endFeature) = (0, rows, 0, outFeatures)
        if splitsFeatures {
          firstFeature = Swift.min(outFeatures, panels * worker / threads * panelFeatures)
          endFeature = Swift.min(outFeatures, panels * (worker + 1) / threads * panelFeatures)
        } else {
          (firstRow, endRow) = (rows * worker / threads, rows * (worker + 1) / threads)
        }
        guard firstRow < endRow, firstFeature < endFeature else { continue }
        tk_linear(
          x.pointer, inFeatures, firstRow, endRow, inFeatures, weight.address, weight.kernelFormat, outFeatures,
          firstFeature,
          endFeature, bias?.pointer, accumulate ? 1 : 0, aligned + worker * scratchFloats, output.pointer,
          outFeatures)
      }
    }
  }

  /// output[r, :] = (accumulate ? output[r, :] : 0) + bias for every row r.
  func addRowBias(_ output: Tensor, bias: Tensor, accumulate: Bool) {
    let columns = output.shape.last
    let rows = output.shape.rows
    let destination = output.pointer, source = bias.pointer
    if usesReferenceKernels {
      for row in 0..<rows {
        for column in 0..<columns {
          let base = accumulate ? destination[row * columns + column] : 0
          destination[row * columns + column] = base + source[column]
        }
      }
      return
    }
    pool.forEachChunk(rows, minimumChunk: Swift.max(1, 16384 / Swift.max(columns, 1))) { range in
      for row in range {
        let line = destination + row * columns
        if accumulate {
          for column in 0..<columns { line[column] += source[column] }
        } else {
          line.update(from: source, count: columns)
        }
      }
    }
  }
}
