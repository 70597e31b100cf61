import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// Merges against torch goldens (Scripts/fixtures/make_merge_goldens.py) and the rules for what is
/// not a weight.
@Suite struct MergeTests {
  let a = TestPaths.fixture("merge/a.safetensors")
  let b = TestPaths.fixture("merge/b.safetensors")
  let c = TestPaths.fixture("merge/c.safetensors")

  func temp() -> String { TestPaths.temporaryDirectory("merge") + "/out.safetensors" }

  func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
    let info = try #require(file.info(name), "\(name)")
    var out = [Float](repeating: 0, count: info.elementCount)
    out.withUnsafeMutableBufferPointer { FloatCodec.decode(file.data(info), dtype: info.dtype, into: $0) }
    return out
  }

  func compare(_ output: String, golden: String, exact: Bool) throws {
    let result = try SafeTensorsFile(path: output)
    let expected = try SafeTensorsFile(path: TestPaths.fixture("merge/expected-\(golden).safetensors"))
    try expectNothingBeyondGolden(result, expected, a: a, golden)
    for tensor in expected.tensors {
      let got = try floats(result, tensor.name)
      let want = try floats(expected, tensor.name)
      if exact {
        #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "\(golden): \(tensor.name) differs from torch")
      } else {
        let closeness = Closeness(got, want)
        #expect(closeness.nmse < 1e-12, "\(golden): \(tensor.name): \(closeness)")
      }
    }
  }

  func request(
    _ inputs: [String], _ method: MergeMethod, alpha: Double = 0.5, _ configure: (inout MergeRequest) -> Void = { _ in }
  ) -> MergeRequest {
    var request = MergeRequest(inputs: inputs, method: method, alpha: alpha)
    request.prediction = .epsilon  // B carries v_pred; the inputs disagree
    configure(&request)
    return request
  }

  @Test func weightedSumIsBitIdenticalToTorch() throws {
    let out = temp()
    _ = try Merger.merge(request([a, b], .weightedSum, alpha: 0.3), output: out)
    try compare(out, golden: "weighted-sum", exact: true)
  }

  @Test func addDifferenceIsBitIdenticalToTorch() throws {
    let out = temp()
    _ = try Merger.merge(request([a, b, c], .addDifference, alpha: 0.7), output: out)
    try compare(out, golden: "add-difference", exact: true)
  }

  @Test func weightedSumOfThreeIsBitIdenticalToTorch() throws {
    let out = temp()
    _ = try Merger.merge(request([a, b, c], .sum) { $0.weights = [0.5, 0.3, 0.2] }, output: out)
    try compare(out, golden: "sum", exact: true)
  }

  @Test func slerpMatchesTorch() throws {
    let out = temp()
    _ = try Merger.merge(request([a, b], .slerp, alpha: 0.4), output: out)
    try compare(out, golden: "slerp", exact: false)
  }

  @Test func supermergerBlocksMatchTorch() throws {
    let out = temp()
    let blocks = [
      0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 0.05,
    ]
    _ = try Merger.merge(request([a, b], .weightedSum) { $0.blocks = blocks }, output: out)
    try compare(out, golden: "blocks", exact: true)
  }

  @Test func positionIDsAndScalarsComeFromA() throws {
    let out = temp()
    _ = try Merger.merge(request([a, b], .weightedSum, alpha: 0.5), output: out)
    let result = try SafeTensorsFile(path: out)
    let source = try SafeTensorsFile(path: a)
    for name in [
      "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
      "conditioner.embedders.1.model.logit_scale",
    ] {
      let got = try #require(result.info(name))
      let want = try #require(source.info(name))
      #expect(got.dtype == want.dtype && Array(result.data(got)) == Array(source.data(want)), "\(name)")
    }
  }

  @Test func disagreeingPredictionStopsTheMerge() throws {
    let out = temp()
    var plain = MergeRequest(inputs: [a, b], method: .weightedSum, alpha: 0.5)
    #expect(throws: MergeError.self) { _ = try Merger.merge(plain, output: out) }
    #expect(!FileManager.default.fileExists(atPath: out))
    plain.prediction = .v
    plain.zeroTerminalSNR = true
    let report = try Merger.merge(plain, output: out)
    let result = try SafeTensorsFile(path: out)
    #expect(result.contains("v_pred") && result.contains("ztsnr"))
    #expect(result.metadata["modelspec.prediction_type"] == "v")
    #expect(report.prediction.hasPrefix("v"))
  }

  @Test func agreeingInputsKeepTheirMarkers() throws {
    let out = temp()
    _ = try Merger.merge(MergeRequest(inputs: [b, b], method: .weightedSum, alpha: 0.5), output: out)
    let result = try SafeTensorsFile(path: out)
    #expect(result.contains("v_pred") && !result.contains("ztsnr"))
  }

  @Test func recordsRecipeAndHashes() throws {
    let out = temp()
    let merge = request([a, b], .weightedSum, alpha: 0.3)
    _ = try Merger.merge(merge, output: out)
    let metadata = try SafeTensorsFile(path: out).metadata
    let recipe = try JSONDecoder().decode(
      MergeRequest.self, from: Data(try #require(metadata["rouwei.merge.recipe"]).utf8))
    let expectedHash = ModelHasher.hashes(of: try MappedFile(path: a), dataOffset: nil).sha256
    var recorded = merge
    recorded.inputs = ["a.safetensors", "b.safetensors"]
    recorded.inputHashes = [expectedHash, ModelHasher.hashes(of: try MappedFile(path: b), dataOffset: nil).sha256]
    #expect(recipe == recorded, "the recorded recipe repeats the merge, naming inputs by file name and SHA-256")
    #expect(metadata["rouwei.merge.inputs"]?.contains(expectedHash) == true)
    #expect(metadata["sd_merge_recipe"]?.contains(expectedHash) == true)
    #expect(metadata["sd_merge_models"]?.contains(expectedHash) == true)
  }

  @Test func shapeMismatchNamesTheKey() throws {
    let directory = TestPaths.temporaryDirectory("mismatch")
    let other = directory + "/other.safetensors"
    let key = "model.diffusion_model.out.2.weight"
    try SafeTensorsWriter.write(
      to: other,
      entries: try SafeTensorsFile(path: a).tensors.map { tensor in
        let shape = tensor.name == key ? [2, 8, 3, 3] : tensor.shape
        let spec = TensorSpec(name: tensor.name, dtype: tensor.dtype, shape: shape)
        return TensorEntry(spec: spec) { try $0.write(contentsOf: [UInt8](repeating: 0, count: spec.byteCount)) }
      }, metadata: nil)
    do {
      _ = try Merger.merge(
        MergeRequest(inputs: [a, other], method: .weightedSum), output: directory + "/o.safetensors")
      Issue.record("shape mismatch not reported")
    } catch let error as MergeError {
      #expect(error.description.contains(key), "\(error)")
    }
  }

  @Test func missingKeysAreListedOrTakenFromA() throws {
    let directory = TestPaths.temporaryDirectory("missing")
    let partial = directory + "/partial.safetensors"
    let source = try SafeTensorsFile(path: a)
    let dropped = "model.diffusion_model.middle_block.1.proj_out.bias"
    try SafeTensorsWriter.write(
      to: partial,
      entries: source.tensors.filter { $0.name != dropped }.map {
        TensorEntry(spec: TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), bytes: source.data($0))
      },
      metadata: nil)
    var merge = MergeRequest(inputs: [a, partial], method: .weightedSum, alpha: 0.5)
    do {
      _ = try Merger.merge(merge, output: directory + "/o.safetensors")
      Issue.record("missing key not reported")
    } catch let error as MergeError {
      #expect(error.description.contains(dropped))
    }
    merge.missing = .takeA
    _ = try Merger.merge(merge, output: directory + "/o.safetensors")
    let result = try SafeTensorsFile(path: directory + "/o.safetensors")
    #expect(
      Array(result.data(try #require(result.info(dropped)))) == Array(source.data(try #require(source.info(dropped)))))
  }

  @Test func vaeFromAndTextEncoderAlpha() throws {
    let out = temp()
    _ = try Merger.merge(
      request([a, b], .weightedSum, alpha: 0.5) {
        $0.vaeFrom = 1; $0.textEncoderAlpha = 0
      }, output: out)
    let result = try SafeTensorsFile(path: out)
    let bFile = try SafeTensorsFile(path: b), aFile = try SafeTensorsFile(path: a)
    #expect(
      try floats(result, "first_stage_model.decoder.conv_out.weight")
        == floats(bFile, "first_stage_model.decoder.conv_out.weight"))
    let clip = "conditioner.embedders.1.model.text_projection"
    #expect(
      try floats(result, clip).map(\.bitPattern)
        == floats(aFile, clip).map { (Float(1) * $0 + Float(0) * $0).bitPattern })
  }

  @Test func blockTableCoversTheRealSDXLKeys() {
    var counts: [String: Int] = [:]
    for tensor in SDXLTemplate.sdxlBase.tensors {
      let block = SDXLBlocks.block(of: tensor.key, convention: .supermerger)
      #expect(block != nil, "\(tensor.key) has no supermerger block")
      counts[block ?? "-", default: 0] += 1
    }
    #expect(Set(counts.keys) == Set(SDXLBlocks.names))
    #expect(counts["M00"] == 226 && counts["BASE"] == 197 + 390 + 248)
    #expect(SDXLBlocks.block(of: "model.diffusion_model.time_embed.0.weight", convention: .sdMecha) == "BASE")
    #expect(SDXLBlocks.block(of: "first_stage_model.encoder.conv_in.weight", convention: .sdMecha) == nil)
    #expect(SDXLBlocks.comfyParameter(of: "model.diffusion_model.input_blocks.4.1.proj_in.weight") == "input_blocks.4")
  }

  @Test func inpaintingConvInMergesOnlySharedChannels() throws {
    let directory = TestPaths.temporaryDirectory("inpaint")
    let key = "model.diffusion_model.input_blocks.0.0.weight"
    let wide = directory + "/inpaint.safetensors"
    let source = try SafeTensorsFile(path: a)
    let narrow = try floats(source, key)  // [8, 4, 3, 3]
    var widened = [Float](repeating: 0, count: 8 * 9 * 9)
    for o in 0..<8 {
      for ch in 0..<9 {
        for k in 0..<9 { widened[(o * 9 + ch) * 9 + k] = ch < 4 ? narrow[(o * 4 + ch) * 9 + k] : Float(ch) }
      }
    }
    try SafeTensorsWriter.write(
      to: wide,
      entries: source.tensors.map { tensor in
        tensor.name == key
          ? TensorEntry(spec: TensorSpec(name: key, dtype: .f32, shape: [8, 9, 3, 3])) {
            try $0.write(contentsOf: widened)
          }
          : TensorEntry(
            spec: TensorSpec(name: tensor.name, dtype: tensor.dtype, shape: tensor.shape), bytes: source.data(tensor))
      }, metadata: nil)
    let out = directory + "/o.safetensors"
    _ = try Merger.merge(request([wide, b], .weightedSum, alpha: 0.3), output: out)
    let merged = try floats(try SafeTensorsFile(path: out), key)
    let other = try floats(try SafeTensorsFile(path: b), key)
    for o in 0..<8 {
      for ch in 0..<9 {
        for k in 0..<9 {
          let value = merged[(o * 9 + ch) * 9 + k]
          let expected =
            ch < 4 ? Float(0.7) * widened[(o * 9 + ch) * 9 + k] + Float(0.3) * other[(o * 4 + ch) * 9 + k] : Float(ch)
          #expect(value == expected)
        }
      }
    }
  }
}

