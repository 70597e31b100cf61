import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// Files written by safetensors-py (Scripts/fixtures/make_interop.py, index in
/// Fixtures/interop/index.json): we read them exactly, and writing the same tensors gives the same
/// bytes — tensor order (dtype descending, then name bytewise), serde_json escaping, space padding
/// to 8 bytes, `__metadata__` first (also when empty).
@Suite struct InteropTests {
  struct Index: Decodable {
    struct File: Decodable {
      let metadata: [String: String]?
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

  static let names: [String] = index?.files.keys.sorted() ?? []

  static func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var iterator = hex.utf8.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
      func value(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
      out.append(value(high) << 4 | value(low))
    }
    return out
  }

  @Test func indexCoversTheFormat() throws {
    let index = try #require(Self.index)
    #expect(index.files.count >= 10)
    let dtypes = Set(index.files.values.flatMap { $0.tensors.values.map(\.dtype) })
    // Every dtype PyTorch can store (all but the 6-bit ones).
    #expect(Set(DType.allCases.map(\.rawValue)).subtracting(dtypes) == ["F6_E2M3", "F6_E3M2"])
    #expect(index.files.values.contains { $0.metadata?.count == 1 })
    #expect(index.files.values.contains { ($0.metadata?.count ?? 0) > 1 })
    #expect(index.files.values.contains { $0.metadata == [:] })
    #expect(index.files.values.contains { $0.tensors.values.contains { $0.shape.contains(0) } })
  }

  @Test(arguments: names)
  func readsExactly(name: String) throws {
    let expected = try #require(Self.index?.files[name])
    let file = try SafeTensorsFile(path: TestPaths.fixture("interop/" + name))
    #expect(file.header.hasMetadataObject == (expected.metadata != nil))
    #expect(file.metadata == expected.metadata ?? [:])
    #expect(file.tensors.count == expected.tensors.count)
    for (key, tensor) in expected.tensors {
      let info = try #require(file.info(key), "missing \(key)")
      #expect(info.dtype.rawValue == tensor.dtype, "\(key)")
      #expect(info.shape == tensor.shape, "\(key)")
      #expect(Array(file.data(info)) == Self.bytes(tensor.hex), "bytes of \(key)")
    }
    #expect(file.dataOffset % 8 == 0)
  }

  @Test(arguments: names)
  func rewritesIdentically(name: String) throws {
    let expected = try #require(Self.index?.files[name])
    let path = TestPaths.fixture("interop/" + name)
    var entries: [TensorEntry] = []
    for (key, tensor) in expected.tensors {
      let data = Self.bytes(tensor.hex)
      let spec = TensorSpec(name: key, dtype: try #require(DType(rawValue: tensor.dtype)), shape: tensor.shape)
      entries.append(TensorEntry(spec: spec) { try $0.write(contentsOf: data) })
    }
    let output = TestPaths.temporaryDirectory("interop") + "/" + name
    try SafeTensorsWriter.write(to: output, entries: entries.shuffled(), metadata: expected.metadata)
    let ours = [UInt8](try #require(FileManager.default.contents(atPath: output)))
    let theirs = [UInt8](try #require(FileManager.default.contents(atPath: path)))
    guard let metadata = expected.metadata, metadata.count > 1 else {
      #expect(ours == theirs, "our bytes differ from safetensors-py's for \(name)")
      return
    }
    // safetensors-py orders several metadata keys arbitrarily (a Rust HashMap); ours are sorted.
    // Everything else must still be identical: the metadata object has the same length in both,
    // so the tensor part of the header, the padding and the data line up byte for byte.
    #expect(ours.count == theirs.count)
    #expect(ours.prefix(8) == theirs.prefix(8))
    let objectLength =
      String(decoding: SafeTensorsWriter.headerBytes(ordered: [], metadata: metadata), as: UTF8.self)
      .trimmingCharacters(in: .whitespaces).utf8.count - 1  // `{"__metadata__":{…}` without the final `}`
    #expect(Array(theirs[8..<(8 + 17)]) == Array(#"{"__metadata__":{"#.utf8))
    #expect(ours[(8 + objectLength)...] == theirs[(8 + objectLength)...])
    let reread = try SafeTensorsFile(path: output)
    #expect(reread.metadata == metadata)
    #expect(try SafeTensorsFile(path: path).metadata == metadata)
  }
}
