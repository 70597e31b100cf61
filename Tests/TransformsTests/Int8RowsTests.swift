import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// Per-row int8 against torch (Scripts/fixtures/make_int8_goldens.py), and the round trip back.
@Suite struct Int8RowsTests {
  @Test func quantizesLikeTorchAndDequantizes() throws {
    let golden = try SafeTensorsFile(path: TestPaths.fixture("codecs/int8-rows.safetensors"))
    let input = try #require(golden.info("input"))
    let directory = TestPaths.temporaryDirectory("int8")
    let model = directory + "/model.safetensors"
    let layer = "model.diffusion_model.input_blocks.4.1.proj_in"
    try SafeTensorsWriter.write(
      to: model,
      entries: [
        TensorEntry(
          spec: TensorSpec(name: layer + ".weight", dtype: .f32, shape: input.shape), bytes: golden.data(input)),
        TensorEntry(spec: TensorSpec(name: layer + ".bias", dtype: .f32, shape: [input.shape[0]])) {
          try $0.write(contentsOf: [Float](repeating: 0.25, count: input.shape[0]))
        },
        TensorEntry(
          spec: TensorSpec(name: "model.diffusion_model.input_blocks.0.0.weight", dtype: .f32, shape: [2, 1, 1, 1])
        ) {
          try $0.write(contentsOf: [Float(1), 2])
        },
      ], metadata: ["keep": "me"])
    var request = ConversionRequest()
    request.dtype = .i8
    let quantized = directory + "/int8.safetensors"
    _ = try Converter.convert(input: model, output: quantized, request: request)
    let file = try SafeTensorsFile(path: quantized)
    let weight = try #require(file.info(layer + ".weight"))
    #expect(weight.dtype == .i8 && weight.shape == input.shape)
    #expect(Array(file.data(weight)) == Array(try golden.data(named: "weight")), "codes differ from torch")
    let scale = try #require(file.info(layer + ".weight_scale"))
    #expect(scale.dtype == .f32 && scale.shape == [input.shape[0]])
    #expect(Array(file.data(scale)) == Array(try golden.data(named: "weight_scale")), "scales differ from torch")
    #expect(
      String(decoding: try file.data(named: layer + ".comfy_quant"), as: UTF8.self) == #"{"format":"int8_tensorwise"}"#)
    #expect(file.info(layer + ".bias")?.dtype == .f32, "biases stay wide")
    #expect(file.info("model.diffusion_model.input_blocks.0.0.weight")?.dtype == .f32, "convolutions stay wide")
    let index = try #require(file.metadata["_quantization_metadata"])
    #expect(index.contains("input_blocks.4.1.proj_in") && index.contains("int8_tensorwise"))
    #expect(file.metadata["keep"] == "me")

    // Back to fp32: q·s exactly as torch computes it; the int8 bookkeeping is gone.
    request.dtype = .f32
    let back = directory + "/back.safetensors"
    _ = try Converter.convert(input: quantized, output: back, request: request)
    let restored = try SafeTensorsFile(path: back)
    let values = try #require(restored.info(layer + ".weight"))
    #expect(values.dtype == .f32)
    #expect(Array(restored.data(values)) == Array(try golden.data(named: "dequantized")))
    #expect(!restored.contains(layer + ".weight_scale") && !restored.contains(layer + ".comfy_quant"))
    #expect(restored.metadata["_quantization_metadata"] == nil)
  }
}