@Suite struct MergeMethodGoldenTests {
  let a = TestPaths.fixture("merge/a.safetensors")
  let b = TestPaths.fixture("merge/b.safetensors")
  let c = TestPaths.fixture("merge/c.safetensors")

  func run(
    _ inputs: [String], _ method: MergeMethod, alpha: Double, golden: String,
    _ configure: (inout MergeRequest) -> Void = { _ in }
  ) throws {
    var request = MergeRequest(inputs: inputs, method: method, alpha: alpha)
    request.prediction = .epsilon
    configure(&request)
    let out = TestPaths.temporaryDirectory("merge-method") + "/out.safetensors"
    _ = try Merger.merge(request, output: out)
    let result = try SafeTensorsFile(path: out)
    let expected = try SafeTensorsFile(path: TestPaths.fixture("merge/expected-\(golden).safetensors"))
    try expectNothingBeyondGolden(result, expected, a: a, golden)
    for tensor in expected.tensors {
      let got = try #require(result.info(tensor.name))
      let ours = Array(result.data(got).bindMemory(to: UInt32.self))
      let theirs = Array(expected.data(tensor).bindMemory(to: UInt32.self))
      let differing = zip(ours, theirs).filter { $0 != $1 }.count
      #expect(differing == 0, "\(golden): \(tensor.name): \(differing) of \(ours.count) values differ from torch")
    }
  }

