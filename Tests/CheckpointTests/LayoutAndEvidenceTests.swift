import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct LayoutAndEvidenceTests {
  func write(_ path: String, _ specs: [TensorSpec], metadata: [String: String]? = nil) throws {
    try SafeTensorsWriter.write(
      to: path,
      entries: specs.map { spec in
        TensorEntry(spec: spec) { try $0.write(contentsOf: [UInt8](repeating: 0, count: spec.byteCount)) }
      }, metadata: metadata)
  }

  /// The tiny template's UNet keys without a prefix, as ComfyUI's "save UNet" writes them.
  func tinyUNet(prefix: String) -> [TensorSpec] {
    var unet = UNetConfig.sdxl
    unet.modelChannels = 32
    unet.transformerDepth = [0, 1, 1]
    unet.contextDimension = 32
    unet.admChannels = 16 + 1536
    return SDXLTemplate.unetTensors(unet).map {
      TensorSpec(name: prefix + $0.key.dropFirst(SingleFilePrefix.unet.count), dtype: .f16, shape: $0.shape)
    }
  }

  @Test func unetOnlyFiles() throws {
    let directory = TestPaths.temporaryDirectory("layout")
    try write(directory + "/bare.safetensors", tinyUNet(prefix: ""))
    try write(directory + "/prefixed.safetensors", tinyUNet(prefix: SingleFilePrefix.unet))
    for name in ["bare", "prefixed"] {
      let report = try Inspector.inspect(path: directory + "/\(name).safetensors")
      #expect(report.layout == "unet-only", "\(name)")
      #expect(report.architecture.kind == .sdxlReduced, "\(name)")
      #expect(report.components.map(\.component) == [.unet], "\(name)")
    }
  }

  @Test func sd1ShapesAreDetected() {
    var shapes: [String: [Int]] = [
      "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
      "model.diffusion_model.input_blocks.1.1.proj_in.weight": [320, 320, 1, 1],
      "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
    ]
    #expect(ArchitectureDetector.detect(shapes: shapes, unetPrefix: "model.diffusion_model.").kind == .sd1)
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = [320, 9, 3, 3]
    #expect(ArchitectureDetector.detect(shapes: shapes, unetPrefix: "model.diffusion_model.").inpainting)
  }

  @Test func refinerShapesAreDetected() {
    let shapes: [String: [Int]] = [
      "model.diffusion_model.input_blocks.0.0.weight": [384, 4, 3, 3],
      "model.diffusion_model.input_blocks.4.1.proj_in.weight": [768, 768],
      "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [768, 1280],
      "model.diffusion_model.label_emb.0.0.weight": [1536, 2560],
    ]
    #expect(ArchitectureDetector.detect(shapes: shapes, unetPrefix: "model.diffusion_model.").kind == .sdxlRefiner)
  }

  @Test func sidecarYAMLIsEvidence() throws {
    let directory = TestPaths.temporaryDirectory("sidecar")
    try write(directory + "/m.safetensors", tinyUNet(prefix: SingleFilePrefix.unet))
    try "model:\n  params:\n    parameterization: \"v\"\n".write(
      toFile: directory + "/m.yaml", atomically: true, encoding: .utf8)
    let report = try Inspector.inspect(path: directory + "/m.safetensors")
    #expect(report.prediction.evidence.contains { $0.source == "sidecar" && $0.says == "v" })
    // The loaders read no sidecar for SDXL single files: a v sidecar without the marker is a conflict.
    #expect(report.prediction.loadedByComfyUIAs == "epsilon")
    #expect(!report.prediction.conflicts.isEmpty)
  }

  @Test func diffusersFolderWithVPredictionScheduler() throws {
    let root = TestPaths.temporaryDirectory("diffusers")
    let fm = FileManager.default
    for folder in ["unet", "vae", "text_encoder", "text_encoder_2", "scheduler"] {
      try fm.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
    }
    try #"{"_class_name": "StableDiffusionXLPipeline"}"#.write(
      toFile: root + "/model_index.json", atomically: true, encoding: .utf8)
    try
      #"{"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048, "addition_embed_type": "text_time", "projection_class_embeddings_input_dim": 2816}"#
      .write(toFile: root + "/unet/config.json", atomically: true, encoding: .utf8)
    try #"{"prediction_type": "v_prediction", "rescale_betas_zero_snr": true}"#
      .write(toFile: root + "/scheduler/scheduler_config.json", atomically: true, encoding: .utf8)
    try write(
      root + "/unet/diffusion_pytorch_model.safetensors",
      [TensorSpec(name: "conv_in.weight", dtype: .f16, shape: [320, 4, 3, 3])])
    try write(
      root + "/vae/diffusion_pytorch_model.safetensors",
      [TensorSpec(name: "encoder.conv_in.weight", dtype: .f32, shape: [128, 3, 3, 3])])
    try write(
      root + "/text_encoder/model.safetensors",
      [TensorSpec(name: "text_model.final_layer_norm.weight", dtype: .f16, shape: [768])])
    try write(
      root + "/text_encoder_2/model.safetensors",
      [TensorSpec(name: "text_projection.weight", dtype: .f16, shape: [1280, 1280])])
    let report = try Inspector.inspect(path: root)
    #expect(report.layout == "diffusers-folder")
    #expect(report.architecture.kind == .sdxlBase)
    #expect(report.prediction.prediction == .v)
    #expect(report.prediction.zeroTerminalSNR)
    #expect(report.components.map(\.component) == [.unet, .clipL, .clipG, .vae])
    #expect(report.tensorCount == 4)
  }

  @Test func diffusersComponentFilesAreRecognised() throws {
    #expect(
      Layout.detect(keys: ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight"])
        .name == "diffusers-unet")
    #expect(Layout.detect(keys: ["encoder.down_blocks.0.resnets.0.conv1.weight"]).name == "diffusers-vae")
    let clip = Layout.detect(keys: ["text_model.final_layer_norm.weight", "text_projection.weight"])
    #expect(clip.name == "diffusers-text-encoder" && clip.component(of: "x") == .clipG)
  }

  @Test func folderWithoutIndexIsRejected() throws {
    let root = TestPaths.temporaryDirectory("notdiffusers")
    #expect(throws: CheckpointError.self) { try Inspector.inspect(path: root) }
  }
}
