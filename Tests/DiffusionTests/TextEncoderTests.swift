import Foundation
import SafeTensors
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// Tensors of a golden safetensors file (F32 and I64), read little-endian from the map.
struct GoldenTensors {
  let file: SafeTensorsFile

  init(_ relative: String) throws { file = try SafeTensorsFile(path: TestPaths.fixture(relative)) }

  func shape(_ name: String) -> [Int]? { file.info(name)?.shape }

  func floats(_ name: String) throws -> [Float] {
    guard let info = file.info(name), info.dtype == .f32 else { throw Missing(name: name) }
    let bytes = file.data(info)
    return (0..<(bytes.count / 4)).map {
      Float(
        bitPattern: UInt32(
          littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
    }
  }

  func ints(_ name: String) throws -> [Int] {
    guard let info = file.info(name), info.dtype == .i64 else { throw Missing(name: name) }
    let bytes = file.data(info)
    return (0..<(bytes.count / 8)).map {
      Int(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)))
    }
  }

  struct Missing: Error { let name: String }
}

/// CLIP-L, OpenCLIP-G and the SDXL conditioning against transformers/diffusers on the tiny fixture
/// (Fixtures/golden/text_encoders.safetensors, made by Scripts/fixtures/make_goldens.py).
@Suite struct TextEncoderTests {
  static let checkpoint = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")
  static let tokenizer = try? CLIPTokenizer.bundled()

  /// The golden prompts by key, from golden/index.json (not retyped, so escapes stay exact).
  static let prompts: [String: String] = {
    guard
      let data = try? Data(
        contentsOf: URL(fileURLWithPath: TestPaths.fixture("golden/index.json"))),
      let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let files = index["files"] as? [String: Any],
      let text = files["golden/text_encoders.safetensors"] as? [String: Any],
      let params = text["params"] as? [String: Any],
      let prompts = params["prompts"] as? [String: String]
    else { return [:] }
    return prompts
  }()

  static func conditioner(
    path: String = checkpoint, residency: WeightResidency = .resident
  ) throws -> SDXLTextConditioner {
    guard let tokenizer else { throw GoldenTensors.Missing(name: "bundled tokenizer") }
    return try SDXLTextConditioner(
      weights: ModelWeights(path: path), tokenizer: tokenizer, residency: residency)
  }

