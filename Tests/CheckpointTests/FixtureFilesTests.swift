import Foundation
import SafeTensors
import Testing
import TestSupport

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
    #expect(index.files.count >= 7)
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
      #expect(file.info(g + "transformer.resblocks.0.attn.in_proj_weight")?.shape == [3 * config.clip_g.width, config.clip_g.width])
      let u = "model.diffusion_model."
      #expect(file.info(u + "label_emb.0.0.weight")?.shape == [4 * config.unet.model_channels, config.unet.adm_in_channels])
      #expect(file.info(u + "middle_block.1.transformer_blocks.0.attn2.to_k.weight")?.shape.last == config.unet.context_dim)
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
    let schedules = try SafeTensorsFile(path: TestPaths.fixture("golden/schedules.safetensors"))
    let base = try Self.floats(schedules, "base.sigmas")
    #expect(base.count == 1000 && abs(base[0] - 0.0291675) < 1e-6 && abs(base[999] - 14.614641) < 1e-4)
    let zsnr = try Self.floats(schedules, "zsnr.sigmas")
    #expect(abs(zsnr[999] - 4518.7637) < 0.01 && abs(zsnr[0] - base[0]) < 1e-7)
    let diffusersZsnr = try Self.floats(schedules, "diffusers.zsnr.sigmas")
    #expect(abs(diffusersZsnr[999] - 4096) < 0.01)
    let normal10 = try Self.floats(schedules, "base.normal.10")
    let expected: [Float] = [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0]
    #expect(zip(normal10, expected).allSatisfy { abs($0 - $1) < 1e-4 } && normal10.count == 11)

    let tokens = try SafeTensorsFile(path: TestPaths.fixture("golden/tokenizer.safetensors"))
    #expect(try Self.int64s(tokens, "astronaut.hf") == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407])
    #expect(try Self.int64s(tokens, "empty.hf") == [49406, 49407])
    let gIds = try Self.int64s(tokens, "simple.a1111.g_ids")
    let end = try #require(gIds.firstIndex(of: 49407))
    #expect(gIds.count == 77 && gIds[0] == 49406 && gIds[(end + 1)...].allSatisfy { $0 == 0 })
    #expect(tokens.info("long.a1111.l_ids")?.shape == [2, 77])

    let euler = try SafeTensorsFile(path: TestPaths.fixture("golden/euler.safetensors"))
    let vSigmas = try Self.floats(euler, "vpred.sigmas")
    #expect(vSigmas.count == 9 && abs(vSigmas[0] - 4518.7637) < 0.01 && vSigmas[8] == 0)
    #expect(euler.info("eps.step7.x")?.shape == [1, 4, 8, 8] && euler.info("eps.image_u8")?.dtype == .u8)

    let randn = try SafeTensorsFile(path: TestPaths.fixture("golden/randn.safetensors"))
    // seed 2^32 + 7 seeds MT19937 with its low 32 bits, i.e. like seed 7's first 16 draws.
    let wrapped = try Self.floats(randn, "seed4294967303.16")
    let seven = try Self.floats(randn, "seed7.1x4x16x16")
    #expect(wrapped == Array(seven[0..<16]))
  }
}

extension FixtureFilesTests.Manifest.File {
  /// A golden-index entry: dtype and shape per tensor (descriptions and parameters are for people).
  struct Documented: Decodable {
    let tensors: [String: FixtureFilesTests.Manifest.Tensor]
  }
}
