import Foundation
import Synchronization
import Tensors
import TestSupport
import Testing

/// Shapes, views, the arena, the workspace, the thread pool and the vector math.
@Suite struct InfrastructureTests {
  @Test func shapes() {
    let shape: Shape = [2, 4, 8, 16]
    #expect(shape.rank == 4 && shape.count == 1024 && shape.rows == 64 && shape.last == 16)
    #expect(shape.droppingFirst() == Shape(4, 8, 16))
    #expect(shape.description == "[2, 4, 8, 16]")
    #expect(Shape([]).count == 1 && Shape(3, 0).count == 0)
    #expect(Shape(2, 3) != Shape(3, 2) && Shape(2, 3) != Shape(2, 3, 1))
  }

  @Test func viewsShareStorage() {
    let tensor = Tensor(shape: [2, 3, 2], values: (0..<12).map(Float.init))
    let second = tensor.batch(1)
    #expect(second.shape == [3, 2] && second.scalars == [6, 7, 8, 9, 10, 11])
    second[0, 1] = 70
    #expect(tensor[1, 0, 1] == 70)
    #expect(tensor.slice(1..<2).shape == [1, 3, 2] && tensor.slice(1..<2).pointer == second.pointer)
    #expect(tensor.reshaped([6, 2])[3, 1] == 70)
    #expect(tensor.view(offset: 4, shape: [2]).scalars == [4, 5])
  }

  /// Discarded pages read as zeros; values outside the whole pages of the range are kept.
  @Test func discardedPagesReadAsZerosAndTheRestIsKept() {
    let storage = TensorStorage(capacity: 1 << 20)
    storage.base.update(repeating: 1, count: storage.capacity)
    let range = 1000..<900_000
    storage.discardPages(range)
    let page = Int(sysconf(Int32(_SC_PAGESIZE))) / MemoryLayout<Float>.stride
    let values = UnsafeBufferPointer(start: storage.base, count: storage.capacity)
    #expect(values[..<range.lowerBound].allSatisfy { $0 == 1 })
    #expect(values[range.upperBound...].allSatisfy { $0 == 1 })
    let zeros = values[range].filter { $0 == 0 }.count
    // Every whole page inside the range (all but at most two partial ones at its ends).
    #expect(zeros > range.count - 2 * page && zeros <= range.count, "\(zeros) zeros")
  }

  @Test func arenaReusesMemoryInASteadyLoop() {
    let arena = TensorArena(minimumBlockCapacity: 1000)
    var firstPointers: [UnsafeMutablePointer<Float>] = []
    var capacityAfterFirst = 0
    for iteration in 0..<3 {
      arena.reset()
      var pointers: [UnsafeMutablePointer<Float>] = []
      let a = arena.tensor([10, 10])
      pointers.append(a.pointer)
      let mark = arena.mark()
      let big = arena.tensor([40, 40])  // larger than a block: gets a block of its own
      pointers.append(big.pointer)
      let c = arena.tensor([7])
      pointers.append(c.pointer)
      arena.release(to: mark)
      let d = arena.tensor([10, 10])  // the first block's free space again
      pointers.append(d.pointer)
      #expect(d.pointer == a.pointer + 112)
      #expect(Int(bitPattern: a.pointer) % 64 == 0 && Int(bitPattern: c.pointer) % 64 == 0)
      if iteration == 0 {
        firstPointers = pointers
        capacityAfterFirst = arena.capacity
      } else {
        #expect(pointers == firstPointers)
        #expect(arena.capacity == capacityAfterFirst)
      }
    }
    #expect(arena.peakCount >= 100 + 1600 + 16)
  }

  @Test func workspaceGrowsOnlyWhenAskedForMore() {
    let workspace = Workspace()
    let first = workspace.buffer(100)
    #expect(workspace.buffer(50) == first && workspace.capacity == 100)
    _ = workspace.buffer(200)
    #expect(workspace.capacity == 200)
  }

  @Test func threadPoolCoversEveryIndexOnce() {
    let pool = ThreadPool(threadCount: 3)
    for count in [0, 1, 2, 3, 10, 1001] {
      let hits = PoolHits(count)
      for _ in 0..<20 { pool.forEachChunk(count) { hits.record($0) } }
      #expect(hits.all(20), "count \(count)")
    }
  }