  /// Bit-for-bit equality, reported briefly (arrays of thousands of floats otherwise).
  static func expectIdentical(
    _ actual: [Float], _ expected: [Float], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let same = actual == expected
    #expect(
      same,
      "\(what) differs: \(actual.count == expected.count ? "\(Closeness(actual, expected))" : "sizes \(actual.count) vs \(expected.count)")",
      sourceLocation: sourceLocation)
  }

  @Test func infersTheTinyTowersFromShapes() throws {
    let text = try Self.conditioner()
    let l = text.clipL.configuration, g = text.clipG.configuration
    #expect(
      l
        == CLIPTextConfiguration(
          layers: 2, width: 16, headCount: 1, mlpWidth: 64, vocabularySize: 49408,
          maximumTokens: 77,
          projectionWidth: nil, layerNormEpsilon: 1e-5))
    #expect(
      g
        == CLIPTextConfiguration(
          layers: 2, width: 16, headCount: 1, mlpWidth: 64, vocabularySize: 49408,
          maximumTokens: 77,
          projectionWidth: 16, layerNormEpsilon: 1e-5))
    #expect(text.contextWidth == 32 && text.pooledWidth == 16 && text.admWidth == 1552)
  }

  /// diffusers' plain (unweighted, single-chunk) path: ids, each tower, context and adm vector.
  @Test(arguments: ["empty", "astronaut", "simple", "escaped_parens"])
  func plainPrompt(_ key: String) throws {
    let golden = try GoldenTensors("golden/text_encoders.safetensors")
    let prompt = try #require(Self.prompts[key])
    let text = try Self.conditioner()
    let tokens = SDXLPromptTokens.plain(prompt, tokenizer: text.tokenizer)
    let idsL = tokens.clipL[0].tokens, idsG = tokens.clipG[0].tokens
    #expect(idsL.map(Int.init) == (try golden.ints("eps.\(key).l_ids")))
    #expect(idsG.map(Int.init) == (try golden.ints("eps.\(key).g_ids")))

    let l = try text.clipL.encode([idsL], lastNormed: true)
    expectClose(
      l.hidden.scalars, try golden.floats("eps.\(key).l_penultimate"), "L penultimate")
    let lastNormed = try #require(l.lastNormed).scalars
    expectClose(lastNormed, try golden.floats("eps.\(key).l_last_normed"), "L last normed")
    // The trap: SDXL's context is not the final-normed output.
    #expect(Closeness(l.hidden.scalars, lastNormed).nmse > 1e-2)

    let g = try text.clipG.encode([idsG], pooled: true)
    expectClose(
      g.hidden.scalars, try golden.floats("eps.\(key).g_penultimate"), "G penultimate")
    expectClose(
      try #require(g.pooled).scalars, try golden.floats("eps.\(key).g_pooled"), "G pooled")

    let conditioning = try text.encode(tokens, weighting: .comfyUI)
    #expect(conditioning.context.shape == Shape(1, 77, 32))
    #expect(conditioning.pooled.shape == Shape(1, 16))
    expectClose(
      conditioning.context.scalars, try golden.floats("eps.\(key).context"), "context")
    let adm = conditioning.admVector(
      originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64))
    #expect(adm.shape == Shape(1, 1552))
    expectClose(adm.scalars, try golden.floats("eps.\(key).adm"), "adm vector")
  }

  /// A1111 ("Original" emphasis, BREAK, comma backtrack, open_clip tokenizer for G) and ComfyUI
  /// (interpolation from the empty prompt) weighted, chunked conditionings.
  @Test(arguments: ["simple", "escaped_parens", "weights", "a1111_doctest", "break", "long"])
  func weightedPrompt(_ key: String) throws {
    let golden = try GoldenTensors("golden/text_encoders.safetensors")
    let prompt = try #require(Self.prompts[key])
    let text = try Self.conditioner()
    for (style, name) in [(PromptStyle.a1111, "a1111"), (.comfyUI, "comfy")] {
      let prefix = "eps.\(key).\(name)"
      let tokens = text.tokens(prompt, style: style)
      #expect(tokens.clipL.flatMap(\.tokens).map(Int.init) == (try golden.ints("\(prefix).l_ids")))
      #expect(tokens.clipG.flatMap(\.tokens).map(Int.init) == (try golden.ints("\(prefix).g_ids")))
      #expect(
        tokens.clipL.flatMap(\.weights).map(Float.init)
          == (try golden.floats("\(prefix).l_weights")))
      #expect(
        tokens.clipG.flatMap(\.weights).map(Float.init)
          == (try golden.floats("\(prefix).g_weights")))

      let conditioning = try text.encode(prompt, style: style)
      let expected = try golden.floats("\(prefix).context")
      #expect(conditioning.context.shape == Shape(1, expected.count / 32, 32))
      expectClose(conditioning.context.scalars, expected, "\(prefix) context")
      expectClose(
        conditioning.pooled.scalars, try golden.floats("\(prefix).pooled"), "\(prefix) pooled")
    }
  }

  /// The weights matter: the weighted prompts' contexts differ from the same tokens unweighted,
  /// and the two front ends' weightings differ from each other.
  @Test func weightingChangesTheContext() throws {
    let text = try Self.conditioner()
    let prompt = try #require(Self.prompts["weights"])
    let tokens = text.tokens(prompt, style: .comfyUI)
    var unweighted = tokens
    for index in unweighted.clipL.indices {
      unweighted.clipL[index].weights = [Double](repeating: 1, count: 77)
      unweighted.clipG[index].weights = [Double](repeating: 1, count: 77)
    }
    let comfy = try text.encode(tokens, weighting: .comfyUI).context.scalars
    let a1111 = try text.encode(tokens, weighting: .a1111).context.scalars
    let noNorm = try text.encode(tokens, weighting: .a1111NoNorm).context.scalars
    let plain = try text.encode(unweighted, weighting: .comfyUI).context.scalars
    #expect(Closeness(comfy, plain).nmse > 1e-4)
    #expect(Closeness(a1111, comfy).nmse > 1e-4)
    #expect(Closeness(a1111, noNorm).nmse > 1e-6)
  }

  /// The conditionings of the 8-step Euler golden (ComfyUI: the empty negative is encoded).
  @Test func promptAndNegativeMatchTheEulerGolden() throws {
    let golden = try GoldenTensors("golden/euler.safetensors")
    let text = try Self.conditioner()
    let (positive, negative) = try text.encode(
      prompt: "red circle, white background", negative: "", style: .comfyUI)
    for (name, conditioning) in [("cond", positive), ("uncond", negative)] {
      expectClose(conditioning.context.scalars, try golden.floats("eps.\(name).context"), name)
      let y = conditioning.admVector(originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64))
      expectClose(y.scalars, try golden.floats("eps.\(name).y"), "\(name) y")
    }
    // A1111's default: zeros for an empty negative, shaped like the prompt.
    let a1111 = try text.encode(prompt: "red BREAK circle", negative: "", style: .a1111)
    #expect(a1111.negative.context.shape == Shape(1, 154, 32))
    #expect(a1111.negative.context.scalars.allSatisfy { $0 == 0 })
    let encoded = try text.encode(
      prompt: "red BREAK circle", negative: "", style: .a1111, emptyNegative: .encode)
    #expect(encoded.negative.context.shape == Shape(1, 77, 32))
    #expect(encoded.negative.pooled.scalars.contains { $0 != 0 })
  }

  /// When the towers' tokenizers disagree on the chunk count, both are cut to the shorter.
  @Test func mismatchedChunkCountsAreCutToTheShorter() throws {
    let text = try Self.conditioner()
    var tokens = text.tokens("red circle BREAK white background", style: .a1111)
    #expect(tokens.clipL.count == 2 && tokens.clipG.count == 2)
    let full = try text.encode(tokens, weighting: .a1111)
    tokens.clipG.removeLast()
    let cut = try text.encode(tokens, weighting: .a1111)
    #expect(cut.context.shape == Shape(1, 77, 32))
    // Batch sizes differ (gemm may round differently), so compare closely, not bit for bit.
    let first = Closeness(cut.context.scalars, Array(full.context.scalars.prefix(77 * 32)))
    #expect(first.nmse < 1e-12, "\(first)")
    #expect(Closeness(cut.pooled.scalars, full.pooled.scalars).nmse < 1e-12)
    tokens.clipG = []
    #expect(throws: ModelError.self) { try text.encode(tokens, weighting: .a1111) }
  }

  @Test func zeroedConditioningKeepsShapes() throws {
    let text = try Self.conditioner()
    let conditioning = try text.encode("red circle BREAK white", style: .a1111)
    let zero = conditioning.zeroed()
    #expect(zero.context.shape == Shape(1, 154, 32) && zero.pooled.shape == Shape(1, 16))
    #expect(
      zero.context.scalars.allSatisfy { $0 == 0 } && zero.pooled.scalars.allSatisfy { $0 == 0 })
    let adm = zero.admVector(originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64)).scalars
    #expect(adm[0..<16].allSatisfy { $0 == 0 } && adm[16] == Foundation.cos(Float(64)))
  }

  @Test func streamedWeightsGiveTheSameResult() throws {
    let prompt = try #require(Self.prompts["long"])
    let resident = try Self.conditioner().encode(prompt, style: .comfyUI)
    let streamed = try Self.conditioner(residency: .streamed).encode(prompt, style: .comfyUI)
    Self.expectIdentical(resident.context.scalars, streamed.context.scalars, "context")
    Self.expectIdentical(resident.pooled.scalars, streamed.pooled.scalars, "pooled")
  }

  @Test func rejectsUnusableTokens() throws {
    let text = try Self.conditioner()
    let checks: [[[Int32]]] = [
      [], [[]], [[49406, 49408]], [[49406, -1]], [[49406, 1], [49406]],
      [[Int32](repeating: 0, count: 78)],
    ]
    for sequences in checks {
      #expect(throws: ModelError.self) { try text.clipL.encode(sequences) }
    }
    #expect(throws: ModelError.self) { try text.clipL.encode([[49406, 49407]], hiddenLayer: 3) }
    #expect(throws: ModelError.self) { try text.clipL.encode([[49406, 49407]], hiddenLayer: -4) }
    // CLIP-L has no text_projection, so no pooled output.
    #expect(throws: ModelError.self) { try text.clipL.encode([[49406, 49407]], pooled: true) }
  }

  @Test func hiddenLayerNumberingFollowsTransformers() throws {
    let text = try Self.conditioner()
    let ids: [Int32] = [49406, 320, 1125, 49407, 49407]
    let embeddings = try text.clipL.encode([ids], hiddenLayer: 0).hidden.scalars
    let minus3 = try text.clipL.encode([ids], hiddenLayer: -3).hidden.scalars
    let penultimate = try text.clipL.encode([ids], hiddenLayer: 1).hidden.scalars
    let last = try text.clipL.encode([ids], hiddenLayer: -1, lastNormed: true)
    #expect(embeddings == minus3)
    #expect(penultimate == (try text.clipL.encode([ids]).hidden.scalars))
    #expect(penultimate != last.hidden.scalars && embeddings != penultimate)
    // last_hidden_state = final LayerNorm of hidden_states[-1].
    let layerNorm = try ModelWeights(path: Self.checkpoint)
      .scoped(CLIPTextEncoderKind.clipL.sdxlPrefix)
    let normed = Tensor(zeros: last.hidden.shape)
    ComputeContext().layerNorm(
      last.hidden, epsilon: 1e-5, weight: try layerNorm.tensor("final_layer_norm.weight"),
      bias: try layerNorm.tensor("final_layer_norm.bias"), into: normed)
    Self.expectIdentical(normed.scalars, try #require(last.lastNormed).scalars, "last normed")
  }

  @Test func poolsAtTheFirstEndToken() {
    #expect(CLIPTextEncoder.poolingPosition([49406, 5, 49407, 49407]) == 2)
    #expect(CLIPTextEncoder.poolingPosition([49406, 5, 49407, 0, 0]) == 2)
    #expect(CLIPTextEncoder.poolingPosition([49406, 5, 7]) == 0)
    #expect(CLIPTextEncoder.poolingPosition([3, 9, 5, 9]) == 1)
  }
}

