import Crypto
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

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
    values.withUnsafeBufferPointer { v in
      ours.withUnsafeMutableBytes { GGMLQuantizer.quantize(v, type: type, into: $0) }
    }
    let theirs = Array(try file.data(named: type.name))
    #expect(ours.count == theirs.count)
    let firstDifference = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
    #expect(
      firstDifference == nil,
      "\(type.name): first differing byte \(firstDifference ?? -1) (block \((firstDifference ?? 0) / type.blockBytes))")
    var restored = [Float](repeating: 0, count: values.count)
    ours.withUnsafeBytes { raw in
      restored.withUnsafeMutableBufferPointer { GGMLQuantizer.dequantize(raw, type: type, into: $0) }
    }
    let expected = try file.data(named: "dequant_" + type.name)
    var reference = [Float](repeating: 0, count: values.count)
    reference.withUnsafeMutableBufferPointer { FloatCodec.decode(expected, dtype: .f32, into: $0) }
    #expect(restored.map(\.bitPattern) == reference.map(\.bitPattern), "\(type.name) dequantization")
  }

  @Test func writerStillProducesTheFileGGUFPyAccepted() throws {
    let data = try #require(FileManager.default.contents(atPath: TestPaths.fixture("codecs/gguf-check.json")))
    let check = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let output = TestPaths.temporaryDirectory("gguf") + "/tiny-q8.gguf"
    // The golden was made with the reference quantizer, whose name the file records (`rouwei.quantizer`).
    let report = try GGUFExport.export(
      input: TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"), output: output,
      quantization: GGUFQuantization(type: .q8_0, method: .reference), components: nil, dropEMA: false)
    #expect(report.tensorsWritten == check["tensors"] as? Int)
    let bytes = try #require(FileManager.default.contents(atPath: output))
    let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    #expect(digest == check["sha256"] as? String, "our GGUF bytes changed since gguf-py checked them; rerun the script")
    #expect(bytes.prefix(4) == Data("GGUF".utf8))
  }

  @Test func bf16TensorsLeftUnquantizedStayBF16() throws {
    // A BF16 model exported to Q8_0: the 32-wide weight is quantized, the bias (with a value far
    // beyond F16's 65504) stays BF16, byte for byte, and reads back exactly.
    let directory = TestPaths.temporaryDirectory("gguf-bf16")
    let input = directory + "/bf16.safetensors"
    let weight = (0..<(32 * 32)).map {
      UInt16(truncatingIfNeeded: Float(Double($0 % 17) * 0.01 - 0.08).bitPattern >> 16)
    }
    let bias = [Float(1.0e6), -3.0e38, 0.5, -1.0e-30].map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
    try SafeTensorsWriter.write(
      to: input,
      entries: [
        TensorEntry(spec: TensorSpec(name: "model.diffusion_model.out.2.weight", dtype: .bf16, shape: [32, 32])) {
          try $0.write(contentsOf: weight)
        },
        TensorEntry(spec: TensorSpec(name: "model.diffusion_model.out.2.bias", dtype: .bf16, shape: [4])) {
          try $0.write(contentsOf: bias)
        },
      ], metadata: nil)
    _ = try GGUFExport.export(input: input, output: directory + "/q.gguf", type: .q8_0, components: nil, dropEMA: false)
    let gguf = try GGUFFile(path: directory + "/q.gguf")
    let storedBias = try #require(gguf.tensor(named: "model.diffusion_model.out.2.bias"))
    #expect(storedBias.type == .bf16)
    #expect(Array(gguf.data(storedBias)) == bias.withUnsafeBytes { Array($0) })
    #expect(gguf.tensor(named: "model.diffusion_model.out.2.weight")?.type == .q8_0)
    let values = try TensorDecoder.resolve(gguf: gguf, tensor: storedBias).decodeAll()
    #expect(values.map(\.bitPattern) == bias.map { UInt32($0) << 16 })
    #expect(values[0] > 65504 && values[1] < -65504, "not clamped to F16")
  }

  @Test func sdcppQuantizationRules() {
    func info(_ name: String, _ shape: [Int]) -> TensorInfo {
      TensorInfo(name: name, dtype: .f16, shape: shape, dataOffsets: (0, shape.reduce(1, *) * 2))
    }
    #expect(GGUFExport.quantizes(info("model.diffusion_model.input_blocks.4.1.proj_in.weight", [640, 640])))
    #expect(
      !GGUFExport.quantizes(info("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", [320, 320, 3, 3])),
      "3×3 convs: ne[0] = 3")
    #expect(!GGUFExport.quantizes(info("model.diffusion_model.input_blocks.4.1.proj_in.bias", [640])))
    #expect(!GGUFExport.quantizes(info("model.diffusion_model.time_embed.0.weight", [1280, 320])))
    #expect(!GGUFExport.quantizes(info("conditioner.embedders.1.model.token_embedding.weight", [49408, 1280])))
  }
}

