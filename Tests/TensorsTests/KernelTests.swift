import Foundation
import TestSupport
import Testing

@testable import Tensors

/// Each optimised kernel against its reference loop (NMSE ≤ 1e-10 for exact element-wise work,
/// ≤ 1e-8 where gemm or vector transcendental functions are involved).
@Suite struct KernelTests {
  struct GemmCase: CustomStringConvertible, Sendable {
    let transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int
    var description: String { "\(transposeA ? "T" : "N")\(transposeB ? "T" : "N") \(m)×\(n)×\(k)" }
  }

  @Test(arguments: [
    GemmCase(transposeA: false, transposeB: false, m: 17, n: 33, k: 65),
    GemmCase(transposeA: true, transposeB: false, m: 31, n: 9, k: 40),
    GemmCase(transposeA: false, transposeB: true, m: 64, n: 48, k: 77),
    GemmCase(transposeA: true, transposeB: true, m: 5, n: 70, k: 19),
  ])
  func gemm(_ shape: GemmCase) {
    let a = randomTensor(shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k], seed: 1)
    let b = randomTensor(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n], seed: 2)
    let initial = randomTensor([shape.m, shape.n], seed: 3)
    let (c1, c2) = (clone(initial), clone(initial))
    fast.matmul(a, b, transposeA: shape.transposeA, transposeB: shape.transposeB, alpha: 0.7, beta: 0.3, into: c1)
    reference.matmul(a, b, transposeA: shape.transposeA, transposeB: shape.transposeB, alpha: 0.7, beta: 0.3, into: c2)
    let result = closeness(c1, c2)
    #expect(result.nmse <= 1e-10, "\(result)")
  }

  /// A gemm large enough to be split over the pool gives the same bits as one single-threaded
  /// OpenBLAS call over the whole product, split by columns or by rows, in every transpose.
  @Test(arguments: [
    GemmCase(transposeA: false, transposeB: true, m: 300, n: 1000, k: 100),  // columns
    GemmCase(transposeA: true, transposeB: false, m: 1100, n: 200, k: 70),  // rows
    GemmCase(transposeA: false, transposeB: false, m: 129, n: 777, k: 130),
    GemmCase(transposeA: true, transposeB: true, m: 900, n: 150, k: 90),
  ])
  func splitGemmGivesTheSameBits(_ shape: GemmCase) {
    let pool = ThreadPool(threadCount: 3)
    let context = ComputeContext(pool: pool)
    #expect(context.gemmParts(m: shape.m, n: shape.n, k: shape.k) > 1, "\(shape) is split")
    let a = randomTensor(shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k], seed: 40)
    let b = randomTensor(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n], seed: 41)
    let initial = randomTensor([shape.m, shape.n], seed: 42)
    let (split, whole) = (clone(initial), clone(initial))
    let (lda, ldb) = (shape.transposeA ? shape.m : shape.k, shape.transposeB ? shape.k : shape.n)
    context.gemm(
      transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k, alpha: 0.7,
      a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: 0.3, c: split.pointer, ldc: shape.n)
    context.uncountedGemm(
      transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k, alpha: 0.7,
      a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: 0.3, c: whole.pointer, ldc: shape.n, parallel: false)
    #expect(split.scalars == whole.scalars)
    #expect(ComputeContext.blasThreadCount == 1, "OpenBLAS stays single-threaded under the pool")
    let expected = clone(initial)
    reference.gemm(
      transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k, alpha: 0.7,
      a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: 0.3, c: expected.pointer, ldc: shape.n)
    #expect(closeness(split, expected).nmse <= 1e-10)
  }

  @Test func stridedGemmAddressesOneHead() {
    // Columns 8..<16 of a [10, 24] matrix times the same columns of a [12, 24] one, transposed.
    let q = randomTensor([10, 24], seed: 4), k = randomTensor([12, 24], seed: 5)
    let c1 = Tensor(zeros: [10, 12]), c2 = Tensor(zeros: [10, 12])
    for (context, c) in [(fast, c1), (reference, c2)] {
      context.gemm(
        transposeA: false, transposeB: true, m: 10, n: 12, k: 8, a: q.pointer + 8, lda: 24,
        b: k.pointer + 8, ldb: 24, c: c.pointer, ldc: 12)
    }
    var naive = [Float](repeating: 0, count: 120)
    for i in 0..<10 { for j in 0..<12 { for d in 8..<16 { naive[i * 12 + j] += q[i, d] * k[j, d] } } }
    #expect(closeness(c1, c2).nmse <= 1e-10)
    #expect(Closeness(c2.scalars, naive).nmse <= 1e-10)
  }

  @Test(arguments: [false, true])
  func linear(accumulate: Bool) {
    let x = randomTensor([2, 7, 96], seed: 6), weight = randomTensor([40, 96], seed: 7, scale: 0.1)
    let bias = randomTensor([40], seed: 8)
    let initial = randomTensor([2, 7, 40], seed: 9)
    let (y1, y2) = (clone(initial), clone(initial))
    fast.linear(x, weight: weight, bias: bias, into: y1, accumulate: accumulate)
    reference.linear(x, weight: weight, bias: bias, into: y2, accumulate: accumulate)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
    let (z1, z2) = (clone(initial), clone(initial))
    fast.linear(x, weight: weight, into: z1, accumulate: accumulate)
    reference.linear(x, weight: weight, into: z2, accumulate: accumulate)
    #expect(closeness(z1, z2).nmse <= 1e-10, "\(closeness(z1, z2))")
  }

  struct ConvCase: CustomStringConvertible, Sendable {
    let batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int
    let kernel: Int, stride: Int, padding: Int, bias: Bool, accumulate: Bool, budget: Int
    var description: String {
      "\(batch)×\(inChannels)×\(height)×\(width) → \(outChannels), k\(kernel) s\(stride) p\(padding)"
        + "\(bias ? " bias" : "")\(accumulate ? " accumulate" : "") budget \(budget)"
    }
  }

  @Test(arguments: [
    ConvCase(
      batch: 2, inChannels: 5, outChannels: 7, height: 9, width: 11, kernel: 3, stride: 1, padding: 1, bias: true,
      accumulate: false, budget: 1 << 20),
    ConvCase(
      batch: 1, inChannels: 6, outChannels: 4, height: 10, width: 9, kernel: 3, stride: 2, padding: 1, bias: true,
      accumulate: false, budget: 1 << 20),
    ConvCase(
      batch: 2, inChannels: 3, outChannels: 8, height: 12, width: 7, kernel: 3, stride: 1, padding: 1, bias: false,
      accumulate: true, budget: 100),
    ConvCase(
      batch: 1, inChannels: 4, outChannels: 6, height: 8, width: 8, kernel: 3, stride: 2, padding: 1, bias: true,
      accumulate: true, budget: 50),
    ConvCase(
      batch: 2, inChannels: 8, outChannels: 5, height: 6, width: 5, kernel: 1, stride: 1, padding: 0, bias: true,
      accumulate: false, budget: 1 << 20),
    ConvCase(
      batch: 1, inChannels: 8, outChannels: 5, height: 6, width: 5, kernel: 1, stride: 1, padding: 0, bias: true,
      accumulate: true, budget: 1 << 20),
    ConvCase(
      batch: 1, inChannels: 3, outChannels: 2, height: 7, width: 6, kernel: 3, stride: 1, padding: 0, bias: true,
      accumulate: false, budget: 1 << 20),
    ConvCase(
      batch: 1, inChannels: 2, outChannels: 3, height: 5, width: 6, kernel: 5, stride: 1, padding: 3, bias: true,
      accumulate: false, budget: 1 << 20),
    ConvCase(
      batch: 1, inChannels: 2, outChannels: 3, height: 4, width: 4, kernel: 1, stride: 2, padding: 0, bias: false,
      accumulate: false, budget: 1 << 20),
  ])
  func conv2d(_ c: ConvCase) {
    let x = randomTensor([c.batch, c.inChannels, c.height, c.width], seed: 10)
    let weight = randomTensor([c.outChannels, c.inChannels, c.kernel, c.kernel], seed: 11, scale: 0.3)
    let bias = c.bias ? randomTensor([c.outChannels], seed: 12) : nil
    let shape = ComputeContext.conv2dOutputShape(
      input: x.shape, weight: weight.shape, stride: c.stride, padding: c.padding)
    let initial = randomTensor(shape, seed: 13)
    let (y1, y2) = (clone(initial), clone(initial))
    let context = ComputeContext(pool: fast.pool)
    context.im2colBudget = c.budget
    context.conv2d(
      x, weight: weight, bias: bias, stride: c.stride, padding: c.padding, into: y1, accumulate: c.accumulate)
    reference.conv2d(
      x, weight: weight, bias: bias, stride: c.stride, padding: c.padding, into: y2, accumulate: c.accumulate)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
  }

  @Test(arguments: [FusedActivation.none, .silu])
  func groupNorm(activation: FusedActivation) {
    // Offset data (mean 3) checks that the variance is not taken as E[x²] − E[x]².
    let x = randomTensor([2, 64, 5, 7], seed: 14)
    fast.scale(x, by: 1, into: x)
    for index in 0..<x.count { x.pointer[index] += 3 }
    let weight = randomTensor([64], seed: 15), bias = randomTensor([64], seed: 16)
    let (y1, y2) = (Tensor(zeros: x.shape), Tensor(zeros: x.shape))
    fast.groupNorm(x, groups: 32, epsilon: 1e-5, weight: weight, bias: bias, activation: activation, into: y1)
    reference.groupNorm(x, groups: 32, epsilon: 1e-5, weight: weight, bias: bias, activation: activation, into: y2)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
    // In place, 1e-6, no affine.
    let inPlace = clone(x)
    fast.groupNorm(inPlace, groups: 32, epsilon: 1e-6, weight: nil, bias: nil, activation: activation, into: inPlace)
    reference.groupNorm(x, groups: 32, epsilon: 1e-6, weight: nil, bias: nil, activation: activation, into: y2)
    #expect(closeness(inPlace, y2).nmse <= 1e-10, "\(closeness(inPlace, y2))")
  }

  @Test func layerNorm() {
    let x = randomTensor([3, 11, 77], seed: 17, scale: 4)
    let weight = randomTensor([77], seed: 18), bias = randomTensor([77], seed: 19)
    let (y1, y2) = (Tensor(zeros: x.shape), Tensor(zeros: x.shape))
    fast.layerNorm(x, epsilon: 1e-5, weight: weight, bias: bias, into: y1)
    reference.layerNorm(x, epsilon: 1e-5, weight: weight, bias: bias, into: y2)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
  }

  @Test(arguments: ["silu", "gelu", "quickGELU"])
  func activation(_ name: String) {
    // Wide range, odd count (vector tail), values far into both saturated ends.
    let x = randomTensor([40_003], seed: 20, scale: 6)
    x.pointer[0] = -100
    x.pointer[1] = 100
    x.pointer[2] = 0
    let (y1, y2) = (Tensor(zeros: x.shape), Tensor(zeros: x.shape))
    for (context, y) in [(fast, y1), (reference, y2)] {
      switch name {
      case "silu": context.silu(x, into: y)
      case "gelu": context.gelu(x, into: y)
      default: context.quickGELU(x, into: y)
      }
    }
    let result = closeness(y1, y2)
    #expect(result.nmse <= 1e-10 && result.maxAbs <= 1e-5, "\(result)")
    #expect(y1[1] == 100 && y1[0] == 0, "saturated ends \(y1[0]), \(y1[1])")
  }

  @Test func geglu() {
    let x = randomTensor([3, 5, 2 * 37], seed: 21, scale: 3)
    let (y1, y2) = (Tensor(zeros: [3, 5, 37]), Tensor(zeros: [3, 5, 37]))
    fast.geglu(x, into: y1)
    reference.geglu(x, into: y2)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
  }

  @Test func softmax() {
    let x = randomTensor([13, 301], seed: 22, scale: 20)
    x.pointer[5] = 1e4  // one dominant score: everything else underflows to 0
    let (y1, y2) = (Tensor(zeros: x.shape), Tensor(zeros: x.shape))
    fast.softmax(x, into: y1)
    reference.softmax(x, into: y2)
    #expect(closeness(y1, y2).nmse <= 1e-10, "\(closeness(y1, y2))")
    #expect(y1[0, 5] == 1)
    fast.softmax(x, into: x)
    #expect(closeness(x, y2).nmse <= 1e-10)
  }

  struct AttentionCase: CustomStringConvertible, Sendable {
    let batch: Int, queryTokens: Int, keyTokens: Int, channels: Int, valueChannels: Int
    let heads: Int, sharedKeys: Bool, causal: Bool, tile: [Int]
    var description: String {
      "\(batch)×\(queryTokens)×\(channels) over \(keyTokens) keys, \(heads) heads"
        + "\(sharedKeys ? " shared K/V" : "")\(causal ? " causal" : "") tile \(tile[0])×\(tile[1])"
    }

    /// Q, K, V of this case: seeds `seed`, `seed + 1`, `seed + 2`; Q and K scaled by `scale`.
    func inputs(seed: UInt64, scale: Float = 1) -> (query: Tensor, key: Tensor, value: Tensor) {
      let kvBatch = sharedKeys ? 1 : batch
      return (
        randomTensor([batch, queryTokens, channels], seed: seed, scale: scale),
        randomTensor([kvBatch, keyTokens, channels], seed: seed + 1, scale: scale),
        randomTensor([kvBatch, keyTokens, valueChannels], seed: seed + 2)
      )
    }
  }

  @Test(arguments: [
    AttentionCase(
      batch: 2, queryTokens: 37, keyTokens: 37, channels: 64, valueChannels: 64, heads: 4, sharedKeys: false,
      causal: false, tile: [128, 512]),
    AttentionCase(
      batch: 2, queryTokens: 50, keyTokens: 11, channels: 48, valueChannels: 48, heads: 3, sharedKeys: false,
      causal: false, tile: [7, 4]),
    AttentionCase(
      batch: 3, queryTokens: 20, keyTokens: 9, channels: 32, valueChannels: 16, heads: 2, sharedKeys: true,
      causal: false, tile: [128, 512]),
    AttentionCase(
      batch: 1, queryTokens: 77, keyTokens: 77, channels: 40, valueChannels: 40, heads: 5, sharedKeys: false,
      causal: true, tile: [10, 16]),
    AttentionCase(
      batch: 1, queryTokens: 33, keyTokens: 33, channels: 24, valueChannels: 24, heads: 1, sharedKeys: false,
      causal: false, tile: [1, 1]),
    // Key tiles that split the causal triangle; many key tiles (the running maximum moves between them).
    AttentionCase(
      batch: 2, queryTokens: 77, keyTokens: 77, channels: 64, valueChannels: 64, heads: 2, sharedKeys: false,
      causal: true, tile: [16, 8]),
    AttentionCase(
      batch: 1, queryTokens: 300, keyTokens: 1100, channels: 128, valueChannels: 128, heads: 2, sharedKeys: false,
      causal: false, tile: [128, 512]),
  ])
  func attention(_ c: AttentionCase) {
    let (q, k, v) = c.inputs(seed: 23)
    let (o1, o2) = (
      Tensor(zeros: [c.batch, c.queryTokens, c.valueChannels]),
      Tensor(zeros: [c.batch, c.queryTokens, c.valueChannels])
    )
    let context = ComputeContext(pool: fast.pool)
    context.attentionTile = (c.tile[0], c.tile[1])
    context.attention(query: q, key: k, value: v, headCount: c.heads, causal: c.causal, into: o1)
    reference.attention(query: q, key: k, value: v, headCount: c.heads, causal: c.causal, into: o2)
    #expect(closeness(o1, o2).nmse <= 1e-10, "\(closeness(o1, o2))")
  }

  /// The AVX-512 kernel for head dimension 64 (`usesAttentionKernel`) and the gemm-based form,
  /// each against the reference: row and key tails of every register tile (1–6 rows, 1–4 panels
  /// of 16 keys, partial panels), CLIP's 77 keys shared by a batch, and many key tiles.
  @Test(arguments: [
    AttentionCase(
      batch: 2, queryTokens: 37, keyTokens: 77, channels: 128, valueChannels: 128, heads: 2, sharedKeys: true,
      causal: false, tile: [7, 20]),
    AttentionCase(
      batch: 1, queryTokens: 130, keyTokens: 130, channels: 64, valueChannels: 64, heads: 1, sharedKeys: false,
      causal: false, tile: [96, 128]),
    AttentionCase(
      batch: 3, queryTokens: 11, keyTokens: 1, channels: 192, valueChannels: 192, heads: 3, sharedKeys: false,
      causal: false, tile: [5, 16]),
    AttentionCase(
      batch: 1, queryTokens: 200, keyTokens: 1100, channels: 64, valueChannels: 64, heads: 1, sharedKeys: false,
      causal: false, tile: [64, 48]),
    AttentionCase(
      batch: 2, queryTokens: 6, keyTokens: 64, channels: 64, valueChannels: 64, heads: 1, sharedKeys: false,
      causal: false, tile: [1, 64]),
  ])
  func attentionKernel(_ c: AttentionCase) {
    let (q, k, v) = c.inputs(seed: 31, scale: 3)
    let expected = Tensor(zeros: [c.batch, c.queryTokens, c.valueChannels])
    reference.attention(query: q, key: k, value: v, headCount: c.heads, into: expected)
    for kernel in [true, false] {
      let output = Tensor(zeros: expected.shape)
      let context = ComputeContext(pool: fast.pool)
      context.usesAttentionKernel = kernel
      context.attentionKernelTile = (c.tile[0], c.tile[1])
      context.attentionTile = (c.tile[0], c.tile[1])
      context.attention(query: q, key: k, value: v, headCount: c.heads, into: output)
      #expect(closeness(output, expected).nmse <= 1e-10, "kernel \(kernel): \(closeness(output, expected))")
      // The work is counted once per call, whichever threads ran it.
      let products = 2 * Double(c.batch * c.heads * c.queryTokens * c.keyTokens)
      #expect(context.gemmOperations == products * Double((c.channels + c.valueChannels) / c.heads))
    }
  }

  /// A sample's attention gives the same bits alone as in a batch, in any query block size: the
  /// batched renders of `verify` rely on it.
  @Test func attentionKernelGivesEachSampleItsOwnBits() {
    let q = randomTensor([3, 150, 128], seed: 34, scale: 3), k = randomTensor([3, 150, 128], seed: 35, scale: 3)
    let v = randomTensor([3, 150, 128], seed: 36)
    let batched = Tensor(zeros: [3, 150, 128])
    fast.attention(query: q, key: k, value: v, headCount: 2, into: batched)
    for (sample, rows) in [(0, 96), (1, 7), (2, 1)] {
      let context = ComputeContext(pool: fast.pool)
      context.attentionKernelTile.queries = rows
      let one = { (t: Tensor) in
        Tensor(shape: [1, 150, 128], values: Array(t.scalars[sample * 150 * 128..<(sample + 1) * 150 * 128]))
      }
      let alone = Tensor(zeros: [1, 150, 128])
      context.attention(query: one(q), key: one(k), value: one(v), headCount: 2, into: alone)
      #expect(alone.scalars == one(batched).scalars, "sample \(sample), blocks of \(rows) rows")
    }
  }

  /// A NaN in one query row makes that row NaN and leaves the others finite (health checks look for it).
  @Test func attentionKernelKeepsNaN() {
    let q = randomTensor([1, 20, 64], seed: 37), k = randomTensor([1, 40, 64], seed: 38)
    let v = randomTensor([1, 40, 64], seed: 39)
    q.pointer[5 * 64 + 3] = .nan
    let output = Tensor(zeros: [1, 20, 64])
    fast.attention(query: q, key: k, value: v, headCount: 1, into: output)
    for row in 0..<20 {
      let values = output.scalars[row * 64..<(row + 1) * 64]
      #expect(values.allSatisfy { row == 5 ? $0.isNaN : $0.isFinite }, "row \(row)")
    }
  }

  /// The kernel is in use wherever the CPU reports AVX-512F (read here from /proc/cpuinfo, not
  /// from the compiler's runtime check the kernel uses).
  @Test func attentionKernelRunsWhereTheCPUHasAVX512() throws {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
      let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return }
    let hasAVX512 = flags.split(separator: " ").contains("avx512f")
    #expect(ComputeContext.hasAttentionKernel == hasAVX512)
  }

  @Test func layout() {
    let x = randomTensor([2, 3, 5, 7], seed: 26)
    let (u1, u2) = (Tensor(zeros: [2, 3, 10, 14]), Tensor(zeros: [2, 3, 10, 14]))
    fast.upsampleNearest2x(x, into: u1)
    reference.upsampleNearest2x(x, into: u2)
    #expect(u1.scalars == u2.scalars)

    let skip = randomTensor([2, 4, 5, 7], seed: 27)
    let (c1, c2) = (Tensor(zeros: [2, 7, 5, 7]), Tensor(zeros: [2, 7, 5, 7]))
    fast.concatenate(x, skip, axis: 1, into: c1)
    reference.concatenate(x, skip, axis: 1, into: c2)
    #expect(c1.scalars == c2.scalars)
    #expect(c1[1, 2, 4, 6] == x[1, 2, 4, 6] && c1[1, 3, 4, 6] == skip[1, 0, 4, 6])

    let left = randomTensor([2, 77, 12], seed: 28), right = randomTensor([2, 77, 20], seed: 29)
    let context = Tensor(zeros: [2, 77, 32])
    fast.concatenate(left, right, axis: 2, into: context)
    #expect(context[1, 76, 11] == left[1, 76, 11] && context[1, 76, 12] == right[1, 76, 0])

    let matrix = randomTensor([3, 45, 70], seed: 30)
    let (t1, t2) = (Tensor(zeros: [3, 70, 45]), Tensor(zeros: [3, 70, 45]))
    fast.transposeLastTwo(matrix, into: t1)
    reference.transposeLastTwo(matrix, into: t2)
    #expect(t1.scalars == t2.scalars && t1[2, 69, 44] == matrix[2, 44, 69])
  }

  @Test func elementwise() {
    let a = randomTensor([2, 6, 33], seed: 31), b = randomTensor([2, 6, 33], seed: 32)
    let out = Tensor(zeros: a.shape)
    fast.add(a, b, into: out)
    #expect(out[1, 5, 32] == a[1, 5, 32] + b[1, 5, 32])
    fast.multiply(a, b, into: out)
    #expect(out[0, 3, 7] == a[0, 3, 7] * b[0, 3, 7])
    fast.addScaled(a, b, scale: -0.5, into: out)
    #expect(out[1, 0, 0] == a[1, 0, 0] + -0.5 * b[1, 0, 0])
    fast.scale(a, by: 3, into: out)
    #expect(out[0, 0, 1] == 3 * a[0, 0, 1])

    let perChannel = randomTensor([6], seed: 33), perSample = randomTensor([2, 6], seed: 34)
    let (r1, r2) = (Tensor(zeros: a.shape), Tensor(zeros: a.shape))
    for bias in [perChannel, perSample] {
      fast.addChannelBias(a, bias: bias, into: r1)
      reference.addChannelBias(a, bias: bias, into: r2)
      #expect(r1.scalars == r2.scalars)
    }
    #expect(r1[1, 4, 9] == a[1, 4, 9] + perSample[1, 4])
    fast.addChannelBias(a, bias: perChannel, into: a)
    #expect(a[1, 4, 9] == r2[1, 4, 9] - perSample[1, 4] + perChannel[4])
  }
}