  @Test func trainDifferenceIsBitIdenticalToTorch() throws {
    try run([a, b, c], .trainDifference, alpha: 0.8, golden: "train-difference")
  }

  @Test func dareIsBitIdenticalToTorch() throws {
    try run([a, b], .dare, alpha: 0.9, golden: "dare") {
      $0.dropRate = 0.4; $0.seed = 7
    }
  }

  @Test func tiesIsBitIdenticalToTorch() throws {
    try run([a, b, c], .ties, alpha: 0.7, golden: "ties") { $0.density = 0.3 }
  }
}

/// Quantized inputs (per-row int8, ComfyUI scaled fp8) merge as their dequantized values.
@Suite struct QuantizedMergeTests {
  @Test(arguments: ["int8", "scaled-fp8"])
  func quantizedInputMergesAsDequantized(kind: String) throws {
    let directory = TestPaths.temporaryDirectory("qmerge")
    let base = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")
    var quantize = ConversionRequest()
    quantize.dtype = kind == "int8" ? .i8 : .f8e4m3
    quantize.scaledFP8 = kind != "int8"
    let quantized = directory + "/q.safetensors"
    _ = try Converter.convert(input: base, output: quantized, request: quantize)
    var widen = ConversionRequest()
    widen.dtype = .f32
    let dequantized = directory + "/dq.safetensors"
    _ = try Converter.convert(input: quantized, output: dequantized, request: widen)

    // B lacks one quantized UNet weight: with --missing take-a it is copied whole from A, and
    // must then be dequantized too (its scales are not carried over).
    let source = try SafeTensorsFile(path: base)
    let dropped = try #require(source.tensors.first { Int8Rows.quantizable($0) }).name
    let partial = directory + "/partial.safetensors"
    try SafeTensorsWriter.write(
      to: partial,
      entries: source.tensors.filter { $0.name != dropped }.map {
        TensorEntry(spec: TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), bytes: source.data($0))
      },
      metadata: source.metadata)
    var direct = MergeRequest(inputs: [quantized, partial], method: .weightedSum, alpha: 0.25)
    direct.dtype = .f32
    direct.missing = .takeA
    var reference = MergeRequest(inputs: [dequantized, partial], method: .weightedSum, alpha: 0.25)
    reference.dtype = .f32
    reference.missing = .takeA
    _ = try Merger.merge(direct, output: directory + "/direct.safetensors")
    _ = try Merger.merge(reference, output: directory + "/reference.safetensors")
    let a = try SafeTensorsFile(path: directory + "/direct.safetensors")
    let b = try SafeTensorsFile(path: directory + "/reference.safetensors")
    #expect(Set(a.tensors.map(\.name)) == Set(b.tensors.map(\.name)), "no scales or comfy_quant tensors in the result")
    #expect(!a.tensors.contains { $0.name.hasSuffix(".weight_scale") || $0.name.hasSuffix(".scale_weight") })
    #expect(a.info(dropped)?.dtype == .f32, "the copied quantized weight is dequantized")
    for tensor in b.tensors {
      let other = try #require(a.info(tensor.name))
      #expect(other.dtype == tensor.dtype, "\(tensor.name)")
      #expect(Array(a.data(other)) == Array(b.data(tensor)), "\(tensor.name)")
    }
  }
}

/// Both ways: the output may hold, beyond the golden's tensors, only what the merge copies from A
/// unchanged (`position_ids`, `logit_scale`: the goldens leave them out); any other tensor (a stray
/// copy, a marker) fails like a missing one.
func expectNothingBeyondGolden(
  _ result: SafeTensorsFile, _ expected: SafeTensorsFile, a: String, _ golden: String
) throws {
  let source = try SafeTensorsFile(path: a)
  let extra = Set(result.tensors.map(\.name)).subtracting(expected.tensors.map(\.name))
  for name in extra.sorted() {
    guard let ours = result.info(name), let theirs = source.info(name) else {
      Issue.record("\(golden): '\(name)' is neither in the golden nor in A")
      continue
    }
    #expect(Data(result.data(ours)) == Data(source.data(theirs)), "\(golden): '\(name)' is not A's copy")
  }
}