  /// Jobs and pauses longer than the 50 µs spin: the workers fall asleep between jobs, and the
  /// caller while it waits for a slow worker; each must be woken, and every index still run once.
  @Test func threadPoolWakesSleepingWorkersAndCaller() {
    let pool = ThreadPool(threadCount: 3)
    let count = 3
    let hits = PoolHits(count)
    for round in 0..<12 {
      let slowWorker = round % 2 == 0
      pool.forEachChunk(count) { range in
        if slowWorker && range.lowerBound > 0 { usleep(400) }  // the caller spins out, then sleeps
        hits.record(range)
      }
      usleep(round % 3 == 0 ? 0 : 400)  // the workers spin out, then sleep
    }
    #expect(hits.all(12))
    // Pools dropped right after a job, while their workers still spin, stop cleanly.
    for _ in 0..<20 { ThreadPool(threadCount: 2).forEachChunk(2) { hits.record($0) } }
    #expect(hits[0] == 32 && hits[1] == 32)
  }

  /// More busy threads than cores: spinners lose their cores, spinning pauses, and every job still
  /// runs each index once.
  @Test func threadPoolRunsEveryJobWhenCoresAreContended() {
    final class Flag: Sendable { let raised = Atomic<Bool>(false) }
    let stop = Flag()
    let group = DispatchGroup()
    for _ in 0..<(ProcessInfo.processInfo.activeProcessorCount + 1) {
      group.enter()
      Thread {
        while !stop.raised.load(ordering: .relaxed) {}
        group.leave()
      }.start()
    }
    let pool = ThreadPool(threadCount: 2)
    let count = 64
    let hits = PoolHits(count)
    for _ in 0..<300 { pool.forEachChunk(count) { hits.record($0) } }
    stop.raised.store(true, ordering: .relaxed)
    group.wait()
    #expect(hits.all(300))
  }

  @Test func threadPoolSerialisesConcurrentSubmitters() {
    let pool = ThreadPool(threadCount: 2)
    let submitters = 4, count = 5000
    let hits = PoolHits(submitters * count)
    DispatchQueue.concurrentPerform(iterations: submitters) { submitter in
      for _ in 0..<50 { pool.forEachChunk(count) { hits.record($0, from: submitter * count) } }
    }
    #expect(hits.all(50))
  }

  @Test func vectorExpThroughSoftmax() {
    // softmax([x, 0]) = [σ(x), σ(−x)]: checks exp over its whole float range, both signs.
    var worst = 0.0
    var x: Float = -87
    let pair = Tensor(zeros: [1, 2])
    while x < 87 {
      pair[0, 0] = x
      pair[0, 1] = 0
      fast.softmax(pair, into: pair)
      let expected = 1 / (1 + Foundation.exp(-Double(x)))
      worst = max(worst, abs(Double(pair[0, 0]) - expected) / expected)
      x += 0.173
    }
    #expect(worst < 1e-6, "exp relative error \(worst) (AVX2 path: \(ComputeContext.usesVectorKernels))")
    let extremes = Tensor(shape: [1, 3], values: [-1e30, 0, -200])
    fast.softmax(extremes, into: extremes)
    #expect(extremes.scalars == [0, 1, 0])
  }
}

/// Per-index run counts for the thread pool tests: chunks of a job record the indices they ran.
private final class PoolHits: @unchecked Sendable {
  private let counts: UnsafeMutablePointer<Int>
  private let count: Int

  init(_ count: Int) {
    self.count = count
    counts = .allocate(capacity: Swift.max(count, 1))
    counts.initialize(repeating: 0, count: Swift.max(count, 1))
  }

  deinit { counts.deallocate() }

  /// Counts one run of each index in `range`, shifted by `offset`.
  func record(_ range: Range<Int>, from offset: Int = 0) {
    for index in range { counts[offset + index] += 1 }
  }

  /// Whether every index ran exactly `times` times.
  func all(_ times: Int) -> Bool { (0..<count).allSatisfy { counts[$0] == times } }

  subscript(index: Int) -> Int { counts[index] }
}