@Suite struct GGUFReaderTests {
  @Test func roundTripDequantizes() throws {
    let directory = TestPaths.temporaryDirectory("gguf-read")
    let source = TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")
    _ = try GGUFExport.export(
      input: source, output: directory + "/q.gguf", type: .q8_0, components: nil, dropEMA: false)
    let gguf = try GGUFFile(path: directory + "/q.gguf")
    #expect(gguf.metadata["rouwei.tool"] == "rouwei-ckpt")
    _ = try GGUFImport.convert(input: directory + "/q.gguf", output: directory + "/back.safetensors", dtype: .f32)
    let back = try SafeTensorsFile(path: directory + "/back.safetensors")
    let original = try SafeTensorsFile(path: source)
    #expect(back.tensors.count == original.tensors.count)
    #expect(back.contains("v_pred") && back.contains("ztsnr"), "markers survive the round trip")
    for tensor in original.tensors {
      let restored = try #require(back.info(tensor.name))
      #expect(restored.shape == tensor.shape, "\(tensor.name)")
      guard tensor.dtype == .f16, let stored = gguf.tensors.first(where: { $0.name == tensor.name }) else { continue }
      var a = [Float](repeating: 0, count: tensor.elementCount), b = a
      a.withUnsafeMutableBufferPointer { FloatCodec.decode(original.data(tensor), dtype: .f16, into: $0) }
      b.withUnsafeMutableBufferPointer { FloatCodec.decode(back.data(restored), dtype: .f32, into: $0) }
      if stored.type == .f16 {
        #expect(a == b, "\(tensor.name) unquantized must be exact")
      } else {
        // Q8_0: each value within half a quantization step (plus the f16 rounding of the scale).
        for block in stride(from: 0, to: a.count, by: 32) {
          let peak = a[block..<(block + 32)].map(abs).max() ?? 0
          for i in block..<(block + 32) {
            #expect(abs(a[i] - b[i]) <= peak / 127 * 0.56 + 1e-7, "\(tensor.name)[\(i)]")
          }
        }
      }
    }
  }

  func hostile(_ bytes: [UInt8]) throws -> String {
    let path = TestPaths.temporaryDirectory("gguf-bad") + "/bad.gguf"
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
  }

  func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

  @Test func hostileHeadersAreRejected() throws {
    let magic = Array("GGUF".utf8)
    let cases: [[UInt8]] = [
      [],
      Array("GGML".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(0)),
      magic + le(UInt32(9)) + le(UInt64(0)) + le(UInt64(0)),
      magic + le(UInt32(3)) + le(UInt64.max) + le(UInt64(0)),
      magic + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + le(UInt64(1 << 40)),
      magic + le(UInt32(3)) + le(UInt64(1)) + le(UInt64(0)) + le(UInt64(1)) + Array("w".utf8) + le(UInt32(9)),
      magic + le(UInt32(3)) + le(UInt64(1)) + le(UInt64(0)) + le(UInt64(1)) + Array("w".utf8) + le(UInt32(1))
        + le(UInt64(1 << 30)) + le(UInt32(0)) + le(UInt64(0)),
      magic + le(UInt32(3)) + le(UInt64(1)) + le(UInt64(0)) + le(UInt64(1)) + Array("w".utf8) + le(UInt32(1))
        + le(UInt64(32)) + le(UInt32(99)) + le(UInt64(0)),
      magic + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + le(UInt64(1)) + Array("k".utf8) + le(UInt32(9))
        + le(UInt32(9)) + le(UInt64(1 << 50)),
    ]
    for (index, bytes) in cases.enumerated() {
      let path = try hostile(bytes)
      do {
        _ = try GGUFFile(path: path)
        Issue.record("hostile case \(index) was accepted")
      } catch let error as GGUFError {
        #expect(error.description.contains("bad.gguf"))
      } catch let error as SafeTensorsError {
        #expect(index == 0 || error.isIOFailure == false, "case \(index): \(error)")
      }
    }
  }
}
