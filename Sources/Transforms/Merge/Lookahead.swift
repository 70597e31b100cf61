import Foundation
import SafeTensors

/// Runs named jobs in order on background threads, each writing its result into a slice of one
/// ring of page-aligned memory, ahead of a consumer that takes the results in the same order and
/// releases them (from any thread) once done with them — for the bake, once the disk has written
/// them from there.
///
/// The ring is allocated once: anonymous memory stays at its size whatever the model's, no buffer
/// is allocated or zero-filled per tensor, and nothing fragments the heap (per-tensor buffers
/// returned late by the disk's writes had left glibc's heaps at twice the budget).
final class Lookahead: @unchecked Sendable {
  /// A finished result: `count` bytes at `lead` past a page boundary in `memory`.
  struct Slice: @unchecked Sendable {
    let start: Int
    let size: Int
    let lead: Int
    let count: Int
    let memory: UnsafeMutableRawBufferPointer
    var bytes: UnsafeRawBufferPointer {
      UnsafeRawBufferPointer(rebasing: memory[(start + lead)..<(start + lead + count)])
    }
  }

  private struct Job {
    let name: String
    let bytes: Int
    let lead: Int
    let run: (UnsafeMutableRawBufferPointer) throws -> Void
    /// Bytes of ring the job takes: its lead and bytes, rounded up to whole pages.
    var size: Int { (lead + bytes + AtomicFile.pageSize - 1) / AtomicFile.pageSize * AtomicFile.pageSize }
  }

  private let workers: Int
  private var jobs: [Job] = []
  private var results: [String: Result<Slice, Error>] = [:]
  private var next = 0
  private var cancelled = false
  private let condition = NSCondition()
  private var ring = UnsafeMutableRawBufferPointer(start: nil, count: 0)
  /// Slices handed out and not released, oldest first (start, size, released).
  private var live: [(start: Int, size: Int, released: Bool)] = []
  private var head = 0

  /// Bytes of the ring: results that may wait for the consumer (raised to the largest job's
  /// size when started, so every job can run).
  private var capacity: Int

  init(capacity: Int, workers: Int) {
    self.workers = workers
    self.capacity = capacity
  }

  deinit { ring.deallocate() }

  /// Adds a job writing `bytes` bytes, whose memory starts `lead` (< a page) past a page boundary.
  func add(_ name: String, bytes: Int, lead: Int, _ run: @escaping (UnsafeMutableRawBufferPointer) throws -> Void) {
    jobs.append(Job(name: name, bytes: bytes, lead: lead, run: run))
  }

  func start() {
    guard !jobs.isEmpty else { return }
    capacity = max(capacity, jobs.map(\.size).max() ?? 0)
    ring = .allocate(byteCount: capacity, alignment: AtomicFile.pageSize)
    for _ in 0..<workers {
      let thread = Thread { [self] in
        while let (job, slice) = claim() {
          let result = Result { () throws -> Slice in
            try job.run(
              UnsafeMutableRawBufferPointer(
                rebasing: ring[(slice.start + job.lead)..<(slice.start + job.lead + job.bytes)]))
            return slice
          }
          condition.lock()
          results[job.name] = result
          condition.broadcast()
          condition.unlock()
        }
      }
      thread.stackSize = 1 << 22
      thread.start()
    }
  }

  /// The next job and its slice of the ring, once there is room (nil when done or cancelled).
  private func claim() -> (Job, Slice)? {
    condition.lock()
    defer { condition.unlock() }
    while true {
      guard next < jobs.count, !cancelled else { return nil }
      let job = jobs[next]
      if let start = place(job.size) {
        next += 1
        live.append((start, job.size, false))
        head = start + job.size
        return (job, Slice(start: start, size: job.size, lead: job.lead, count: job.bytes, memory: ring))
      }
      condition.wait()
    }
  }

  /// Where `size` contiguous bytes fit after the live slices, which run from the oldest one's
  /// start (`tail`) to `head`, wrapping at the end of the ring; nil when they do not fit yet.
  private func place(_ size: Int) -> Int? {
    guard let tail = live.first?.start else { return 0 }
    if head > tail {
      // Not wrapped: free after `head` and before `tail`.
      if capacity - head >= size { return head }
      return tail >= size ? 0 : nil
    }
    // Wrapped: free between `head` and `tail`.
    return tail - head >= size ? head : nil
  }

  /// Waits for a job's result (rethrowing its error).
  func take(_ name: String) throws -> Slice {
    condition.lock()
    defer { condition.unlock() }
    while results[name] == nil && !cancelled { condition.wait() }
    guard let result = results.removeValue(forKey: name) else { throw CancellationError() }
    return try result.get()
  }

  /// Gives a taken slice back (any thread, any order); its memory is reused once every older
  /// slice is back too.
  func release(_ slice: Slice) {
    condition.lock()
    if let index = live.firstIndex(where: { $0.start == slice.start && !$0.released }) {
      live[index].released = true
    }
    while live.first?.released == true { live.removeFirst() }
    if live.isEmpty { head = 0 }
    condition.broadcast()
    condition.unlock()
  }

  /// Stops the threads after their current job (the consumer is done or failed).
  func cancel() {
    condition.lock()
    cancelled = true
    condition.broadcast()
    condition.unlock()
  }
}
