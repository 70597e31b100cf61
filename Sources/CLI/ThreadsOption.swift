import ArgumentParser
import Workers

/// `--threads`, shared by every command that computes (convert, merge, sample, verify).
struct ThreadsOption: ParsableArguments {
  @Option(
    help: "Threads for the parallel loops and gemm (default: convert and merge up to 2, sample and verify all cores).")
  var threads: Int?

  func validate() throws {
    if let threads, threads < 1 { throw ValidationError("--threads must be positive") }
  }

  /// Gives the shared pool the asked-for thread count (before any work starts).
  func apply() {
    if let threads { ThreadPool.useShared(threadCount: threads) }
  }
}
