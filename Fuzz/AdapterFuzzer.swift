// libFuzzer target for the LoRA/LyCORIS adapter reader and key-name mapper (built by Scripts/fuzz
// with -sanitize=fuzzer,address against SafeTensors, Checkpoint, Weights and Adapters; not part of
// the package build). Every byte string is written to a scratch file and opened as an adapter: it
// must end in an AdapterFile or a typed error (AdapterError, SafeTensorsError). What opens has its
// report built and every module's ΔW computed for a few small target shapes (each refused or
// computed, bounded by the shape); every key, and the raw bytes as a name, goes through the
// mapper. A trap, a hang or an unbounded allocation is a finding.

import Adapters
import Foundation
import SafeTensors

private let scratchPath: String = {
  let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  return directory + "/rouwei-adapter-fuzz-\(getpid()).bin"
}()

private let shapes: [[Int]] = [[4, 4], [16, 16], [64, 32], [8, 8, 3, 3], [16, 8, 1, 1], [48, 16]]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAdapter(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let name = String(decoding: UnsafeBufferPointer(start: data, count: min(size, 512)), as: UTF8.self)
  if let (module, _) = AdapterKeyMap.split(name) { _ = AdapterKeyMap.target(ofModule: module) }
  _ = AdapterKeyMap.target(ofModule: name)
  _ = try? AdapterSpec.parse(name)
  guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes: data, count: size)) else {
    preconditionFailure("cannot write the scratch file \(scratchPath)")
  }
  defer { unlink(scratchPath) }
  do {
    let adapter = try AdapterFile(path: scratchPath)
    _ = AdapterReport(adapter).render()
    for module in adapter.modules {
      for shape in shapes {
        var weight = [Float](repeating: 0.5, count: shape.reduce(1, *))
        try? weight.withUnsafeMutableBufferPointer { try adapter.apply(module, to: $0, shape: shape, strength: 0.7) }
      }
    }
  } catch is AdapterError {
  } catch is SafeTensorsError {
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  return 0
}