/// Loading from re-encoded copies of the text encoders, and what broken weights do.
@Suite struct TextEncoderWeightFileTests {
  /// Writes the fixture's text-encoder tensors to `path` with float tensors stored as `dtype`
  /// (F32 or BF16), leaving out `drop` and storing `reshape`d tensors under another shape.
  static func writeCopy(
    to path: String, dtype: DType, drop: Set<String> = [], reshape: [String: [Int]] = [:]
  ) throws {
    let source = try ModelWeights(path: TextEncoderTests.checkpoint)
    let file = try SafeTensorsFile(path: TextEncoderTests.checkpoint)
    var entries = [TensorEntry]()
    for info in file.tensors where info.name.hasPrefix("conditioner.embedders.") {
      guard !drop.contains(info.name) else { continue }
      let shape = reshape[info.name] ?? info.shape
      if info.dtype == .f16 {
        let values = try source.tensor(info.name).scalars
        let spec = TensorSpec(name: info.name, dtype: dtype, shape: shape)
        entries.append(
          TensorEntry(spec: spec) { sink in
            if dtype == .bf16 {
              try sink.write(contentsOf: values.map(Self.bfloat16))
            } else {
              try sink.write(contentsOf: values)
            }
          })
      } else {
        let bytes = file.data(info)
        entries.append(
          TensorEntry(
            spec: TensorSpec(name: info.name, dtype: info.dtype, shape: shape), bytes: bytes))
      }
    }
    // The entries point into the map: keep it until they are written.
    try withExtendedLifetime(file) { try SafeTensorsWriter.write(to: path, entries: entries, metadata: nil) }
  }

