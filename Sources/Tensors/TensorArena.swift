/// A stack allocator for activation tensors: tensors are cut from large blocks and given back in
/// bulk with `release(to:)` (or `reset()`), so a loop that makes the same requests in the same order
/// every iteration allocates memory only on its first pass.
///
/// ```swift
/// let arena = TensorArena()
/// for step in steps {
///   arena.reset()
///   let h = arena.tensor([2, 320, 128, 128])
///   let mark = arena.mark()
///   let scratch = arena.tensor([2, 640, 64, 64])   // temporary
///   …
///   arena.release(to: mark)                        // scratch's memory is reused after this
/// }
/// ```
/// Tensors handed out stay valid memory (their block is retained) but their contents may be
/// overwritten once the arena is released below them. Not thread-safe.
public final class TensorArena {
  /// Blocks are at least this many floats (64 MB) unless a request needs a larger one.
  public let minimumBlockCapacity: Int
  private var blocks: [TensorStorage] = []
  private var blockIndex = 0
  private var used = 0
  /// The largest number of floats ever handed out at once (for sizing reports).
  public private(set) var peakCount = 0
  private var liveCount = 0

  /// A position in the arena, returned by `mark()`.
  public struct Mark: Sendable {
    fileprivate let blockIndex: Int
    fileprivate let used: Int
    fileprivate let liveCount: Int
  }

  /// An empty arena; it allocates blocks of at least `minimumBlockCapacity` floats as needed.
  public init(minimumBlockCapacity: Int = 16 << 20) {
    self.minimumBlockCapacity = minimumBlockCapacity
  }

  /// The number of floats the arena holds in all its blocks.
  public var capacity: Int { blocks.reduce(0) { $0 + $1.capacity } }

  /// A tensor of `shape` from the arena. Its contents are whatever was there before (not zeroed).
  public func tensor(_ shape: Shape) -> Tensor {
    // Round to 16 floats so every tensor starts on a 64-byte boundary.
    let size = (shape.count + 15) & ~15
    while blockIndex < blocks.count {
      if used + size <= blocks[blockIndex].capacity {
        let result = Tensor(storage: blocks[blockIndex], offset: used, shape: shape)
        used += size
        account(size)
        return result
      }
      // A later block may be large enough; the rest of this one stays unused until release.
      if blockIndex + 1 < blocks.count {
        blockIndex += 1
        used = 0
      } else {
        break
      }
    }
    let block = TensorStorage(capacity: Swift.max(size, minimumBlockCapacity))
    blocks.append(block)
    blockIndex = blocks.count - 1
    used = size
    account(size)
    return Tensor(storage: block, offset: 0, shape: shape)
  }

  private func account(_ size: Int) {
    liveCount += size
    peakCount = Swift.max(peakCount, liveCount)
  }

  /// The current position; `release(to:)` it to give back everything handed out after it.
  public func mark() -> Mark { Mark(blockIndex: blockIndex, used: used, liveCount: liveCount) }

  /// Gives back every tensor handed out since `mark` (their memory will be reused).
  public func release(to mark: Mark) {
    blockIndex = mark.blockIndex
    used = mark.used
    liveCount = mark.liveCount
  }

  /// Gives back every tensor (keeps the blocks for reuse).
  public func reset() {
    blockIndex = 0
    used = 0
    liveCount = 0
  }
}

/// Growable scratch memory for kernels that need temporary buffers (im2col bands, attention
/// scores). It grows only when a larger buffer is asked for, so a steady loop never allocates.
/// Not thread-safe: one per `ComputeContext`.
public final class Workspace {
  private var storage = TensorStorage(capacity: 0)

  /// An empty workspace.
  public init() {}

  /// The number of floats currently held.
  public var capacity: Int { storage.capacity }

  /// A buffer of at least `count` floats; valid until the next call. Contents are unspecified.
  public func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
    if storage.capacity < count { storage = TensorStorage(capacity: count) }
    return storage.base
  }

  /// A buffer of at least `count` floats starting on a 64-byte boundary (a cache line, as the
  /// AVX-512 kernels' packed tiles need), whatever the storage's own alignment; valid until the
  /// next call. Contents are unspecified.
  public func alignedBuffer(_ count: Int) -> UnsafeMutablePointer<Float> {
    let base = buffer(count + 15)
    return base + (16 - (Int(bitPattern: base) / 4) % 16) % 16
  }
}
