import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// single file → diffusers folder → single file is bit-identical, and the folder says v-pred.
@Suite struct DiffusersLayoutTests {
  @Test(arguments: ["tiny-sdxl-vpred", "tiny-sdxl-eps"])
  func roundTripIsBitIdentical(name: String) throws {
    let source = TestPaths.fixture("tiny-sdxl/\(name).safetensors")
    let directory = TestPaths.temporaryDirectory("diffusers-layout")
    let folder = directory + "/pipeline"
    _ = try DiffusersLayout.export(input: source, folder: folder, dtype: nil)
    for file in [
      "model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
      "text_encoder_2/config.json", "scheduler/scheduler_config.json",
      "unet/diffusion_pytorch_model.safetensors", "text_encoder_2/model.safetensors",
    ] {
      #expect(FileManager.default.fileExists(atPath: folder + "/" + file), "\(file)")
    }
    let scheduler = try DiffusersFolder.readJSON(folder + "/scheduler/scheduler_config.json")
    let vpred = name.contains("vpred")
    #expect(scheduler["prediction_type"] as? String == (vpred ? "v_prediction" : "epsilon"))
    #expect(scheduler["rescale_betas_zero_snr"] as? Bool == vpred)
    let report = try Inspector.inspect(path: folder)
    #expect(report.prediction.prediction == (vpred ? .v : .epsilon))

    let back = directory + "/back.safetensors"
    _ = try DiffusersLayout.importFolder(folder: folder, output: back, dtype: nil)
    let original = try SafeTensorsFile(path: source)
    let restored = try SafeTensorsFile(path: back)
    #expect(Set(restored.tensors.map(\.name)) == Set(original.tensors.map(\.name)))
    for tensor in original.tensors {
      let other = try #require(restored.info(tensor.name), "\(tensor.name) missing after the round trip")
      #expect(other.dtype == tensor.dtype && other.shape == tensor.shape, "\(tensor.name)")
      #expect(Array(restored.data(other)) == Array(original.data(tensor)), "\(tensor.name) bytes differ")
    }
  }

  @Test func existingFolderIsNotOverwritten() throws {
    let directory = TestPaths.temporaryDirectory("diffusers-exists")
    try FileManager.default.createDirectory(atPath: directory + "/pipeline", withIntermediateDirectories: true)
    #expect(throws: ConversionError.self) {
      _ = try DiffusersLayout.export(
        input: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"), folder: directory + "/pipeline", dtype: nil)
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["pipeline"], "no staging folder left")
  }
}

/// The folder diffusers loaded without missing or unexpected weights (Scripts/fixtures/
/// check_diffusers_folder.py → Fixtures/keymap/diffusers-load-check.json) is what we still write.
@Suite struct DiffusersLoadCheckTests {
  @Test func weShallWriteTheFolderDiffusersLoaded() throws {
    let data = try #require(FileManager.default.contents(atPath: TestPaths.fixture("keymap/diffusers-load-check.json")))
    let check = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    for component in ["unet", "vae", "text_encoder", "text_encoder_2"] {
      let info = try #require(check[component] as? [String: Int])
      #expect(info["missing_keys"] == 0 && info["unexpected_keys"] == 0, "\(component): \(info)")
    }
    #expect(check["unet_equal_to_diffusers_converter"] as? Bool == true)
    #expect((check["scheduler"] as? [String: Any])?["prediction_type"] as? String == "v_prediction")
    #expect((check["pipeline"] as? [String: Any])?["class"] as? String == "StableDiffusionXLPipeline")
    #expect((check["pipeline"] as? [String: Any])?["prediction_type"] as? String == "v_prediction")
    let folder = TestPaths.temporaryDirectory("diffusers-check") + "/pipeline"
    _ = try DiffusersLayout.export(
      input: TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"), folder: folder, dtype: nil)
    for (file, key) in [
      ("unet/diffusion_pytorch_model.safetensors", "unet_weights_sha256"),
      ("text_encoder_2/model.safetensors", "text_encoder_2_weights_sha256"),
    ] {
      let mapping = try MappedFile(path: folder + "/" + file)
      #expect(
        ModelHasher.hashes(of: mapping, dataOffset: nil).sha256 == check[key] as? String,
        "\(file) changed since diffusers loaded it")
    }
  }
}
