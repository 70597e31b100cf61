import Foundation
import TestSupport
import Testing

@testable import SafeTensors

@Suite struct RoundTripTests {
  @Test func writesAndReadsBack() throws {
    let directory = TestPaths.temporaryDirectory("roundtrip")
    let path = directory + "/a.safetensors"
    let weights: [Float] = [1, -2, 3.5, 0]
    let ids: [Int64] = [0, 1, 2]
    try SafeTensorsWriter.write(
      to: path,
      entries: [
        TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [2, 2])) { try $0.write(contentsOf: weights) },
        TensorEntry(spec: TensorSpec(name: "ids", dtype: .i64, shape: [3])) { try $0.write(contentsOf: ids) },
        TensorEntry(spec: TensorSpec(name: "v_pred", dtype: .f32, shape: [0])) { _ in },
      ],
      metadata: ["b": "2", "a": "1"])
    let file = try SafeTensorsFile(path: path)
    #expect(file.metadata == ["a": "1", "b": "2"])
    #expect(file.tensors.map(\.name) == ["ids", "v_pred", "w"])
    let info = try #require(file.info("w"))
    #expect(info.shape == [2, 2])
    #expect(Array(file.data(info).bindMemory(to: Float.self)) == weights)
    #expect(file.dataOffset % 8 == 0)
  }

  @Test func headerMatchesReferenceLayout() {
    // Golden bytes from safetensors-rs `test_serialization_forces_alignment`-style ordering:
    // wider dtypes first, then names ascending.
    let specs = SafeTensorsWriter.fileOrder([
      TensorSpec(name: "b", dtype: .f16, shape: [2]),
      TensorSpec(name: "a", dtype: .i32, shape: [1]),
    ])
    let header = String(decoding: SafeTensorsWriter.headerBytes(ordered: specs, metadata: nil), as: UTF8.self)
    #expect(
      header.trimmingCharacters(in: .whitespaces)
        == #"{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}"#
    )
    #expect(header.utf8.count % 8 == 0)
  }

  @Test func refusesToOverwriteAnInput() throws {
    let directory = TestPaths.temporaryDirectory("overwrite")
    let path = directory + "/in.safetensors"
    try SafeTensorsWriter.write(to: path, entries: [], metadata: nil)
    #expect(throws: SafeTensorsError.self) {
      try SafeTensorsWriter.write(to: path, entries: [], metadata: nil, inputs: [path])
    }
  }
}
