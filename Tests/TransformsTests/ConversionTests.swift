import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

@Suite struct ConversionTests {
  let fixture = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")

  func temp(_ name: String) -> String { TestPaths.temporaryDirectory("convert") + "/" + name }

  func request(_ configure: (inout ConversionRequest) -> Void) -> ConversionRequest {
    var request = ConversionRequest()
    configure(&request)
    return request
  }

  func floats(_ file: SafeTensorsFile, _ tensor: TensorInfo) -> [Float] {
    var out = [Float](repeating: 0, count: tensor.elementCount)
    out.withUnsafeMutableBufferPointer { FloatCodec.decode(file.data(tensor), dtype: tensor.dtype, into: $0) }
    return out
  }

  @Test func halfToFloatAndBackIsBitIdentical() throws {
    let wide = temp("wide.safetensors"), narrow = temp("narrow.safetensors")
    _ = try Converter.convert(input: fixture, output: wide, request: request { $0.dtype = .f32 })
    _ = try Converter.convert(input: wide, output: narrow, request: request { $0.dtype = .f16 })
    let original = try SafeTensorsFile(path: fixture)
    let widened = try SafeTensorsFile(path: wide)
    let back = try SafeTensorsFile(path: narrow)
    #expect(back.tensors.count == original.tensors.count)
    for tensor in original.tensors {
      let a = try #require(back.info(tensor.name))
      #expect(a.dtype == tensor.dtype && a.shape == tensor.shape)
      #expect(Array(back.data(a)) == Array(original.data(tensor)), "\(tensor.name)")
      let w = try #require(widened.info(tensor.name))
      #expect(w.dtype == (tensor.dtype == .f16 ? .f32 : tensor.dtype), "position_ids stays int64")
    }
    #expect(back.metadata["rouwei.tool"] == "rouwei-ckpt")
    #expect(back.metadata["modelspec.title"] == "tiny-sdxl-eps", "the input's metadata is kept")
  }

