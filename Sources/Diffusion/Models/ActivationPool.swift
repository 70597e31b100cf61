import Tensors

/// Reusable storage for large activations whose lifetimes overlap in no stack-like order (a block's
/// input dies after its output is born), as a caching allocator does: a released block goes on a
/// free list and serves the next request it is large enough for.
///
/// A request that no free block fits drops the free blocks that are too small before allocating, so
/// memory held stays close to the largest live set (activations only grow through a decoder and
/// only shrink through an encoder). A second pass with the same shapes allocates nothing. Not
/// thread-safe.
final class ActivationPool {
  private var free: [TensorStorage] = []
  /// How many blocks were allocated since creation (a repeated pass should not add any).
  private(set) var allocationCount = 0
  /// Floats currently held, free and in use.
  private(set) var heldCount = 0
  /// The most floats ever held at once.
  private(set) var peakHeldCount = 0

  /// A tensor of `shape` on a block taken from the pool; hand it back with `release(_:)`.
  /// Its contents are unspecified.
  func tensor(_ shape: Shape) -> Tensor {
    let count = shape.count
    var best: Int? = nil
    for (index, block) in free.enumerated() where block.capacity >= count {
      if best.map({ block.capacity < free[$0].capacity }) ?? true { best = index }
    }
    if let best {
      return Tensor(storage: free.remove(at: best), offset: 0, shape: shape)
    }
    // Nothing fits: the blocks too small for this request are unlikely to fit later ones.
    for block in free { heldCount -= block.capacity }
    free.removeAll()
    let block = TensorStorage(capacity: count)
    allocationCount += 1
    heldCount += count
    peakHeldCount = max(peakHeldCount, heldCount)
    return Tensor(storage: block, offset: 0, shape: shape)
  }

  /// Gives `tensor`'s block back to the pool; the tensor must not be used afterwards.
  func release(_ tensor: Tensor) {
    precondition(tensor.offset == 0, "only whole pool blocks can be released")
    precondition(!free.contains { $0 === tensor.storage }, "block released twice")
    free.append(tensor.storage)
  }

  /// Frees every block not in use.
  func trim() {
    for block in free { heldCount -= block.capacity }
    free.removeAll()
  }
}
