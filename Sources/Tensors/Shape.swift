/// The dimensions of a tensor, outermost first, stored inline (no heap allocation) for up to
/// `Shape.maximumRank` dimensions.
///
/// Images use NCHW (`[batch, channels, height, width]`), token sequences `[batch, tokens, channels]`,
/// linear weights `[out, in]` and convolution weights `[out, in, kernelHeight, kernelWidth]`.
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
  /// The largest rank a shape can have.
  public static let maximumRank = 6

  /// The number of dimensions.
  public let rank: Int
  /// The dimensions as an array, outermost first.
  public var dimensions: [Int] { (0..<rank).map { self[$0] } }
  private var d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = 1

  /// A shape from its dimensions. Each must be ≥ 0 and there must be at most `maximumRank`.
  public init(_ dimensions: [Int]) {
    precondition(dimensions.count <= Shape.maximumRank, "rank \(dimensions.count) > \(Shape.maximumRank)")
    precondition(dimensions.allSatisfy { $0 >= 0 }, "negative dimension in \(dimensions)")
    rank = dimensions.count
    for (axis, size) in dimensions.enumerated() { self[axis] = size }
  }

  private init(rank: Int) { self.rank = rank }

  /// The shape without its first dimension (`[2, 4, 8]` → `[4, 8]`).
  public func droppingFirst() -> Shape {
    precondition(rank >= 1, "rank-0 shape has no first dimension")
    var result = Shape(rank: rank - 1)
    for axis in 1..<rank { result[axis - 1] = self[axis] }
    return result
  }

  /// A shape from its dimensions, e.g. `Shape(2, 4, 64, 64)`.
  public init(_ dimensions: Int...) { self.init(dimensions) }

  /// A shape from an array literal, e.g. `[2, 4, 64, 64]`.
  public init(arrayLiteral elements: Int...) { self.init(elements) }

  /// The size of dimension `axis` (0-based, outermost first).
  public subscript(axis: Int) -> Int {
    get {
      precondition(axis >= 0 && axis < rank, "axis \(axis) out of range for rank \(rank)")
      switch axis {
      case 0: return d0
      case 1: return d1
      case 2: return d2
      case 3: return d3
      case 4: return d4
      default: return d5
      }
    }
    set {
      precondition(axis >= 0 && axis < Shape.maximumRank, "axis \(axis) out of range")
      switch axis {
      case 0: d0 = newValue
      case 1: d1 = newValue
      case 2: d2 = newValue
      case 3: d3 = newValue
      case 4: d4 = newValue
      default: d5 = newValue
      }
    }
  }

  /// The number of elements: the product of the dimensions (1 for rank 0).
  public var count: Int {
    var product = 1
    for axis in 0..<rank { product *= self[axis] }
    return product
  }

  /// The size of the last dimension (1 for rank 0).
  public var last: Int { rank == 0 ? 1 : self[rank - 1] }

  /// The product of all dimensions but the last: the number of rows when the tensor is read as a
  /// matrix `[rows, last]`.
  public var rows: Int { rank == 0 ? 1 : (last == 0 ? 0 : count / last) }

  /// The dimensions as an array.
  public var dimensions: [Int] { (0..<rank).map { self[$0] } }

  /// `[2, 4, 64, 64]`.
  public var description: String { "[" + dimensions.map(String.init).joined(separator: ", ") + "]" }

  public static func == (lhs: Shape, rhs: Shape) -> Bool {
    guard lhs.rank == rhs.rank else { return false }
    for axis in 0..<lhs.rank where lhs[axis] != rhs[axis] { return false }
    return true
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(rank)
    for axis in 0..<rank { hasher.combine(self[axis]) }
  }
}
