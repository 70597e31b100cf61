import ArgumentParser
import Checkpoint

/// `--no-hash-cache`, shared by the commands that hash whole models (merge, info, sample, verify).
struct HashCacheOptions: ParsableArguments {
  @Flag(help: "Neither use nor update the hash cache (ROUWEI_HASH_CACHE=off does the same; see the manual).")
  var noHashCache = false

  /// The hash cache to use: nil with `--no-hash-cache` or `ROUWEI_HASH_CACHE=off`.
  func cache() -> HashCache? {
    noHashCache ? nil : HashCache.fromEnvironment()
  }
}
