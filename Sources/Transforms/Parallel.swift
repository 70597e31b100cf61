import Dispatch
import Foundation

/// Splits `0..<count` into one contiguous range per core and runs `body` on them concurrently;
/// small counts run inline (threads cost more than they save below ~64 Ki elements).
@inline(__always)
func parallelRanges(_ count: Int, _ body: (Range<Int>) -> Void) {
  let workers = min(ProcessInfo.processInfo.activeProcessorCount, 8)
  guard workers > 1, count >= 1 << 16 else {
    body(0..<count)
    return
  }
  let step = (count + workers - 1) / workers
  DispatchQueue.concurrentPerform(iterations: workers) { worker in
    let start = worker * step
    let end = min(start + step, count)
    if start < end { body(start..<end) }
  }
}
