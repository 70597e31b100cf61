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
  }

  /// The fraction of the squared Frobenius norm the first `rank` values keep (1 for a zero matrix).
  public func retainedEnergy(rank: Int) -> Double {
    let total = singularValues.reduce(0.0) { $0 + Double($1) * Double($1) }
    guard total > 0 else { return 1 }
    return singularValues.prefix(rank).reduce(0.0) { $0 + Double($1) * Double($1) } / total
  }
}
