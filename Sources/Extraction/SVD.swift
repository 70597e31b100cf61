import CBLAS
import Foundation

/// A thin singular value decomposition A = U·diag(S)·Vᵀ of a row-major m×n Float32 matrix,
/// through LAPACK's divide-and-conquer `sgesdd` (OpenBLAS).
public struct SVD: Sendable {
  public let rows: Int
  public let columns: Int
  /// min(m, n) singular values, largest first.
  public let singularValues: [Float]
  /// U, row-major m×k.
  public let u: [Float]
  /// Vᵀ, row-major k×n.
  public let vt: [Float]
  /// ‖A‖²_F (for a truncated decomposition, more than the sum of the kept S²).
  public let totalEnergy: Double

  public var k: Int { singularValues.count }

  /// Decomposes `matrix` (row-major, `rows`×`columns`); nil when LAPACK reports failure (no
  /// convergence, or a matrix with non-finite values).
  public init?(_ matrix: [Float], rows: Int, columns: Int) {
    precondition(matrix.count == rows * columns && rows > 0 && columns > 0, "SVD: bad matrix")
    // A row-major m×n matrix is the column-major n×m matrix Aᵀ. With Aᵀ = U′·S·V′ᵀ,
    // A = V′·S·U′ᵀ: LAPACK's VT′ (column-major k×m) is U row-major m×k, and its U′ (column-major
    // n×k) is Vᵀ row-major k×n — the same bytes.
    var a = matrix
    var m = Int32(columns), n = Int32(rows)
    let k = min(rows, columns)
    var lda = m, ldu = m, ldvt = Int32(k)
    var s = [Float](repeating: 0, count: k)
    var uPrime = [Float](repeating: 0, count: columns * k)
    var vtPrime = [Float](repeating: 0, count: k * rows)
    var iwork = [Int32](repeating: 0, count: 8 * k)
    var info: Int32 = 0
    var jobz = Int8(UInt8(ascii: "S"))
    var lwork: Int32 = -1
    var query: Float = 0
    sgesdd_(&jobz, &m, &n, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &query, &lwork, &iwork, &info, 1)
    guard info == 0 else { return nil }
    lwork = Int32(query.rounded(.up)) + 1
    var work = [Float](repeating: 0, count: Int(lwork))
    sgesdd_(&jobz, &m, &n, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &work, &lwork, &iwork, &info, 1)
    guard info == 0 else { return nil }
    self.rows = rows
    self.columns = columns
    singularValues = s
    u = vtPrime
    vt = uPrime
    totalEnergy = s.reduce(0.0) { $0 + Double($1) * Double($1) }
  }

  init(rows: Int, columns: Int, singularValues: [Float], u: [Float], vt: [Float], totalEnergy: Double) {
    self.rows = rows
    self.columns = columns
    self.singularValues = singularValues
    self.u = u
    self.vt = vt
    self.totalEnergy = totalEnergy
  }

  /// The leading `rank` singular triplets by a randomized range finder (Halko, Martinsson & Tropp
  /// 2011): Y = A·Ω with `rank` + 10 Gaussian columns (seeded), two power iterations with
  /// re-orthonormalisation, then the exact SVD of the small Qᵀ·A. Cost O(m·n·(rank + 10)) instead of
  /// O(m·n·min(m, n)); the kept values are accurate where the spectrum decays past the rank.
  public static func leading(_ matrix: [Float], rows m: Int, columns n: Int, rank: Int, seed: UInt64 = 0x5EED) -> SVD? {
    let l = min(rank + 10, min(m, n))
    var state = seed
    func gaussian() -> Float {
      // SplitMix64 → two uniforms → Box–Muller.
      func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
      }
      let u1 = max(next(), 1e-300), u2 = next()
      return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
    let omega = (0..<(n * l)).map { _ in gaussian() }
    func product(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int, transposeA: Bool = false) -> [Float] {
      var c = [Float](repeating: 0, count: m * n)
      cblas_sgemm(
        CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a,
        Int32(transposeA ? m : k), b, Int32(n), 0, &c, Int32(n))
      return c
    }
    /// An orthonormal basis of the columns of a rows×l matrix (the U of its thin SVD).
    func orthonormal(_ y: [Float], rows: Int) -> [Float]? { SVD(y, rows: rows, columns: l)?.u }
    var y = product(matrix, omega, m: m, k: n, n: l)  // A·Ω, m×l
    for _ in 0..<2 {
      guard let q = orthonormal(y, rows: m) else { return nil }
      let z = product(matrix, q, m: n, k: m, n: l, transposeA: true)  // Aᵀ·Q, n×l
      guard let qz = orthonormal(z, rows: n) else { return nil }
      y = product(matrix, qz, m: m, k: n, n: l)
    }
    guard let q = orthonormal(y, rows: m) else { return nil }
    let b = product(q, matrix, m: l, k: m, n: n, transposeA: true)  // Qᵀ·A, l×n
    guard let small = SVD(b, rows: l, columns: n) else { return nil }
    let u = product(q, small.u, m: m, k: l, n: small.k)  // m×l
    let total = matrix.reduce(0.0) { $0 + Double($1) * Double($1) }
    return SVD(rows: m, columns: n, singularValues: small.singularValues, u: u, vt: small.vt, totalEnergy: total)
  }

  /// The fraction of the squared Frobenius norm the first `rank` values keep (1 for a zero matrix).
  public func retainedEnergy(rank: Int) -> Double {
    guard totalEnergy > 0 else { return 1 }
    return min(1, singularValues.prefix(rank).reduce(0.0) { $0 + Double($1) * Double($1) } / totalEnergy)
  }
}
