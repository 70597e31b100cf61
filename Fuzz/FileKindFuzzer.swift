// libFuzzer target for the file sniffer (built by Scripts/fuzz with -sanitize=fuzzer,address
// against the SafeTensors and Checkpoint modules; not part of the package build). Every byte string
// is classified from memory (as a prefix of files of several sizes) and, written to a scratch file,
// through the real `FileKind.sniff(path:)` (which parses a safetensors header when it sees one).
// Every input must end in a kind: a trap, a hang or an unbounded allocation is a finding.

import Checkpoint
import Foundation

private let scratchPath: String = {
  let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  return directory + "/rouwei-kind-fuzz-\(getpid()).bin"
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFileKind(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  let prefix = Array(bytes.prefix(4096))
  for fileSize in [size, size + 1, size * 2 + 7, Int.max / 2] {
    let kind = FileKind.classify(prefix: prefix, fileSize: fileSize, path: nil)
    precondition(!kind.phrase.isEmpty && !kind.name.isEmpty)
  }
  guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes)) else {
    preconditionFailure("cannot write the scratch file \(scratchPath)")
  }
  defer { unlink(scratchPath) }
  let kind = FileKind.sniff(path: scratchPath)
  if case .truncated(_, let present, let claimed) = kind { precondition(present == size && claimed > present) }
  if size == 0 { precondition(kind == .empty) }
  return 0
}
