import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Transforms
import Weights

/// A tensorwise fp8 layer (comfy_quant style: F8 `weight` with a scalar `weight_scale`, no
/// `scaled_fp8` marker) is one stored form with one meaning: the engine's decoder, `convert` and
/// `merge` all apply its scale (they used to disagree: the converter cast the fp8 codes and kept
/// the scale as a stray tensor).
@Suite struct TensorwiseScaleTests {
  static let layer = SingleFilePrefix.unet + "input_blocks.4.1.proj_in"
  static let scale: Float = 0.375

  /// A file with one tensorwise-fp8 Linear, one F16 weight with an unrelated `weight_scale`, and a bias.
  static func makeFile(_ directory: String) throws -> (path: String, codes: [UInt8]) {
    var codes = [UInt8](repeating: 0, count: 4 * 8)
    for i in codes.indices { codes[i] = FloatCodec.e4m3(Float(i - 16) * 0.31).code }
    let path = directory + "/tensorwise.safetensors"
    let half: [UInt16] = (0..<8).map { FloatCodec.half(Float($0) / 4) }
    try SafeTensorsWriter.write(
      to: path,
      entries: [
        TensorEntry(spec: TensorSpec(name: layer + ".weight", dtype: .f8e4m3, shape: [4, 8])) {
          try $0.write(contentsOf: codes)
        },
        TensorEntry(spec: TensorSpec(name: layer + ".weight_scale", dtype: .f32, shape: [])) {
          try $0.write(contentsOf: [scale])
        },
        TensorEntry(spec: TensorSpec(name: layer + ".bias", dtype: .f16, shape: [8])) {
          try $0.write(contentsOf: half)
        },
        TensorEntry(spec: TensorSpec(name: SingleFilePrefix.unet + "out.2.weight", dtype: .f16, shape: [8])) {
          try $0.write(contentsOf: half)
        },
        TensorEntry(spec: TensorSpec(name: SingleFilePrefix.unet + "out.2.weight_scale", dtype: .f32, shape: [])) {
          try $0.write(contentsOf: [Float(2)])
        },
      ], metadata: [:])
    return (path, codes)
  }

  static func expected(_ codes: [UInt8]) -> [Float] {
    var decoded = [Float](repeating: 0, count: codes.count)
    codes.withUnsafeBytes { raw in
      decoded.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: .f8e4m3, into: $0) }
    }
    return decoded.map { $0 * scale }
  }

  @Test func oneRuleForScalesAndBookkeeping() throws {
    let (path, codes) = try Self.makeFile(TestPaths.temporaryDirectory("tensorwise-rule"))
    let file = try SafeTensorsFile(path: path)
    let weight = try #require(file.info(Self.layer + ".weight"))
    #expect(QuantizedLayers.scale(of: weight, in: file)?.name == Self.layer + ".weight_scale")
    #expect(QuantizedLayers.isBookkeeping(Self.layer + ".weight_scale", in: file))
    // Beside a float weight, a `weight_scale` is data: never applied, never dropped.
    let plain = try #require(file.info(SingleFilePrefix.unet + "out.2.weight"))
    #expect(QuantizedLayers.scale(of: plain, in: file) == nil)
    #expect(!QuantizedLayers.isBookkeeping(SingleFilePrefix.unet + "out.2.weight_scale", in: file))
    // The decoder applies it, and the weight source serves the weight, not its scale.
    #expect(try TensorDecoder.resolve(file: file, tensor: weight).decodeAll() == Self.expected(codes))
    let source = try WeightSource(path: path)
    #expect(!source.contains(Self.layer + ".weight_scale"))
    #expect(source.storedType(Self.layer + ".weight") == "F8_E4M3 × weight_scale")
  }

  @Test func convertingToFP16AppliesTheScale() throws {
    let directory = TestPaths.temporaryDirectory("tensorwise-convert")
    let (path, codes) = try Self.makeFile(directory)
    var request = ConversionRequest()
    request.dtype = .f16
    let output = directory + "/fp16.safetensors"
    _ = try Converter.convert(input: path, output: output, request: request)
    let converted = try SafeTensorsFile(path: output)
    let weight = try #require(converted.info(Self.layer + ".weight"))
    #expect(weight.dtype == .f16)
    var values = [Float](repeating: 0, count: weight.elementCount)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(converted.data(weight), dtype: .f16, into: $0) }
    // fp8 × 0.375 is exact in fp16 for these codes.
    #expect(values == Self.expected(codes))
    #expect(!converted.contains(Self.layer + ".weight_scale"))
    // The unrelated float weight and its `weight_scale` data are carried over as they were.
    #expect(converted.contains(SingleFilePrefix.unet + "out.2.weight_scale"))
  }

  @Test func mergingDequantizesWithTheScale() throws {
    let directory = TestPaths.temporaryDirectory("tensorwise-merge")
    let (path, codes) = try Self.makeFile(directory)
    // A file merged with itself at 0.5 is its own values: the weight dequantized with its scale
    // (in fp16, the merger's default for quantized inputs), the scale gone, the unrelated
    // float weight_scale blended like any tensor.
    var request = MergeRequest(inputs: [path, path], method: .weightedSum, alpha: 0.5)
    request.dtype = .f32
    let output = directory + "/merged.safetensors"
    _ = try Merger.merge(request, output: output)
    let merged = try SafeTensorsFile(path: output)
    let weight = try #require(merged.info(Self.layer + ".weight"))
    var values = [Float](repeating: 0, count: weight.elementCount)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(merged.data(weight), dtype: .f32, into: $0) }
    #expect(values == Self.expected(codes))
    #expect(!merged.contains(Self.layer + ".weight_scale"))
    #expect(merged.contains(SingleFilePrefix.unet + "out.2.weight_scale"))
  }
}
