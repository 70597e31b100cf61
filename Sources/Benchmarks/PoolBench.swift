import Foundation
import Workers

/// The thread pool's cost per job: `Benchmarks pool [--jobs N] [--threads N]` runs N jobs of two
/// chunks that do almost nothing, back to back and with a pause of serial work between them (as a
/// forward's small operations come), and prints the time per job.
enum PoolBench {
  static func run(_ arguments: [String]) throws {
    let jobs = arguments.value(after: "--jobs").flatMap(Int.init) ?? 20000
    let threads = arguments.value(after: "--threads").flatMap(Int.init) ?? 2
    let pool = ThreadPool(threadCount: threads)
    var sink = [Double](repeating: 0, count: 64 * threads)
    for gapMicroseconds in [0.0, 20.0, 200.0] {
      let started = Date()
      for _ in 0..<jobs {
        sink.withUnsafeMutableBufferPointer { buffer in
          pool.forEachChunk(threads) { chunk in
            for index in chunk { buffer[index * 64] += 1 }
          }
        }
        if gapMicroseconds > 0 {  // serial work on the calling thread between jobs
          let until = Date().addingTimeInterval(gapMicroseconds * 1e-6)
          while Date() < until {}
        }
      }
      let perJob = Date().timeIntervalSince(started) / Double(jobs) - gapMicroseconds * 1e-6
      print(
        String(
          format: "pool of %d threads, %.0f µs serial work between jobs: %.1f µs per job", threads, gapMicroseconds,
          perJob * 1e6))
    }
    precondition(sink[0] > 0)
  }
}
