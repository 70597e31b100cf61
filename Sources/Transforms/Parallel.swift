import Workers

/// Splits `0..<count` into one contiguous range per thread of the shared pool (`--threads`) and
/// runs `body` on them concurrently; small counts run inline (threads cost more than they save
/// below ~64 Ki elements). Must not be called from inside another job of the shared pool.
@inline(__always)
func parallelRanges(_ count: Int, _ body: (Range<Int>) -> Void) {
  guard count >= 1 << 16 else {
    body(0..<count)
    return
  }
  ThreadPool.shared.forEachChunk(count, body)
}
