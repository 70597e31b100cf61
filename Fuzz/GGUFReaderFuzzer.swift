// libFuzzer target for the GGUF reader (built by Scripts/fuzz with -sanitize=fuzzer,address
// against the SafeTensors, Checkpoint and Transforms modules; not part of the package build).
// Every byte string is written to a scratch file and opened as GGUF; it must end in a GGUFFile or
// a typed GGUFError. What opens is inspected as `info` would (layout, architecture, prediction),
// every tensor's decoder is resolved, and a bounded number of values is decoded from the start,
// the middle and the end of each tensor: a trap, a hang or an unbounded allocation is a finding.

import Foundation
import SafeTensors
import Transforms
import Weights

/// One scratch file per process, rewritten for every input (tmpfs when there is one).
private let scratchPath: String = {
  let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  return directory + "/rouwei-gguf-fuzz-\(getpid()).gguf"
}()

/// Values decoded per range: enough to cross block boundaries, bounded so big declared tensors
/// (zeros in a sparse-looking file) cannot make one input slow.
private let valuesPerRange = 600

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUFReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes: data, count: size)) else {
    preconditionFailure("cannot write the scratch file \(scratchPath)")
  }
  defer { unlink(scratchPath) }
  do {
    let file = try GGUFFile(path: scratchPath)
    _ = try GGUFInspection.inspect(path: scratchPath, hashes: false)
    var output = [Float](repeating: 0, count: valuesPerRange)
    for tensor in file.tensors {
      precondition(
        tensor.offset >= file.dataOffset && tensor.offset + tensor.byteCount <= size, "tensor outside the file")
      _ = try? file.originalShape(of: tensor)
      let decoder: TensorDecoder
      do {
        decoder = try TensorDecoder.resolve(gguf: file, tensor: tensor)
      } catch is GGUFError {
        continue
      } catch is CodecError {
        continue
      }
      let count = decoder.elementCount
      let middle = count / 2 - min(count / 2, valuesPerRange / 2) + 1
      for start in [0, min(middle, count), max(0, count - valuesPerRange)] {
        let range = start..<min(count, start + valuesPerRange)
        output.withUnsafeMutableBufferPointer { buffer in
          decoder.decode(range, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<range.count]))
        }
      }
    }
  } catch is GGUFError {
  } catch is CodecError {
  } catch let error as SafeTensorsError {
    // Only the operating system may fail here (the scratch file is ours).
    preconditionFailure("SafeTensorsError for a GGUF input: \(error)")
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  return 0
}
