// libFuzzer target for the hash cache file (`~/.cache/rouwei-ckpt/hashes.json`), which any
// process of the user can write (built by Scripts/fuzz with -sanitize=fuzzer,address against the
// SafeTensors and Checkpoint modules; not part of the package build). Every byte string is the
// cache file: looking a file up must end in nothing or in well-formed hashes, and storing the
// file's real hashes must then leave a valid cache that serves exactly them. A trap, a hang or an
// unbounded allocation is a finding.

import Checkpoint
import Foundation
import SafeTensors

/// A small real file to look up and store, made once per process.
final class Subject: @unchecked Sendable {
  let directory: String
  let mapping: MappedFile
  let hashes: ModelHashes

  init() {
    directory = NSTemporaryDirectory() + "/rouwei-fuzz-hash-cache-\(getpid())"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let path = directory + "/model.safetensors"
    FileManager.default.createFile(atPath: path, contents: Data((0..<4096).map { UInt8($0 % 251) }))
    // The cache does not record a file changed in the last moment (racy-clean rule): age it.
    sleep(1)
    do { mapping = try MappedFile(path: path) } catch { preconditionFailure("fixture: \(error)") }
    hashes = ModelHasher.hashes(of: mapping, dataOffset: nil)
  }
}

let subject = Subject()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHashCache(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let cachePath = subject.directory + "/hashes.json"
  guard FileManager.default.createFile(atPath: cachePath, contents: Data(bytes: data, count: size)) else {
    preconditionFailure("cannot write the cache file")
  }
  let cache = HashCache(path: cachePath, racyMargin: 0.5)
  if let served = cache.cachedHashes(of: subject.mapping, dataOffset: nil) {
    precondition(
      served.sha256.utf8.count == 64 && served.autoV2 == String(served.sha256.prefix(10)),
      "malformed hashes served: \(served)")
  }
  guard let ticket = cache.ticket(for: subject.mapping) else { preconditionFailure("no ticket") }
  precondition(cache.store(subject.hashes, dataOffset: nil, for: ticket), "store failed")
  let fresh = HashCache(path: cachePath, racyMargin: 0.5)
  precondition(
    fresh.cachedHashes(of: subject.mapping, dataOffset: nil) == subject.hashes,
    "a stored entry is not served after a garbage cache file")
  return 0
}
