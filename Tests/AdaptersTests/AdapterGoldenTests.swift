import Adapters
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

/// Every adapter format of Fixtures/lora applied to the tiny SDXL base in Float32 must match the
/// expected weights of Scripts/fixtures/make_lora_fixtures.py (float64 formulas; diffusers'
/// loader agrees for the kohya and PEFT files): max |Δ| ≤ 1e-6 × max |W′|.
@Suite struct AdapterGoldenTests {
  static let base = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")
  static let adapters = [
    "kohya_sgm", "kohya_diffusers", "peft", "peft_alpha", "locon", "loha", "lokr", "dora_out", "dora_in",
  ]

  static func expected() throws -> (SafeTensorsFile, [String: Double]) {
    let file = try SafeTensorsFile(path: TestPaths.fixture("lora/expected.safetensors"))
    let strengths =
      try JSONSerialization.jsonObject(with: Data((file.metadata["strengths"] ?? "{}").utf8)) as? [String: Double]
    return (file, strengths ?? [:])
  }

  @Test(arguments: adapters) func bakedWeightsMatchTheReference(_ name: String) throws {
    let (expected, strengths) = try Self.expected()
    let strength = try #require(strengths[name])
    let adapter = try AdapterFile(path: TestPaths.fixture("lora/\(name).safetensors"))
    #expect(adapter.unmappedKeys.isEmpty)
    let stack = try AdapterStack([
      AdapterApplication(adapter: adapter, unet: Float(strength), textEncoders: Float(strength))
    ])
    let source = try WeightSource(path: Self.base)
    let keys = expected.tensors.map(\.name).filter { $0.hasPrefix(name + "/") }.map {
      String($0.dropFirst(name.count + 1))
    }
    #expect(!keys.isEmpty)
    #expect(Set(keys) == stack.targetKeys, "\(name): the adapter changes exactly the expected weights")
    for key in keys {
      let shape = try #require(source.shape(key))
      var values = try source.decoder(key).decodeAll()
      try stack.apply(key: key, shape: shape, to: &values)
      let info = try #require(expected.info(name + "/" + key))
      let reference = try TensorDecoder.resolve(file: expected, tensor: info).decodeAll()
      let scale = reference.map { abs(Double($0)) }.max() ?? 1
      let worst = zip(values, reference).map { abs(Double($0) - Double($1)) }.max() ?? 0
      #expect(worst <= 1e-6 * scale, "\(name) \(key): max |Δ| \(worst), scale \(scale)")
    }
  }

  @Test func readsFormatRanksAndMetadata() throws {
    let kohya = AdapterReport(try AdapterFile(path: TestPaths.fixture("lora/kohya_sgm.safetensors")))
    #expect(kohya.naming == AdapterNaming.kohya.rawValue)
    #expect(kohya.ranks == [2, 4])
    #expect(kohya.alphas == [2, 4])
    #expect(kohya.components == ["unet": 5, "clip_l": 2, "clip_g": 5])
    #expect(kohya.blocks == ["IN04", "M00", "OUT03"])
    #expect(kohya.baseModel == "sdxl_base_v1-0")
    #expect(kohya.triggerWords.first == "tinystyle")
    #expect(kohya.allKeysMapped)
    let peft = AdapterReport(try AdapterFile(path: TestPaths.fixture("lora/peft.safetensors")))
    #expect(peft.naming == AdapterNaming.peft.rawValue)
    #expect(peft.alphas.isEmpty)
    let locon = AdapterReport(try AdapterFile(path: TestPaths.fixture("lora/locon.safetensors")))
    #expect(locon.algorithms == ["locon": 4, "full": 1])
    let lokr = AdapterReport(try AdapterFile(path: TestPaths.fixture("lora/lokr.safetensors")))
    #expect(lokr.algorithms == ["lokr": 4])
    #expect(AdapterReport(try AdapterFile(path: TestPaths.fixture("lora/dora_in.safetensors"))).doraModules == 2)
  }

  @Test func unmappedKeysAreListedAndRefusedUnlessSkipped() throws {
    let adapter = try AdapterFile(path: TestPaths.fixture("lora/hostile/unmapped.safetensors"))
    #expect(
      Set(adapter.unmappedKeys) == [
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "bundle_emb.tinystyle.string_to_param.*",
      ])
    #expect(adapter.modules.count == 1)
    #expect(throws: AdapterError.self) {
      try AdapterStack([AdapterApplication(adapter: adapter, unet: 1, textEncoders: 1)])
    }
    let skipping = try AdapterStack(
      [AdapterApplication(adapter: adapter, unet: 1, textEncoders: 1)], skipUnmapped: true)
    #expect(skipping.skippedKeys.values.first?.count == 3)
  }

  @Test(arguments: ["rank0", "nan_alpha", "rank_disagree", "huge_rank"]) func hostileAdaptersAreRefusedWhenRead(
    _ name: String
  ) {
    let path = TestPaths.fixture("lora/hostile/\(name).safetensors")
    do {
      _ = try AdapterFile(path: path)
      Issue.record("\(name) was accepted")
    } catch let error as AdapterError {
      #expect(!error.isIOFailure)
      #expect(error.description.contains(path))
    } catch let error as SafeTensorsError {
      #expect(!error.isIOFailure, "\(error)")
    } catch {
      Issue.record("\(name): untyped error \(error)")
    }
  }

  @Test func aShapeMismatchNamesTheModuleAndTheTarget() throws {
    let adapter = try AdapterFile(path: TestPaths.fixture("lora/hostile/shape_mismatch.safetensors"))
    let stack = try AdapterStack([AdapterApplication(adapter: adapter, unet: 1, textEncoders: 1)])
    let source = try WeightSource(path: Self.base)
    let key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    var values = try source.decoder(key).decodeAll()
    #expect {
      try stack.apply(key: key, shape: source.shape(key)!, to: &values)
    } throws: { error in
      guard case AdapterError.shapeMismatch(_, let module, let target, _, _) = error else { return false }
      return module == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" && target == key
    }
  }

  @Test func strengthArgumentsParseFromTheRight() throws {
    #expect(try AdapterSpec.parse("a.safetensors") == AdapterSpec(path: "a.safetensors", strength: 1))
    #expect(try AdapterSpec.parse("a.safetensors:0.8") == AdapterSpec(path: "a.safetensors", strength: 0.8))
    #expect(
      try AdapterSpec.parse("dir:x/a.safetensors:0.8:0.5")
        == AdapterSpec(path: "dir:x/a.safetensors", strength: 0.8, textEncoderStrength: 0.5))
    #expect(throws: AdapterError.self) { try AdapterSpec.parse(":0.5") }
  }
}
