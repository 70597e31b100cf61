import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Checkpoint

/// Writes a full-size SDXL file whose data section is a hole: the real 2515 keys and shapes, 6.9 GB
/// on paper, a few hundred kB on disk.
func makeSparseSDXL(at path: String, markers: [String] = [], metadata: [String: String]? = nil) throws {
  var specs = SDXLTemplate.sdxlBase.tensors.map {
    TensorSpec(name: $0.key, dtype: $0.isInteger ? .i64 : .f16, shape: $0.shape)
  }
  specs += markers.map { TensorSpec(name: $0, dtype: .f32, shape: [0]) }
  try writeSparseFile(at: path, specs, metadata: metadata)
}

@Suite struct SparseFullSizeTests {
  @Test func epsilonFile() throws {
    let path = TestPaths.temporaryDirectory("sparse") + "/sdxl.safetensors"
    try makeSparseSDXL(at: path)
    let report = try Inspector.inspect(path: path)
    #expect(report.architecture.kind == .sdxlBase)
    #expect(report.layout == "single-file")
    #expect(report.tensorCount == 2515)
    #expect(report.fileSize > 6_900_000_000)
    #expect(report.prediction.prediction == .epsilon)
    #expect(!report.prediction.zeroTerminalSNR)
    let unet = try #require(report.components.first { $0.component == .unet })
    #expect(unet.tensors == 1680 && unet.parameters == 2_567_463_684)
    let vae = try #require(report.components.first { $0.component == .vae })
    #expect(vae.tensors == 248 && vae.parameters == 83_653_863)
    let check = try #require(report.keyCheck)
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty)
    // An all-fp16 SDXL VAE is flagged.
    #expect(report.anomalies.contains { $0.code == "fp16-vae" })
  }

  @Test func vPredictionMarkers() throws {
    let path = TestPaths.temporaryDirectory("sparse") + "/vpred.safetensors"
    try makeSparseSDXL(at: path, markers: ["v_pred", "ztsnr"], metadata: ["modelspec.prediction_type": "v"])
    let report = try Inspector.inspect(path: path)
    #expect(report.tensorCount == 2517)
    #expect(report.prediction.prediction == .v)
    #expect(report.prediction.zeroTerminalSNR)
    #expect(report.prediction.conflicts.isEmpty)
    #expect(report.prediction.loadedByComfyUIAs == "v-prediction with zero-terminal SNR")
    #expect(report.keyCheck?.extra.isEmpty == true)
  }

  @Test func metadataWithoutMarkerIsAConflict() throws {
    let path = TestPaths.temporaryDirectory("sparse") + "/lost-marker.safetensors"
    try makeSparseSDXL(at: path, metadata: ["modelspec.prediction_type": "v"])
    let report = try Inspector.inspect(path: path)
    #expect(report.prediction.loadedByComfyUIAs == "epsilon")
    #expect(report.prediction.conflicts.count == 1)
    #expect(report.anomalies.contains { $0.code == "prediction-conflict" })
  }

  @Test func ztsnrWithoutVIsFlagged() throws {
    let path = TestPaths.temporaryDirectory("sparse") + "/z.safetensors"
    try makeSparseSDXL(at: path, markers: ["ztsnr"])
    let report = try Inspector.inspect(path: path)
    #expect(report.prediction.prediction == .epsilon)
    #expect(report.prediction.conflicts.contains { $0.contains("ztsnr") })
  }
}
