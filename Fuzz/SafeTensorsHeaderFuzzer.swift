// libFuzzer target for the safetensors header parser and validation (built by Scripts/fuzz with
// -sanitize=fuzzer,address; not part of the package build). Any input must end in a header or a
// typed SafeTensorsError: a trap, a hang or an unbounded allocation is a finding.

import SafeTensors

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensorsHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  guard size >= 8 else { return 0 }
  let declared = bytes.loadUnaligned(as: UInt64.self).littleEndian
  guard declared <= UInt64(size - 8) else { return 0 }
  let header = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(declared))])
  do {
    let parsed = try SafeTensorsHeader.parse(
      header, dataSectionLength: UInt64(size - 8) - declared, file: "fuzz")
    // Every accepted range must lie inside the data section.
    for tensor in parsed.tensors {
      precondition(tensor.dataOffsets.end <= size - 8 - Int(declared), "accepted an out-of-bounds range")
    }
  } catch is SafeTensorsError {
  } catch {
    preconditionFailure("untyped error \(error)")
  }
  return 0
}
