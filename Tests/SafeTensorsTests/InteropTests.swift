import Foundation
import Testing
import TestSupport

@testable import SafeTensors

/// Files written by safetensors-py (Scripts/fixtures/make_interop.py): we read them exactly, and
/// writing the same tensors gives the same bytes.
@Suite struct InteropTests {
  struct Index: Decodable {
    struct File: Decodable {
      let metadata: [String: String]
      let tensors: [String: Tensor]
    }
    struct Tensor: Decodable {
      let dtype: String
      let shape: [Int]
      let hex: String
    }
    let files: [String: File]
  }

  static let index: Index? = {
    guard let data = FileManager.default.contents(atPath: TestPaths.fixture("interop/index.json")) else { return nil }
    return try? JSONDecoder().decode(Index.self, from: data)
  }()

  static func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var iterator = hex.utf8.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
      func value(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
      out.append(value(high) << 4 | value(low))
    }
    return out
  }

  @Test(arguments: ["mixed-dtypes.safetensors", "no-metadata.safetensors", "multi-metadata.safetensors", "escaped-names.safetensors"])
  func readsAndRewritesIdentically(name: String) throws {
    let expected = try #require(Self.index?.files[name])
    let path = TestPaths.fixture("interop/" + name)
    let file = try SafeTensorsFile(path: path)
    #expect(file.metadata == expected.metadata)
    #expect(file.tensors.count == expected.tensors.count)
    var entries: [TensorEntry] = []
    for (key, tensor) in expected.tensors {
      let info = try #require(file.info(key), "missing \(key)")
      #expect(info.dtype.rawValue == tensor.dtype)
      #expect(info.shape == tensor.shape)
      let data = Self.bytes(tensor.hex)
      #expect(Array(file.data(info)) == data, "bytes of \(key)")
      entries.append(
        TensorEntry(spec: TensorSpec(name: key, dtype: try #require(DType(rawValue: tensor.dtype)), shape: tensor.shape)) {
          try $0.write(contentsOf: data)
        })
    }
    let output = TestPaths.temporaryDirectory("interop") + "/" + name
    try SafeTensorsWriter.write(to: output, entries: entries, metadata: expected.metadata.isEmpty ? nil : expected.metadata)
    let ours = try #require(FileManager.default.contents(atPath: output))
    let theirs = try #require(FileManager.default.contents(atPath: path))
    if expected.metadata.count <= 1 {
      #expect(ours == theirs, "our bytes differ from safetensors-py's for \(name)")
    } else {
      // safetensors-py orders several metadata keys arbitrarily: compare entry by entry.
      let reread = try SafeTensorsFile(path: output)
      #expect(reread.metadata == file.metadata)
      #expect(reread.tensors == file.tensors)
      #expect(Array(reread.mapping.bytes(offset: reread.dataOffset, count: reread.header.dataByteCount))
        == Array(file.mapping.bytes(offset: file.dataOffset, count: file.header.dataByteCount)))
    }
  }
}
