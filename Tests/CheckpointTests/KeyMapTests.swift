import Foundation
import TestSupport
import Testing

@testable import Checkpoint

/// The single-file ⇄ diffusers key map against goldens made by diffusers itself
/// (`Scripts/fixtures/make_keymap_golden.py`).
@Suite struct KeyMapTests {
  /// `Fixtures/keymap/sdxl-diffusers-keys.txt`: set → subfolder → key → shape.
  static func fullSizeKeys() throws -> [String: [String: [String: [Int]]]] {
    let text = try String(contentsOfFile: TestPaths.fixture("keymap/sdxl-diffusers-keys.txt"), encoding: .utf8)
    var out: [String: [String: [String: [Int]]]] = [:]
    for line in text.split(separator: "\n") {
      let fields = line.split(separator: " ")
      guard fields.count == 4 else { continue }
      let shape = fields[3].split(separator: ",").compactMap { Int($0) }
      out[String(fields[0]), default: [:]][String(fields[1]), default: [:]][String(fields[2])] = shape
    }
    return out
  }

  func parseTransform(_ text: String) -> KeyTransform? {
    switch text {
    case "identity": return .identity
    case "dropUnitSpatialDimensions": return .dropUnitSpatialDimensions
    case "transpose": return .transpose
    default:
      let parts = text.split(separator: ":")
      guard parts.count == 3, parts[0] == "rowSlice", let index = Int(parts[1]), let count = Int(parts[2]) else {
        return nil
      }
      return .rowSlice(index: index, count: count)
    }
  }

