import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// ComfyUI scaled fp8 against torch (Scripts/fixtures/make_scaled_fp8_goldens.py), and back.
@Suite struct ScaledFP8Tests {
  @Test func quantizesLikeComfyUIAndDequantizes() throws {
    let golden = try SafeTensorsFile(path: TestPaths.fixture("codecs/scaled-fp8.safetensors"))
    let input = try #require(golden.info("input"))
    let directory = TestPaths.temporaryDirectory("scaled")
    let model = directory + "/model.safetensors"
    let layer = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.ff.net.2"
    try SafeTensorsWriter.write(
      to: model,
      entries: [
        TensorEntry(
          spec: TensorSpec(name: layer + ".weight", dtype: .f32, shape: input.shape), bytes: golden.data(input)),
        TensorEntry(spec: TensorSpec(name: layer + ".bias", dtype: .f32, shape: [input.shape[0]])) {
          try $0.write(contentsOf: [Float](repeating: 0.5, count: input.shape[0]))
        },
      ], metadata: nil)
    var request = ConversionRequest()
    request.dtype = .f8e4m3
    request.scaledFP8 = true
    let scaled = directory + "/scaled.safetensors"
    _ = try Converter.convert(input: model, output: scaled, request: request)
    let file = try SafeTensorsFile(path: scaled)
    let marker = try #require(file.info(ScaledFP8.marker))
    #expect(marker.dtype == .f8e4m3 && marker.shape == [0], "the marker's dtype names the fp8 type")
    #expect(Array(file.data(try #require(file.info(layer + ".weight")))) == Array(try golden.data(named: "weight")))
    let scale = try #require(file.info(layer + ".scale_weight"))
    #expect(scale.shape == [] && scale.dtype == .f32)
    #expect(Array(file.data(scale)) == Array(try golden.data(named: "scale_weight")))
    #expect(file.info(layer + ".bias")?.dtype == .f32)

    request = ConversionRequest()
    request.dtype = .f32
    let back = directory + "/back.safetensors"
    _ = try Converter.convert(input: scaled, output: back, request: request)
    let restored = try SafeTensorsFile(path: back)
    #expect(
      Array(restored.data(try #require(restored.info(layer + ".weight"))))
        == Array(try golden.data(named: "dequantized")))
    #expect(!restored.contains(ScaledFP8.marker) && !restored.contains(layer + ".scale_weight"))
  }
}
