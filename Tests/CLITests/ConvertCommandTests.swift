import Foundation
import TestSupport
import Testing

@Suite struct ConvertCommandTests {
  let fixture = TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")

  @Test func convertsAndReports() throws {
    let output = TestPaths.temporaryDirectory("cli-convert") + "/out.safetensors"
    let run = try BinaryRun.run(["convert", fixture, "-o", output, "--dtype", "bf16", "--json"])
    #expect(run.status == 0, "\(run.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect(report["tensorsConverted"] as? Int == 928)
    let info = try BinaryRun.run(["info", "--json", output])
    let object = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
    #expect((object["dtypes"] as? [String: Int])?["BF16"] == 928)
    #expect((object["prediction"] as? [String: Any])?["prediction"] as? String == "v", "markers survive conversion")
  }

  @Test func overflowExitsTwoAndWritesNothing() throws {
    let directory = TestPaths.temporaryDirectory("cli-overflow")
    let wide = directory + "/wide.safetensors"
    // fp8 e4m3fn holds ±448; a 2-D weight with 1000 in it cannot be converted without --clamp.
    let header = #"{"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#
    var bytes = Data()
    var length = UInt64(header.utf8.count).littleEndian
    bytes.append(Data(bytes: &length, count: 8))
    bytes.append(Data(header.utf8))
    var values: [Float] = [1, 1000]
    bytes.append(Data(bytes: &values, count: 8))
    _ = FileManager.default.createFile(atPath: wide, contents: bytes)
    let output = directory + "/out.safetensors"
    let run = try BinaryRun.run(["convert", wide, "-o", output, "--dtype", "fp8"])
    #expect(run.status == 2)
    #expect(run.stderr.contains("w (1 values)") && run.stderr.contains("--clamp"), "\(run.stderr)")
    #expect(!FileManager.default.fileExists(atPath: output))
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".partial") }.isEmpty)
    let clamped = try BinaryRun.run(["convert", wide, "-o", output, "--dtype", "fp8", "--clamp"])
    #expect(clamped.status == 0, "\(clamped.stderr)")
  }

  @Test func int8RoundTrip() throws {
    let directory = TestPaths.temporaryDirectory("cli-int8")
    let run = try BinaryRun.run(["convert", fixture, "-o", directory + "/q.safetensors", "--dtype", "int8", "--json"])
    #expect(run.status == 0, "\(run.stderr)")
    let info = try BinaryRun.run(["info", "--json", directory + "/q.safetensors"])
    let object = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
    let dtypes = try #require(object["dtypes"] as? [String: Int])
    #expect((dtypes["I8"] ?? 0) > 0 && (dtypes["U8"] ?? 0) == dtypes["I8"])
    let back = try BinaryRun.run([
      "convert", directory + "/q.safetensors", "-o", directory + "/back.safetensors", "--dtype", "fp16",
    ])
    #expect(back.status == 0, "\(back.stderr)")
    let restored = try BinaryRun.run(["info", "--json", directory + "/back.safetensors"])
    let again = try #require(try JSONSerialization.jsonObject(with: Data(restored.stdout.utf8)) as? [String: Any])
    #expect(again["tensorCount"] as? Int == 931, "scales and comfy_quant tensors are gone again")
  }

  @Test func ggufRoundTripThroughTheCLI() throws {
    let directory = TestPaths.temporaryDirectory("cli-gguf")
    let run = try BinaryRun.run(["convert", fixture, "-o", directory + "/m.gguf", "--dtype", "q4_0"])
    #expect(run.status == 0, "\(run.stderr)")
    let described = try BinaryRun.run(["info", "--json", directory + "/m.gguf"])
    #expect(described.status == 0, "\(described.stderr)")
    let gguf = try #require(try JSONSerialization.jsonObject(with: Data(described.stdout.utf8)) as? [String: Any])
    #expect(gguf["format"] as? String == "gguf")
    #expect(((gguf["dtypes"] as? [String: Int])?["Q4_0"] ?? 0) > 0)
    #expect((gguf["architecture"] as? [String: Any])?["kind"] as? String == "sdxl-topology-reduced")
    let back = try BinaryRun.run(["convert", directory + "/m.gguf", "-o", directory + "/m.safetensors"])
    #expect(back.status == 0, "\(back.stderr)")
    let info = try BinaryRun.run(["info", "--json", directory + "/m.safetensors"])
    let object = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
    #expect(object["tensorCount"] as? Int == 931)
    #expect((object["prediction"] as? [String: Any])?["prediction"] as? String == "v")
  }

  @Test func ggufMixtureWithReportAndQuantizerThroughTheCLI() throws {
    let directory = TestPaths.temporaryDirectory("cli-gguf-mixture")
    let run = try BinaryRun.run([
      "convert", fixture, "-o", directory + "/m.gguf", "--dtype", "q4_k_m", "--quantizer", "unit-importance",
      "--report", "--json",
    ])
    #expect(run.status == 0, "\(run.stderr)")
    let document = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    let result = (document["result"] as? [String: Any]) ?? document
    let types = try #require(result["types"] as? [String: Int])
    #expect(types["q6_K"] ?? 0 > 0 && types["q8_0"] ?? 0 > 0, "\(types)")
    let errors = try #require(result["quantization"] as? [[String: Any]])
    #expect(errors.count == types.filter { !["f16", "f32", "bf16", "i64"].contains($0.key) }.values.reduce(0, +))
    let relative = errors.compactMap { $0["relativeMaxError"] as? Double }
    #expect(relative.count == errors.count && relative == relative.sorted(by: >))
    // Human output lists the mixture and the errors; --report without GGUF output is refused.
    let text = try BinaryRun.run(["convert", fixture, "-o", directory + "/t.gguf", "--dtype", "q4_K", "--report"])
    #expect(text.stdout.contains("types: ") && text.stdout.contains("quantization error, worst first"))
    let refused = try BinaryRun.run([
      "convert", fixture, "-o", directory + "/x.safetensors", "--dtype", "fp16", "--report",
    ])
    #expect(refused.status == 2)
  }

  @Test func defaultQuantizerWritesUnitImportanceBytes() throws {
    // The default block scales are ggml's unit-importance search (stable-diffusion.cpp's bytes),
    // not the reference quantizer's; an explicit --quantizer on safetensors output is refused.
    let directory = TestPaths.temporaryDirectory("cli-gguf-default-quantizer")
    func bytes(_ name: String, _ extra: [String]) throws -> Data {
      let path = directory + "/" + name
      let run = try BinaryRun.run(["convert", fixture, "-o", path, "--dtype", "q4_0"] + extra)
      #expect(run.status == 0, "\(run.stderr)")
      return try #require(FileManager.default.contents(atPath: path))
    }
    let standard = try bytes("default.gguf", [])
    #expect(standard == (try bytes("unit.gguf", ["--quantizer", "unit-importance"])))
    #expect(standard != (try bytes("reference.gguf", ["--quantizer", "reference"])))
    let refused = try BinaryRun.run([
      "convert", fixture, "-o", directory + "/x.safetensors", "--dtype", "fp16", "--quantizer", "reference",
    ])
    #expect(refused.status == 2 && refused.stderr.contains("--quantizer apply to GGUF output"))
  }

  @Test func diffusersLayoutRoundTrip() throws {
    let directory = TestPaths.temporaryDirectory("cli-diffusers")
    let out = try BinaryRun.run(["convert", fixture, "-o", directory + "/pipe", "--layout", "diffusers"])
    #expect(out.status == 0, "\(out.stderr)")
    let back = try BinaryRun.run(["convert", directory + "/pipe", "-o", directory + "/back.safetensors"])
    #expect(back.status == 0, "\(back.stderr)")
    let a = try BinaryRun.run(["info", "--hash", "--json", fixture])
    let b = try BinaryRun.run(["info", "--hash", "--json", directory + "/back.safetensors"])
    func tensorCount(_ text: String) throws -> Int? {
      (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["tensorCount"] as? Int
    }
    #expect(try tensorCount(a.stdout) == tensorCount(b.stdout))
    let again = try BinaryRun.run(["convert", fixture, "-o", directory + "/pipe", "--layout", "diffusers"])
    #expect(again.status == 2, "an existing folder is never overwritten")
  }

  @Test func badRequestsExitTwoOrThree() throws {
    let output = TestPaths.temporaryDirectory("cli-bad") + "/x.safetensors"
    #expect(try BinaryRun.run(["convert", fixture, "-o", output, "--dtype", "int4"]).status == 2)
    #expect(
      try BinaryRun.run([
        "convert", fixture, "-o", output.replacingOccurrences(of: ".safetensors", with: ".gguf"), "--dtype", "fp8",
      ]).status == 2)
    #expect(try BinaryRun.run(["convert", fixture, "-o", output, "--dtype", "q8_0"]).status == 2)
    #expect(try BinaryRun.run(["convert", fixture, "-o", output, "--components", "wings"]).status == 2)
    #expect(try BinaryRun.run(["convert", fixture, "-o", output, "--ztsnr"]).status == 2)
    #expect(try BinaryRun.run(["convert", fixture, "-o", fixture, "--dtype", "fp32"]).status == 2)
    #expect(try BinaryRun.run(["convert", "/nonexistent.safetensors", "-o", output]).status == 3)
    #expect(!FileManager.default.fileExists(atPath: output))
  }
}