  @Test func bf16AndFP8FollowTheCodec() throws {
    for dtype in [DType.bf16, .f8e4m3, .f8e5m2] {
      let out = temp("\(dtype.rawValue).safetensors")
      _ = try Converter.convert(
        input: fixture, output: out,
        request: request {
          $0.dtype = dtype; $0.overflowPolicy = .clamp
        })
      let source = try SafeTensorsFile(path: fixture)
      let result = try SafeTensorsFile(path: out)
      for tensor in source.tensors where tensor.dtype.isFloatingPoint {
        let converted = try #require(result.info(tensor.name))
        let expected = Converter.target(for: tensor, request: request { $0.dtype = dtype })
        #expect(converted.dtype == expected, "\(tensor.name)")
        if dtype.bitWidth == 8 && tensor.shape.count == 1 {
          #expect(converted.dtype == tensor.dtype, "1-D stays wide for fp8")
        }
        guard converted.dtype == dtype else { continue }
        let values = floats(source, tensor)
        var bytes = [UInt8](repeating: 0, count: values.count * FloatCodec.width(dtype))
        values.withUnsafeBufferPointer { input in
          bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(input, to: dtype, into: $0, policy: .clamp) }
        }
        #expect(Array(result.data(converted)) == bytes, "\(tensor.name) as \(dtype)")
      }
    }
  }

  func overflowingFile() throws -> String {
    let path = temp("big.safetensors")
    let values: [Float] = [1, 70000, -2, -1e6]
    try SafeTensorsWriter.write(
      to: path,
      entries: [
        TensorEntry(spec: TensorSpec(name: "loud", dtype: .f32, shape: [4])) { try $0.write(contentsOf: values) },
        TensorEntry(spec: TensorSpec(name: "quiet", dtype: .f32, shape: [2])) {
          try $0.write(contentsOf: [Float(0.5), 2])
        },
      ], metadata: nil)
    return path
  }

  @Test func overflowIsRefusedAndNothingIsWritten() throws {
    let input = try overflowingFile()
    let output = temp("refused.safetensors")
    do {
      _ = try Converter.convert(input: input, output: output, request: request { $0.dtype = .f16 })
      Issue.record("overflow was not refused")
    } catch let error as ConversionError {
      guard case .overflow(_, let target, let tensors) = error else { throw error }
      #expect(target == .f16)
      #expect(tensors.map(\.name) == ["loud"] && tensors.first?.count == 2)
      #expect(error.description.contains("loud") && error.description.contains("--clamp"))
    }
    #expect(!FileManager.default.fileExists(atPath: output))
  }

  @Test func clampSaturatesAndKeepKeepsWide() throws {
    let input = try overflowingFile()
    let clamped = temp("clamped.safetensors")
    let report = try Converter.convert(
      input: input, output: clamped,
      request: request {
        $0.dtype = .f16; $0.overflowPolicy = .clamp
      })
    #expect(report.clamped == ["loud": 2])
    let file = try SafeTensorsFile(path: clamped)
    #expect(floats(file, try #require(file.info("loud"))) == [1, 65504, -2, -65504])
    let kept = temp("kept.safetensors")
    _ = try Converter.convert(
      input: input, output: kept,
      request: request {
        $0.dtype = .f16; $0.keepPatterns = ["lo*"]
      })
    let keptFile = try SafeTensorsFile(path: kept)
    #expect(keptFile.info("loud")?.dtype == .f32 && keptFile.info("quiet")?.dtype == .f16)
  }

  @Test func extractsComponentsAndSetsMarkers() throws {
    let output = temp("unet.safetensors")
    let report = try Converter.convert(
      input: fixture, output: output,
      request: request {
        $0.components = [.unet]; $0.prediction = .v; $0.zeroTerminalSNR = true
      })
    let file = try SafeTensorsFile(path: output)
    #expect(file.tensors.count == 618 + 2)
    #expect(file.contains("v_pred") && file.contains("ztsnr"))
    #expect(file.info("v_pred")?.shape == [0] && file.info("v_pred")?.dtype == .f32)
    #expect(file.metadata["modelspec.prediction_type"] == "v")
    #expect(report.warnings.count == 1, "metadata said epsilon")
    let back = temp("eps.safetensors")
    _ = try Converter.convert(input: output, output: back, request: request { $0.prediction = .epsilon })
    let epsilon = try SafeTensorsFile(path: back)
    #expect(!epsilon.contains("v_pred") && !epsilon.contains("ztsnr"))
    #expect(epsilon.metadata["modelspec.prediction_type"] == "epsilon")
  }

  @Test func dropsEMAAndTrainingBuffers() throws {
    let input = temp("ema.safetensors")
    try SafeTensorsWriter.write(
      to: input,
      entries: ["model.diffusion_model.out.2.bias", "model_ema.decay", "alphas_cumprod"].map { name in
        TensorEntry(spec: TensorSpec(name: name, dtype: .f32, shape: [1])) { try $0.write(contentsOf: [Float(1)]) }
      }, metadata: nil)
    let output = temp("clean.safetensors")
    let report = try Converter.convert(input: input, output: output, request: request { $0.dropEMA = true })
    #expect(report.tensorsDropped == 2)
    #expect(try SafeTensorsFile(path: output).tensors.map(\.name) == ["model.diffusion_model.out.2.bias"])
  }

  /// The fixture's VAE renamed to diffusers names (the inverse of DiffusersVAEKeys), as
  /// `sdxl_vae.safetensors` ships: baking it in must reproduce the fixture's VAE exactly.
  @Test func bakesInADiffusersVAE() throws {
    let source = try SafeTensorsFile(path: fixture)
    let vae = source.tensors.filter { $0.name.hasPrefix(SingleFilePrefix.vae) }
    let levels = 4
    func diffusersName(_ ldm: String) -> String {
      var p = ldm.split(separator: ".").map(String.init)
      if p[1] == "down" && p[3] == "block" {
        p = [p[0], "down_blocks", p[2], "resnets"] + p[4...]
      } else if p[1] == "down" {
        p = [p[0], "down_blocks", p[2], "downsamplers", "0"] + p[4...]
      } else if p[1] == "up" && p[3] == "block" {
        p = [p[0], "up_blocks", String(levels - 1 - Int(p[2])!), "resnets"] + p[4...]
      } else if p[1] == "up" {
        p = [p[0], "up_blocks", String(levels - 1 - Int(p[2])!), "upsamplers", "0"] + p[4...]
      } else if p[1] == "mid" && p[2].hasPrefix("block_") {
        p = [p[0], "mid_block", "resnets", String(Int(p[2].dropFirst(6))! - 1)] + p[3...]
      } else if p[1] == "mid" {
        let leaf = ["norm": ["group_norm"], "q": ["to_q"], "k": ["to_k"], "v": ["to_v"], "proj_out": ["to_out", "0"]][
          p[3]]!
        p = [p[0], "mid_block", "attentions", "0"] + leaf + p[4...]
      } else if p[1] == "norm_out" {
        p[1] = "conv_norm_out"
      }
      return p.joined(separator: ".").replacingOccurrences(of: "nin_shortcut", with: "conv_shortcut")
    }
    let diffusersVAE = temp("sdxl_vae.safetensors")
    try SafeTensorsWriter.write(
      to: diffusersVAE,
      entries: vae.map { tensor in
        let name = diffusersName(String(tensor.name.dropFirst(SingleFilePrefix.vae.count)))
        let shape =
          name.contains("attentions") && tensor.shape.count == 4 ? Array(tensor.shape.prefix(2)) : tensor.shape
        return TensorEntry(spec: TensorSpec(name: name, dtype: tensor.dtype, shape: shape), bytes: source.data(tensor))
      }, metadata: nil)
    // Bake it into a copy whose VAE was dropped, then compare with the original.
    let noVAE = temp("novae.safetensors")
    _ = try Converter.convert(
      input: fixture, output: noVAE, request: request { $0.components = [.unet, .clipL, .clipG] })
    let baked = temp("baked.safetensors")
    _ = try Converter.convert(input: noVAE, output: baked, request: request { $0.replacementVAE = diffusersVAE })
    let result = try SafeTensorsFile(path: baked)
    #expect(result.tensors.count == source.tensors.count)
    for tensor in vae {
      let got = try #require(result.info(tensor.name), "\(tensor.name)")
      #expect(got.shape == tensor.shape && Array(result.data(got)) == Array(source.data(tensor)), "\(tensor.name)")
    }
  }

  @Test func refusesToOverwriteItsInput() throws {
    let copy = temp("same.safetensors")
    try FileManager.default.copyItem(atPath: fixture, toPath: copy)
    #expect(throws: SafeTensorsError.self) {
      _ = try Converter.convert(input: copy, output: copy, request: request { $0.dtype = .f32 })
    }
  }

  @Test func globs() {
    #expect(Glob.matches("model.diffusion_model.out.2.weight", pattern: "model.*.weight"))
    #expect(Glob.matches("abc", pattern: "a?c") && !Glob.matches("abc", pattern: "a?d"))
    #expect(Glob.matches("x", pattern: "*") && !Glob.matches("xy", pattern: "x"))
  }
}
