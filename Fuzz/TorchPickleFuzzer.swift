// libFuzzer target for the PyTorch checkpoint reader (built by Scripts/fuzz with
// -sanitize=fuzzer,address, compiled together with Sources/TorchImport so the restricted pickle
// interpreter is reachable; not part of the package build). An input that starts like a zip or a
// legacy torch file is written to a scratch file and opened with the real `TorchCheckpoint(path:)`
// (zip directory, pickle, storages, tensor bounds), and every model tensor's bytes are read back
// through the import's gather; any other input runs through the pickle interpreter alone and its
// result is flattened as a state dict. Every input must end in a value or a typed error: a trap,
// a hang or an unbounded allocation is a finding.

import Foundation
import SafeTensors

private let scratchPath: String = {
  let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  return directory + "/rouwei-pickle-fuzz-\(getpid()).ckpt"
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTorchPickle(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  let isFile = bytes.starts(with: [0x50, 0x4B]) || bytes.starts(with: TorchCheckpoint.legacyMagic)
  do {
    if isFile {
      guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes)) else {
        preconditionFailure("cannot write the scratch file \(scratchPath)")
      }
      defer { unlink(scratchPath) }
      // CRCs off: mutated bytes would mostly stop at the checksum, before the code worth fuzzing.
      let checkpoint = try TorchCheckpoint(path: scratchPath, verifyChecksums: false)
      for tensor in checkpoint.tensors {
        let storage = checkpoint.storageBytes(tensor)
        precondition(storage.count >= 0)
        // Tensors past 1 MiB are bounded by the checks already; gathering them would only be slow.
        guard tensor.elementCount * tensor.dtype.size <= 1 << 20, !tensor.shape.isEmpty, tensor.elementCount > 0 else {
          continue
        }
        let sink = CountingSink()
        try TorchImporter.gather(tensor.reference, from: storage) { sink.count += $0.count }
        precondition(sink.count == tensor.elementCount * tensor.dtype.size, "gathered the wrong number of bytes")
      }
    } else {
      var machine = PickleMachine(file: "fuzz")
      defer { machine.tearDown() }
      let (value, end) = try machine.run(bytes)
      precondition(end <= size)
      _ = try TorchCheckpoint.flatten(value, file: "fuzz")
    }
  } catch is TorchImportError {
  } catch let error as SafeTensorsError {
    // Only the map of the scratch file (ours) may fail this way.
    precondition(!error.isIOFailure, "I/O error on the scratch file: \(error)")
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  return 0
}

private final class CountingSink { var count = 0 }