  /// Float32 → bfloat16 bits, rounding to nearest even (as torch's `.to(torch.bfloat16)`).
  static func bfloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
  }

  @Test func float32CopyGivesIdenticalResults() throws {
    let directory = TestPaths.temporaryDirectory("clip-f32")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/text-f32.safetensors"
    try Self.writeCopy(to: path, dtype: .f32)
    let prompt = "a (photo:1.2) of an astronaut, riding a horse"
    let original = try TextEncoderTests.conditioner().encode(prompt, style: .comfyUI)
    let widened = try TextEncoderTests.conditioner(path: path).encode(prompt, style: .comfyUI)
    // fp16 widens to fp32 exactly, so the float32 copy computes the very same numbers.
    TextEncoderTests.expectIdentical(
      original.context.scalars, widened.context.scalars, "context")
    TextEncoderTests.expectIdentical(
      original.pooled.scalars, widened.pooled.scalars, "pooled")
  }

  @Test func bfloat16CopyStaysNearTheGoldens() throws {
    let directory = TestPaths.temporaryDirectory("clip-bf16")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/text-bf16.safetensors"
    try Self.writeCopy(to: path, dtype: .bf16)
    let file = try SafeTensorsFile(path: path)
    #expect(file.info("conditioner.embedders.1.model.token_embedding.weight")?.dtype == .bf16)
    let golden = try GoldenTensors("golden/text_encoders.safetensors")
    let prompt = try #require(TextEncoderTests.prompts["astronaut"])
    let text = try TextEncoderTests.conditioner(path: path)
    let conditioning = try text.encode(
      SDXLPromptTokens.plain(prompt, tokenizer: text.tokenizer), weighting: .comfyUI)
    let expected = try golden.floats("eps.astronaut.context")
    // bfloat16 keeps 8 significant bits: close to the fp16 goldens, but not equal.
    let closeness = Closeness(conditioning.context.scalars, expected)
    #expect(closeness.nmse < 1e-3 && closeness.nmse > 0, "\(closeness)")
    let pooled = Closeness(conditioning.pooled.scalars, try golden.floats("eps.astronaut.g_pooled"))
    #expect(pooled.nmse < 1e-3, "\(pooled)")
  }

  /// A missing or misshaped weight is a `ModelError` naming the full key, in both residencies.
  @Test(arguments: WeightResidency.allCases)
  func brokenWeightsNameTheKey(_ residency: WeightResidency) throws {
    let directory = TestPaths.temporaryDirectory("clip-broken")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let g = "conditioner.embedders.1.model."
    let l = "conditioner.embedders.0.transformer.text_model."
    let cases: [(name: String, drop: Set<String>, reshape: [String: [Int]], key: String)] = [
      (
        "missing-fc", [g + "transformer.resblocks.1.mlp.c_fc.bias"], [:],
        g + "transformer.resblocks.1.mlp.c_fc.bias"
      ),
      (
        "missing-v", [l + "encoder.layers.1.self_attn.v_proj.weight"], [:],
        l + "encoder.layers.1.self_attn.v_proj.weight"
      ),
      (
        "fused-shape", [], [g + "transformer.resblocks.0.attn.in_proj_weight": [16, 48]],
        g + "transformer.resblocks.0.attn.in_proj_weight"
      ),
      (
        "norm-shape", [], [l + "encoder.layers.0.layer_norm2.bias": [4, 4]],
        l + "encoder.layers.0.layer_norm2.bias"
      ),
      ("projection-shape", [], [g + "text_projection": [8, 32]], g + "text_projection"),
      (
        "embedding-missing", [l + "embeddings.token_embedding.weight"], [:],
        l + "embeddings.token_embedding.weight"
      ),
    ]
    for item in cases {
      let path = directory + "/\(item.name).safetensors"
      try Self.writeCopy(to: path, dtype: .f32, drop: item.drop, reshape: item.reshape)
      do {
        _ = try TextEncoderTests.conditioner(path: path, residency: residency)
        Issue.record("\(item.name): loaded without error")
      } catch let error as ModelError {
        switch error {
        case .missingWeight(let file, let key), .badShape(let file, let key, _, _):
          #expect(key == item.key, "\(item.name): \(error)")
          #expect(file == path)
          #expect(error.description.contains(item.key))
        default:
          Issue.record("\(item.name): unexpected \(error)")
        }
      }
    }
  }

  @Test func fileWithoutTextEncodersIsAModelError() throws {
    let path = TestPaths.fixture("golden/unet.safetensors")
    #expect(throws: ModelError.self) { try TextEncoderTests.conditioner(path: path) }
    let weights = try ModelWeights(path: TextEncoderTests.checkpoint)
    // Tower scoped wrongly (L's prefix read with G's names): no layers found.
    #expect(throws: ModelError.self) {
      try CLIPTextEncoder(
        weights: weights.scoped("conditioner.embedders.0.transformer."), kind: .openCLIPG)
    }
  }
}
