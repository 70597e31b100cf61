import Foundation
import Synchronization

/// A fixed set of threads for data-parallel loops: the engine's element-wise work (norms,
/// activations, im2col, softmax) and the streamed conversions and merges (`parallelRanges` in
/// Transforms). The one parallel-for of the package.
///
/// `forEachChunk` splits a range into one contiguous chunk per thread and runs them at once; the
/// calling thread does the first chunk, so a pool of `threadCount` threads starts
/// `threadCount − 1` workers. Between jobs, workers spin for 50 µs and then sleep on a condition
/// variable (at once where the cores are contended), so idle workers do not keep cores from
/// OpenBLAS's own gemm threads or other programs. Jobs submitted from several threads at once run one
/// after another; a job must not submit another job to the same pool (it would wait forever).
public final class ThreadPool: @unchecked Sendable {
  /// The number of threads that share each job, the caller included.
  public let threadCount: Int
  private let state: PoolState
  private let submission = NSLock()

  /// A pool sharing work among `threadCount` threads (at least 1).
  public init(threadCount: Int) {
    self.threadCount = Swift.max(1, threadCount)
    state = PoolState(workerCount: self.threadCount - 1)
    for worker in 0..<(self.threadCount - 1) {
      let state = self.state
      let thread = Thread { state.workerLoop(worker: worker) }
      thread.name = "Tensors.ThreadPool.\(worker + 1)"
      thread.stackSize = 1 << 20
      thread.start()
    }
  }

  deinit { state.stop() }

  /// Runs `body` over `0..<count` split into at most `threadCount` contiguous chunks, each at least
  /// `minimumChunk` long (small jobs run on the calling thread alone). Returns when all are done.
  public func forEachChunk(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let chunks = Swift.min(threadCount, Swift.max(1, count / Swift.max(1, minimumChunk)))
    if chunks == 1 {
      body(0..<count)
      return
    }
    submission.lock()
    defer { submission.unlock() }
    withoutActuallyEscaping(body) { escapable in
      state.run(count: count, chunks: chunks, body: escapable)
    }
  }

  /// The default pool: one thread per available core, at most 2 (this project's machines have 2;
  /// more threads than cores would only fight OpenBLAS for them). `--threads` replaces it
  /// (`useShared(threadCount:)`) before any work starts.
  public static var shared: ThreadPool {
    sharedLock.lock()
    defer { sharedLock.unlock() }
    return sharedPool
  }

  /// Replaces the shared pool with one of `threadCount` threads (call before work starts: a job
  /// running on the old pool finishes there).
  public static func useShared(threadCount: Int) {
    let pool = ThreadPool(threadCount: threadCount)
    sharedLock.lock()
    sharedPool = pool
    sharedLock.unlock()
  }

  private static let sharedLock = NSLock()
  nonisolated(unsafe) private static var sharedPool = ThreadPool(
    threadCount: Swift.min(2, ProcessInfo.processInfo.activeProcessorCount))
}

/// The shared state of a pool's workers (separate so that workers do not keep the pool alive).
///
/// A job is published by bumping `generation`, and its end seen when `pending` reaches zero. Both
/// sides spin on those counters for up to `spinNanoseconds` before sleeping on the condition: a
/// forward pass runs thousands of short jobs a few microseconds apart, and waking a sleeping
/// thread took 17–63 µs per job on a 2-core VM (`Benchmarks pool`), against about 2 µs spinning.
/// Sleepers are counted under the lock, so a job or its end never goes unnoticed.
///
/// Where threads outnumber free cores, spinning backfires: a spinner that loses its core stays
/// runnable, and the scheduler makes it wait a whole time slice (milliseconds), where a sleeper
/// would have been woken at once. So a spinner that finds it was kept off its core (a gap in its
/// own loop) stops all spinning for a while, and waits go straight to sleep as they used to.
private final class PoolState: @unchecked Sendable {
  /// How long a worker waits for the next job, or the caller for its job's end, before sleeping.
  static let spinNanoseconds: UInt64 = 50_000
  /// A gap this long between two turns of a spin loop means the spinner lost its core.
  static let descheduledNanoseconds: UInt64 = 30_000
  /// How long spinning stays off after that.
  static let backOffNanoseconds: UInt64 = 50_000_000
  /// Until when (uptime, ns) no thread of any pool spins: the cores are contended.
  private static let spinningPausedUntil = Atomic<UInt64>(0)

  private let condition = NSCondition()
  private let workerCount: Int
  private let generation = Atomic<Int>(0)
  private let pending = Atomic<Int>(0)
  // Under `condition`:
  private var stopping = false
  private var sleepingWorkers = 0
  private var callerSleeping = false
  // Written by the caller before it bumps `generation`, read by the workers after they see it.
  private var count = 0
  private var chunks = 0
  private var body: ((Range<Int>) -> Void)?

  init(workerCount: Int) { self.workerCount = workerCount }

  static func chunk(_ index: Int, of chunks: Int, count: Int) -> Range<Int> {
    (index * count / chunks)..<((index + 1) * count / chunks)
  }

  /// Calls `done()` until it says true or `spinNanoseconds` have passed (at once where spinning
  /// is paused); returns its last answer.
  private static func spin(until done: () -> Bool) -> Bool {
    var last = DispatchTime.now().uptimeNanoseconds
    if last < spinningPausedUntil.load(ordering: .relaxed) { return done() }
    let deadline = last + spinNanoseconds
    while true {
      for _ in 0..<32 where done() { return true }
      let now = DispatchTime.now().uptimeNanoseconds
      if now - last > descheduledNanoseconds {
        spinningPausedUntil.store(now + backOffNanoseconds, ordering: .relaxed)
        return done()
      }
      if now >= deadline { return done() }
      last = now
      sched_yield()  // hands the core to a thread waiting for it, which the gap above then shows
    }
  }

  func run(count: Int, chunks: Int, body: @escaping (Range<Int>) -> Void) {
    condition.lock()
    self.count = count
    self.chunks = chunks
    self.body = body
    pending.store(workerCount, ordering: .relaxed)
    generation.add(1, ordering: .releasing)
    if sleepingWorkers > 0 { condition.broadcast() }
    condition.unlock()

    body(PoolState.chunk(0, of: chunks, count: count))

    if !PoolState.spin(until: { pending.load(ordering: .acquiring) == 0 }) {
      condition.lock()
      callerSleeping = true
      while pending.load(ordering: .acquiring) > 0 { condition.wait() }
      callerSleeping = false
      condition.unlock()
    }
    condition.lock()
    self.body = nil
    condition.unlock()
  }

  func workerLoop(worker: Int) {
    var seen = 0
    while true {
      if !PoolState.spin(until: { generation.load(ordering: .acquiring) != seen }) {
        condition.lock()
        sleepingWorkers += 1
        while generation.load(ordering: .acquiring) == seen && !stopping { condition.wait() }
        sleepingWorkers -= 1
        let stopped = stopping
        condition.unlock()
        if stopped { return }
      }
      seen = generation.load(ordering: .acquiring)
      var job = body
      let chunkIndex = worker + 1
      let range = chunkIndex < chunks ? PoolState.chunk(chunkIndex, of: chunks, count: count) : 0..<0
      if let work = job, !range.isEmpty { work(range) }
      // Drop the reference before reporting done: the caller's `withoutActuallyEscaping` checks
      // that nothing still holds its closure.
      job = nil
      if pending.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
        condition.lock()
        if callerSleeping { condition.broadcast() }
        condition.unlock()
      }
    }
  }

  func stop() {
    condition.lock()
    stopping = true
    condition.broadcast()
    condition.unlock()
  }
}
