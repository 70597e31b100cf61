import Crypto
import Foundation
import SafeTensors
import Testing
import TestSupport

@testable import Transforms

/// GGML block quantizers against the `gguf` package, and whole GGUF files that gguf-py read back
/// (Scripts/fixtures/make_gguf_goldens.py).
@Suite struct GGUFTests {
  static let golden = try? SafeTensorsFile(path: TestPaths.fixture("codecs/gguf-blocks.safetensors"))

  @Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
  func quantizersMatchGGUFPy(type: GGMLType) throws {
    let file = try #require(Self.golden)
    let input = try #require(file.info("input"))
    var values = [Float](repeating: 0, count: input.elementCount)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(file.data(input), dtype: .f32, into: $0) }
    var ours = [UInt8](repeating: 0, count: type.byteCount(elements: values.count))
    values.withUnsafeBufferPointer { v in ours.withUnsafeMutableBytes { GGMLQuantizer.quantize(v, type: type, into: $0) } }
    let theirs = Array(try file.data(named: type.name))
    #expect(ours.count == theirs.count)
    let firstDifference = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
    #expect(firstDifference == nil, "\(type.name): first differing byte \(firstDifference ?? -1) (block \((firstDifference ?? 0) / type.blockBytes))")
    var restored = [Float](repeating: 0, count: values.count)
    ours.withUnsafeBytes { raw in restored.withUnsafeMutableBufferPointer { GGMLQuantizer.dequantize(raw, type: type, into: $0) } }
    let expected = try file.data(named: "dequant_" + type.name)
    var reference = [Float](repeating: 0, count: values.count)
    reference.withUnsafeMutableBufferPointer { FloatCodec.decode(expected, dtype: .f32, into: $0) }
    #expect(restored.map(\.bitPattern) == reference.map(\.bitPattern), "\(type.name) dequantization")
  }

  @Test func writerStillProducesTheFileGGUFPyAccepted() throws {
    let data = try #require(FileManager.default.contents(atPath: TestPaths.fixture("codecs/gguf-check.json")))
    let check = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let output = TestPaths.temporaryDirectory("gguf") + "/tiny-q8.gguf"
    let report = try GGUFExport.export(
      input: TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"), output: output, type: .q8_0, components: nil,
      dropEMA: false)
    #expect(report.tensorsWritten == check["tensors"] as? Int)
    let bytes = try #require(FileManager.default.contents(atPath: output))
    let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    #expect(digest == check["sha256"] as? String, "our GGUF bytes changed since gguf-py checked them; rerun the script")
    #expect(bytes.prefix(4) == Data("GGUF".utf8))
  }

  @Test func sdcppQuantizationRules() {
    func info(_ name: String, _ shape: [Int]) -> TensorInfo {
      TensorInfo(name: name, dtype: .f16, shape: shape, dataOffsets: (0, shape.reduce(1, *) * 2))
    }
    #expect(GGUFExport.quantizes(info("model.diffusion_model.input_blocks.4.1.proj_in.weight", [640, 640])))
    #expect(!GGUFExport.quantizes(info("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", [320, 320, 3, 3])), "3×3 convs: ne[0] = 3")
    #expect(!GGUFExport.quantizes(info("model.diffusion_model.input_blocks.4.1.proj_in.bias", [640])))
    #expect(!GGUFExport.quantizes(info("model.diffusion_model.time_embed.0.weight", [1280, 320])))
    #expect(!GGUFExport.quantizes(info("conditioner.embedders.1.model.token_embedding.weight", [49408, 1280])))
  }
}