  /// Maps every key of `template`, checks the reverse direction key by key, and returns what the
  /// diffusers side looks like (subfolder → key → shape).
  func mapTemplate(_ template: SDXLTemplate) throws -> [String: [String: [Int]]] {
    let map = DiffusersKeyMap(template: template)
    var result: [String: [String: [Int]]] = [:]
    for tensor in template.tensors {
      switch map.diffusers(forSingleFileKey: tensor.key) {
      case .mapped(let correspondences):
        #expect(!correspondences.isEmpty)
        for correspondence in correspondences {
          let shape = try #require(
            correspondence.transform.diffusersShape(fromSingleFile: tensor.shape), "\(tensor.key)")
          #expect(
            result[correspondence.subfolder.rawValue]?[correspondence.diffusersKey] == nil,
            "two sources for \(correspondence.diffusersKey)")
          result[correspondence.subfolder.rawValue, default: [:]][correspondence.diffusersKey] = shape
          // Round trip: the diffusers name leads back to exactly this key and transform.
          let back = map.singleFile(forDiffusersKey: correspondence.diffusersKey, in: correspondence.subfolder)
          #expect(back == correspondence, "\(correspondence.diffusersKey)")
        }
      case .dropped:
        #expect(tensor.key.hasSuffix("logit_scale"), "\(tensor.key) dropped")
      case .unknown:
        Issue.record("template key \(tensor.key) does not map")
      }
    }
    return result
  }

  @Test func fullSizeSDXLBaseMatchesDiffusersModels() throws {
    let golden = try #require(try Self.fullSizeKeys()["base"])
    var mapped = try mapTemplate(.sdxlBase)
    // CLIP-L position_ids is a buffer transformers no longer saves; the map keeps its name.
    #expect(mapped["text_encoder"]?.removeValue(forKey: "text_model.embeddings.position_ids") == [1, 77])
    for folder in ["unet", "vae", "text_encoder", "text_encoder_2"] {
      let ours = mapped[folder] ?? [:]
      let theirs = golden[folder] ?? [:]
      #expect(ours.count == theirs.count, "\(folder): \(ours.count) vs \(theirs.count)")
      let missing = Set(theirs.keys).subtracting(ours.keys).sorted()
      let extra = Set(ours.keys).subtracting(theirs.keys).sorted()
      #expect(missing.count + extra.count == 0, "\(folder): missing \(missing.prefix(5)), extra \(extra.prefix(5))")
      let wrong = theirs.filter { ours[$0.key] != nil && ours[$0.key] != $0.value }.map(\.key).sorted()
      #expect(wrong.count == 0, "\(folder) shapes differ: \(wrong.prefix(5))")
    }
    #expect(golden["unet"]?.count == 1680 && golden["text_encoder_2"]?.count == 517)
  }

  @Test func fullSizeRefinerUNetMatchesDiffusersModel() throws {
    let golden = try #require(try Self.fullSizeKeys()["refiner"]?["unet"])
    let mapped = try mapTemplate(.sdxlRefiner)
    #expect(mapped["unet"] == golden)
    // The refiner's deepest level has no attention: its upsampler sits in slot 1, not 2.
    let map = DiffusersKeyMap(template: .sdxlRefiner)
    #expect(
      map.diffusers(forSingleFileKey: "model.diffusion_model.output_blocks.2.1.conv.weight")
        == .mapped([
          .init(
            singleFileKey: "model.diffusion_model.output_blocks.2.1.conv.weight", subfolder: .unet,
            diffusersKey: "up_blocks.0.upsamplers.0.conv.weight", transform: .identity)
        ]))
    #expect(
      map.singleFile(forDiffusersKey: "text_model.final_layer_norm.bias", in: .textEncoder2)?.singleFileKey
        == "conditioner.embedders.0.model.ln_final.bias")
  }

  /// Every key of the tiny fixture, as diffusers' converters handled it (values tagged per tensor,
  /// so the golden records the source tensor and the transform, not just names).
  @Test func tinyFixtureMatchesDiffusersConverters() throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("keymap/tiny-sdxl-keymap.json")))
    let golden = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let entries = try #require(golden["entries"] as? [[String: String]])
    let notConverted = try #require(golden["notConverted"] as? [String])
    let config = try #require(
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("tiny-sdxl/config.json"))))
        as? [String: Any])
    let unet = try #require(config["unet"] as? [String: Any])
    let vae = try #require(config["vae"] as? [String: Any])
    let map = DiffusersKeyMap(
      residualBlocksPerLevel: try #require(unet["num_res_blocks"] as? Int),
      levelHasAttention: try #require(unet["transformer_depth"] as? [Int]).map { $0 > 0 },
      vaeLevels: try #require(vae["ch_mult"] as? [Int]).count)

    var expected: [String: Set<String>] = [:]
    for entry in entries {
      let single = try #require(entry["singleFile"]), folder = try #require(entry["subfolder"])
      let key = try #require(entry["diffusers"]), text = try #require(entry["transform"])
      let subfolder = try #require(DiffusersSubfolder(rawValue: folder))
      let transform = try #require(parseTransform(text), "\(text)")
      expected[single, default: []].insert("\(folder) \(key) \(text)")
      // diffusers → single-file, for every tensor diffusers produced.
      let back = map.singleFile(forDiffusersKey: key, in: subfolder)
      #expect(back?.singleFileKey == single && back?.transform == transform, "\(folder)/\(key)")
    }
    #expect(entries.count == 936)
    for (single, targets) in expected {
      guard case .mapped(let correspondences) = map.diffusers(forSingleFileKey: single) else {
        Issue.record("\(single) did not map")
        continue
      }
      let ours = Set(
        correspondences.map { c -> String in
          let text: String
          switch c.transform {
          case .identity: text = "identity"
          case .dropUnitSpatialDimensions: text = "dropUnitSpatialDimensions"
          case .transpose: text = "transpose"
          case .rowSlice(let index, let count): text = "rowSlice:\(index):\(count)"
          }
          return "\(c.subfolder.rawValue) \(c.diffusersKey) \(text)"
        })
      #expect(ours == targets, "\(single)")
    }
    for key in notConverted {
      guard case .dropped = map.diffusers(forSingleFileKey: key) else {
        Issue.record("\(key) should have no diffusers home")
        continue
      }
    }
  }

  @Test func rejectsKeysOutsideTheTopology() {
    let map = DiffusersKeyMap()
    for key in [
      "model.diffusion_model.input_blocks.99.0.in_layers.0.weight",
      "model.diffusion_model.input_blocks.1.1.norm.weight",  // level 0 of SDXL has no attention
      "model.diffusion_model.output_blocks.8.2.conv.weight",  // the shallowest level has no upsampler
      "model.diffusion_model.input_blocks.1.0.in_layers.1.weight",
      "model.diffusion_model.middle_block.3.in_layers.0.weight",
      "first_stage_model.decoder.up.0.upsample.conv.weight",
      "first_stage_model.encoder.mid.attn_1.w.weight",
      "conditioner.embedders.1.model.transformer.resblocks.0.attn.qkv.weight",
      "v_pred", "model_ema.decay",
    ] {
      #expect(map.diffusers(forSingleFileKey: key) == .unknown, "\(key)")
    }
    #expect(map.singleFile(forDiffusersKey: "down_blocks.0.attentions.0.norm.weight", in: .unet) == nil)
    #expect(map.singleFile(forDiffusersKey: "up_blocks.2.upsamplers.0.conv.weight", in: .unet) == nil)
    #expect(map.singleFile(forDiffusersKey: "logit_scale", in: .textEncoder2) == nil)
  }

  @Test func acceptsFlattenedTransformersNames() {
    let map = DiffusersKeyMap()
    #expect(
      map.singleFile(forDiffusersKey: "encoder.layers.0.mlp.fc1.weight", in: .textEncoder)?.singleFileKey
        == "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight")
    #expect(
      map.singleFile(forDiffusersKey: "encoder.layers.3.self_attn.v_proj.bias", in: .textEncoder2)
        == .init(
          singleFileKey: "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_bias",
          subfolder: .textEncoder2, diffusersKey: "encoder.layers.3.self_attn.v_proj.bias",
          transform: .rowSlice(index: 2, count: 3)))
  }

  @Test func transformShapes() {
    #expect(KeyTransform.dropUnitSpatialDimensions.diffusersShape(fromSingleFile: [512, 512, 1, 1]) == [512, 512])
    #expect(KeyTransform.dropUnitSpatialDimensions.diffusersShape(fromSingleFile: [512, 512, 3, 3]) == nil)
    #expect(KeyTransform.transpose.diffusersShape(fromSingleFile: [1280, 1024]) == [1024, 1280])
    #expect(KeyTransform.rowSlice(index: 1, count: 3).diffusersShape(fromSingleFile: [3840, 1280]) == [1280, 1280])
    #expect(KeyTransform.rowSlice(index: 1, count: 3).diffusersShape(fromSingleFile: [10]) == nil)
  }

  @Test func unetTopologyFromDiffusersNames() throws {
    var keys: [String] = []
    let map = DiffusersKeyMap(template: .sdxlRefiner)
    for tensor in SDXLTemplate.unetTensors(.sdxlRefiner) {
      if case .mapped(let c) = map.diffusers(forSingleFileKey: tensor.key) { keys += c.map(\.diffusersKey) }
    }
    let topology = try #require(DiffusersKeyMap.unetTopology(diffusersKeys: keys))
    #expect(topology.residualBlocksPerLevel == 2)
    #expect(topology.levelHasAttention == [false, true, true, false])
    #expect(DiffusersKeyMap.unetTopology(diffusersKeys: ["encoder.conv_in.weight"]) == nil)
  }
}

@Suite struct NonFiniteScanTests {
  @Test func fnuzFormatsHaveOneNaN() {
    let bytes: [UInt8] = [0x80, 0x7F, 0xFF, 0x00, 0x80]
    bytes.withUnsafeBytes { raw in
      #expect(NonFiniteScan.count(raw, dtype: .f8e4m3fnuz).map { [$0.nan, $0.infinite] } == [2, 0])
      #expect(NonFiniteScan.count(raw, dtype: .f8e5m2fnuz).map { [$0.nan, $0.infinite] } == [2, 0])
      // e4m3fn: S.1111.111 is NaN (0x7F, 0xFF); e5m2: 0x7F/0xFF NaN, 0x7C/0xFC Inf.
      #expect(NonFiniteScan.count(raw, dtype: .f8e4m3).map { [$0.nan, $0.infinite] } == [2, 0])
      #expect(NonFiniteScan.count(raw, dtype: .f8e5m2).map { [$0.nan, $0.infinite] } == [2, 0])
    }
  }
}
