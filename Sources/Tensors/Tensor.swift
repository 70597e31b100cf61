#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
/// Memory for tensors: a 64-byte aligned block of `Float`s, freed when the last tensor using it goes.
public final class TensorStorage: @unchecked Sendable {
  /// The first element.
  public let base: UnsafeMutablePointer<Float>
  /// The number of `Float`s in the block.
  public let capacity: Int

  /// A zero-filled block of `capacity` floats.
  public init(capacity: Int) {
    precondition(capacity >= 0, "negative capacity")
    self.capacity = capacity
    // 64-byte alignment keeps AVX loads and OpenBLAS packing on cache-line boundaries.
    let raw = UnsafeMutableRawPointer.allocate(
      byteCount: Swift.max(capacity, 1) * MemoryLayout<Float>.stride, alignment: 64)
    base = raw.bindMemory(to: Float.self, capacity: Swift.max(capacity, 1))
    base.initialize(repeating: 0, count: Swift.max(capacity, 1))
  }

  deinit { UnsafeMutableRawPointer(base).deallocate() }

  /// Gives the memory pages lying wholly inside floats `range` back to the system (resident memory
  /// drops; they read as zeros when next touched). For blocks whose contents are dead but which are
  /// kept for reuse.
  public func discardPages(_ range: Range<Int>) {
    precondition(range.lowerBound >= 0 && range.upperBound <= capacity, "discardPages \(range) of \(capacity)")
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: base + range.lowerBound) + page - 1) / page * page
    let end = Int(bitPattern: base + range.upperBound) / page * page
    guard end > start, let address = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(address, end - start, Int32(MADV_DONTNEED))
  }
}

/// A dense, contiguous, row-major Float32 tensor (a shape and a window on shared storage).
///
/// `Tensor` has reference semantics, like a PyTorch tensor: copies of a `Tensor` value, and views
/// made with `reshaped(_:)`, `batch(_:)` or `view(offset:shape:)`, share their storage, and kernels
/// write their results into an `into:` tensor the caller owns. This lets a step loop preallocate
/// every buffer once (directly or from a `TensorArena`) and then run without allocating.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
  /// The storage this tensor is a window on.
  public let storage: TensorStorage
  /// Where the tensor starts in `storage`, in elements.
  public let offset: Int
  /// The dimensions, outermost first.
  public let shape: Shape

  /// A new zero-filled tensor with its own storage.
  public init(zeros shape: Shape) {
    self.init(storage: TensorStorage(capacity: shape.count), offset: 0, shape: shape)
  }

  /// A new tensor holding `values` (row-major); `values.count` must equal `shape.count`.
  public init(shape: Shape, values: [Float]) {
    precondition(values.count == shape.count, "\(values.count) values for shape \(shape)")
    self.init(zeros: shape)
    values.withUnsafeBufferPointer { source in
      if let address = source.baseAddress { pointer.update(from: address, count: values.count) }
    }
  }

  /// A new tensor with every element set to `value`.
  public init(shape: Shape, repeating value: Float) {
    self.init(zeros: shape)
    fill(value)
  }

  /// A tensor over `shape.count` elements of `storage` starting at `offset`.
  public init(storage: TensorStorage, offset: Int, shape: Shape) {
    precondition(
      offset >= 0 && offset + shape.count <= storage.capacity,
      "window \(offset)+\(shape.count) outside storage of \(storage.capacity)")
    self.storage = storage
    self.offset = offset
    self.shape = shape
  }

  /// The number of elements.
  @inlinable public var count: Int { shape.count }

  /// The first element. Valid while this tensor (or its storage) is alive.
  @inlinable public var pointer: UnsafeMutablePointer<Float> { storage.base + offset }

  /// The same elements under another shape with the same element count.
  public func reshaped(_ newShape: Shape) -> Tensor {
    precondition(newShape.count == count, "cannot reshape \(shape) to \(newShape)")
    return Tensor(storage: storage, offset: offset, shape: newShape)
  }

  /// A view of `shape.count` elements starting `offset` elements into this tensor.
  public func view(offset elementOffset: Int, shape newShape: Shape) -> Tensor {
    precondition(
      elementOffset >= 0 && elementOffset + newShape.count <= count,
      "view \(elementOffset)+\(newShape.count) outside tensor of \(count)")
    return Tensor(storage: storage, offset: offset + elementOffset, shape: newShape)
  }

  /// The sub-tensor at `index` along the first dimension (its shape drops that dimension).
  public func batch(_ index: Int) -> Tensor {
    precondition(shape.rank >= 1 && index >= 0 && index < shape[0], "index \(index) outside \(shape)")
    let innerShape = shape.droppingFirst()
    return Tensor(storage: storage, offset: offset + index * innerShape.count, shape: innerShape)
  }

  /// The sub-tensor of `range` along the first dimension (its shape keeps the rank).
  public func slice(_ range: Range<Int>) -> Tensor {
    precondition(
      shape.rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
      "range \(range) outside \(shape)")
    var newShape = shape
    newShape[0] = range.count
    let stride = shape[0] == 0 ? 0 : count / shape[0]
    return Tensor(storage: storage, offset: offset + range.lowerBound * stride, shape: newShape)
  }

  /// The elements as an array (allocates; for tests and I/O, not for the step loop).
  public var scalars: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

  /// The element at a full index (slow; for tests).
  public subscript(indices: Int...) -> Float {
    get { pointer[flatIndex(indices)] }
    nonmutating set { pointer[flatIndex(indices)] = newValue }
  }

  private func flatIndex(_ indices: [Int]) -> Int {
    precondition(indices.count == shape.rank, "\(indices.count) indices for \(shape)")
    var flat = 0
    for axis in 0..<shape.rank {
      precondition(indices[axis] >= 0 && indices[axis] < shape[axis], "index \(indices) outside \(shape)")
      flat = flat * shape[axis] + indices[axis]
    }
    return flat
  }

  /// Sets every element to `value`.
  public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

  /// Copies `source` (same element count, not overlapping) into this tensor.
  public func copy(from source: Tensor) {
    precondition(source.count == count, "copy of \(source.shape) into \(shape)")
    pointer.update(from: source.pointer, count: count)
  }

  /// `Tensor [2, 4, 64, 64]`.
  public var description: String { "Tensor \(shape)" }
}
