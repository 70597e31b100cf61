import Foundation
import SafeTensors
import TestSupport
import Testing

/// Every fixture and golden file opens with our reader and has the keys, dtypes and shapes that
/// `Fixtures/index.json` and `Fixtures/golden/index.json` document (both written by
/// `Scripts/fixtures/make_index.py` / `make_goldens.py` from Python safetensors), and a few values
/// that pin what the goldens mean.
@Suite struct FixtureFilesTests {
  struct Manifest: Decodable {
    struct Tensor: Decodable {
      let dtype: String
      let shape: [Int]
    }
    struct File: Decodable {
      let bytes: Int
      let sha256: String
      let metadata: [String: String]
      let tensors: [String: Tensor]
    }
    let files: [String: File]
  }

  static func decode<T: Decodable>(_ type: T.Type, _ relative: String) throws -> T {
    let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture(relative)))
    return try JSONDecoder().decode(type, from: data)
  }

  static func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
    let info = try #require(file.info(name), "\(name) missing")
    #expect(info.dtype == .f32)
    let bytes = file.data(info)
    return (0..<info.elementCount).map {
      Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
    }
  }

  static func int64s(_ file: SafeTensorsFile, _ name: String) throws -> [Int64] {
    let info = try #require(file.info(name), "\(name) missing")
    #expect(info.dtype == .i64)
    let bytes = file.data(info)
    return (0..<info.elementCount).map {
      Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))
    }
  }

  @Test func manifestMatchesEveryFile() throws {
    let manifest = try Self.decode(Manifest.self, "index.json")
    #expect(manifest.files.keys.contains("tiny-sdxl/tiny-sdxl-eps.safetensors"))
    #expect(manifest.files.keys.contains("golden/euler.safetensors"))
    for (relative, expected) in manifest.files.sorted(by: { $0.key < $1.key }) {
      let file = try SafeTensorsFile(path: TestPaths.fixture(relative))
      #expect(file.fileSize == expected.bytes, "\(relative)")
      #expect(file.metadata == expected.metadata, "\(relative)")
      #expect(Set(file.tensors.map(\.name)) == Set(expected.tensors.keys), "\(relative)")
      for (name, tensor) in expected.tensors {
        guard let info = file.info(name) else { continue }
        #expect(info.dtype.rawValue == tensor.dtype, "\(relative) \(name)")
        #expect(info.shape == tensor.shape, "\(relative) \(name)")
        #expect(info.byteCount == info.elementCount * info.dtype.bitWidth / 8, "\(relative) \(name)")
      }
    }
  }

  @Test func goldenIndexDocumentsEveryTensor() throws {
    let index = try Self.decode(GoldenIndex.self, "golden/index.json")
    #expect(
      Set(index.files.keys) == [
        "golden/text_encoders.safetensors", "golden/unet.safetensors",
        "golden/vae.safetensors", "golden/euler.safetensors",
      ])
    for (relative, entry) in index.files {
      let file = try SafeTensorsFile(path: TestPaths.fixture(relative))
      #expect(file.tensors.count == entry.tensors.count, "\(relative)")
      for (name, tensor) in entry.tensors {
        let info = try #require(file.info(name), "\(relative) lacks \(name)")
        #expect(info.dtype.rawValue == tensor.dtype && info.shape == tensor.shape, "\(relative) \(name)")
      }
    }
  }

  struct GoldenIndex: Decodable {
    let files: [String: Manifest.File.Documented]
  }

  @Test func tinyConfigMatchesShapesAndMarkers() throws {
    struct Config: Decodable {
      struct Clip: Decodable { let width: Int; let layers: Int; let heads: Int; let vocab: Int }
      struct ClipG: Decodable { let width: Int; let projection: Int; let heads: Int }
      struct UNet: Decodable { let context_dim: Int; let adm_in_channels: Int; let model_channels: Int }
      let clip_l: Clip
      let clip_g: ClipG
      let unet: UNet
    }
    let config = try Self.decode(Config.self, "tiny-sdxl/config.json")
    #expect(config.unet.context_dim == config.clip_l.width + config.clip_g.width)
    #expect(config.unet.adm_in_channels == config.clip_g.projection + 6 * 256)
    for name in ["eps", "vpred"] {
      let file = try SafeTensorsFile(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-\(name).safetensors"))
      let l = "conditioner.embedders.0.transformer.text_model."
      #expect(file.info(l + "embeddings.token_embedding.weight")?.shape == [config.clip_l.vocab, config.clip_l.width])
      #expect(file.info(l + "encoder.layers.\(config.clip_l.layers - 1).mlp.fc1.weight") != nil)
      #expect(file.info(l + "encoder.layers.\(config.clip_l.layers).mlp.fc1.weight") == nil)
      let g = "conditioner.embedders.1.model."
      #expect(file.info(g + "text_projection")?.shape == [config.clip_g.width, config.clip_g.projection])
      #expect(
        file.info(g + "transformer.resblocks.0.attn.in_proj_weight")?.shape == [
          3 * config.clip_g.width, config.clip_g.width,
        ])
      let u = "model.diffusion_model."
      #expect(
        file.info(u + "label_emb.0.0.weight")?.shape == [4 * config.unet.model_channels, config.unet.adm_in_channels])
      #expect(
        file.info(u + "middle_block.1.transformer_blocks.0.attn2.to_k.weight")?.shape.last == config.unet.context_dim)
      #expect(file.info("first_stage_model.decoder.mid.attn_1.q.weight")?.shape.count == 4)
      for marker in ["v_pred", "ztsnr"] {
        let info = file.info(marker)
        if name == "vpred" {
          #expect(info?.dtype == .f32 && info?.shape == [0] && info?.byteCount == 0, "\(marker)")
        } else {
          #expect(info == nil, "\(marker)")
        }
      }
      #expect(file.metadata["modelspec.prediction_type"] == (name == "vpred" ? "v" : "epsilon"))
    }
  }

  /// Values that pin what the goldens mean (reference facts, not copied from the files).
  @Test func goldenValuesAreTheDocumentedOnes() throws {
    let text = try SafeTensorsFile(path: TestPaths.fixture("golden/text_encoders.safetensors"))
    let astronaut = try Self.int64s(text, "eps.astronaut.l_ids")
    #expect(Array(astronaut[0..<12]) == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407])
    #expect(astronaut.count == 77 && astronaut[12...].allSatisfy { $0 == 49407 })
    let gIds = try Self.int64s(text, "eps.astronaut.g_ids")
    #expect(Array(gIds[0..<12]) == Array(astronaut[0..<12]) && gIds[12...].allSatisfy { $0 == 0 })
    #expect(text.info("eps.long.a1111.context")?.shape == [154, 32])
    #expect(text.info("eps.break.a1111.l_ids")?.shape == [2, 77])
    #expect(text.info("eps.break.comfy.l_ids")?.shape == [1, 77])  // ComfyUI has no BREAK

    let euler = try SafeTensorsFile(path: TestPaths.fixture("golden/euler.safetensors"))
    let vSigmas = try Self.floats(euler, "vpred.sigmas")
    #expect(vSigmas.count == 9 && abs(vSigmas[0] - 4518.7637) < 0.01 && vSigmas[8] == 0)
    let eSigmas = try Self.floats(euler, "eps.sigmas")
    #expect(abs(eSigmas[0] - 14.614641) < 1e-4 && abs(eSigmas[7] - 0.0291675) < 1e-6)
    #expect(try Self.floats(euler, "eps.timesteps") == [999, 856, 714, 571, 428, 285, 143, 0])
    #expect(euler.info("eps.step7.x")?.shape == [1, 4, 8, 8] && euler.info("eps.image_u8")?.dtype == .u8)
    // The last Euler step lands on sigma 0, so the final latent is the last denoised prediction.
    let closeness = Closeness(try Self.floats(euler, "vpred.final"), try Self.floats(euler, "vpred.step7.denoised"))
    #expect(closeness.nmse < 1e-12, "\(closeness)")
  }
}

extension FixtureFilesTests.Manifest.File {
  /// A golden-index entry: dtype and shape per tensor (descriptions and parameters are for people).
  struct Documented: Decodable {
    let tensors: [String: FixtureFilesTests.Manifest.Tensor]
  }
}
