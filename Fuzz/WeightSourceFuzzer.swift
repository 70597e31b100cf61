// libFuzzer target for the weight source's content dispatch and name translation (built by
// Scripts/fuzz with -sanitize=fuzzer,address against SafeTensors, Checkpoint and Weights; not part
// of the package build). Every byte string is written to a scratch file and opened as a model
// artifact: it must end in a WeightSource or a typed error (WeightSourceError, SafeTensorsError,
// GGUFError, CodecError, CheckpointError). What opens has every served tensor's decoder built and
// a bounded number of values decoded from its start and end: a trap, a hang or an unbounded
// allocation is a finding.

import Checkpoint
import Foundation
import SafeTensors
import Weights

private let scratchPath: String = {
  let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  return directory + "/rouwei-source-fuzz-\(getpid()).bin"
}()

private let valuesPerRange = 300

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWeightSource(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes: data, count: size)) else {
    preconditionFailure("cannot write the scratch file \(scratchPath)")
  }
  defer { unlink(scratchPath) }
  do {
    let source = try WeightSource(path: scratchPath)
    var output = [Float](repeating: 0, count: valuesPerRange)
    for name in source.names {
      guard let decoder = try? source.decoder(name) else { continue }
      let count = decoder.elementCount
      for start in [0, max(0, count - valuesPerRange)] {
        let range = start..<min(count, start + valuesPerRange)
        output.withUnsafeMutableBufferPointer { buffer in
          decoder.decode(range, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<range.count]))
        }
      }
    }
  } catch is WeightSourceError {
  } catch is SafeTensorsError {
  } catch is GGUFError {
  } catch is CodecError {
  } catch is CheckpointError {
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  return 0
}
