import Foundation
import SafeTensors
import Testing

@testable import Transforms

/// The bake's lookahead: jobs of any size run ahead in a fixed ring, results come out in order
/// with their bytes intact even when released late and out of order, and the ring wraps.
@Suite struct LookaheadTests {
  @Test func resultsSurviveWrapsAndLateOutOfOrderReleases() throws {
    // Sizes up to the ring's capacity, so slices wrap and some jobs must wait for the ring to drain.
    let sizes = (0..<60).map { [1, 4095, 4096, 9000, 20_000, 3, 12_288, 30_000][$0 % 8] + $0 }
    let lookahead = Lookahead(capacity: 32 << 10, workers: 3)
    for (index, size) in sizes.enumerated() {
      lookahead.add("t\(index)", bytes: size, lead: (index * 977) % AtomicFile.pageSize) { out in
        for i in 0..<out.count { out[i] = UInt8(truncatingIfNeeded: i &* 31 &+ index) }
      }
    }
    lookahead.start()
    defer { lookahead.cancel() }
    let releaser = DispatchQueue(label: "releases", attributes: .concurrent)
    let group = DispatchGroup()
    let corrupted = Indices()
    for (index, size) in sizes.enumerated() {
      let slice = try lookahead.take("t\(index)")
      #expect(slice.count == size && slice.lead == (index * 977) % AtomicFile.pageSize)
      #expect(Int(bitPattern: slice.bytes.baseAddress) % AtomicFile.pageSize == slice.lead)
      let bytes = Array(slice.bytes)
      let intact = bytes == (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
      #expect(intact, "job \(index): bytes overwritten")
      // Released later, from another thread, not in order (as the disk's writes finish); the
      // bytes must still be intact then.
      releaser.async(group: group) {
        usleep(UInt32((index * 7919) % 5) * 500)
        if Array(slice.bytes) != bytes { corrupted.add(index) }
        lookahead.release(slice)
      }
    }
    group.wait()
    #expect(corrupted.values.isEmpty, "slices overwritten before their release: \(corrupted.values)")
  }

  final class Indices: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ index: Int) {
      lock.lock()
      list.append(index)
      lock.unlock()
    }
    var values: [Int] {
      lock.lock()
      defer { lock.unlock() }
      return list
    }
  }

  @Test func aJobLargerThanTheRingStillRuns() throws {
    let lookahead = Lookahead(capacity: 4096, workers: 1)
    lookahead.add("big", bytes: 100_000, lead: 5) { out in out.initializeMemory(as: UInt8.self, repeating: 9) }
    lookahead.start()
    defer { lookahead.cancel() }
    let slice = try lookahead.take("big")
    #expect(slice.bytes.count == 100_000 && slice.bytes.allSatisfy { $0 == 9 })
    lookahead.release(slice)
  }

  @Test func aFailedJobRethrowsToTheConsumer() throws {
    struct Failure: Error {}
    let lookahead = Lookahead(capacity: 1 << 20, workers: 2)
    lookahead.add("ok", bytes: 10, lead: 0) { _ in }
    lookahead.add("bad", bytes: 10, lead: 0) { _ in throw Failure() }
    lookahead.start()
    defer { lookahead.cancel() }
    lookahead.release(try lookahead.take("ok"))
    #expect(throws: Failure.self) { try lookahead.take("bad") }
  }
}
