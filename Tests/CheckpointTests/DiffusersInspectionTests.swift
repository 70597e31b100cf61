import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Checkpoint

/// Writes `specs` as a safetensors file whose data section is a hole (sizes as on paper).
func writeSparseFile(at path: String, _ specs: [TensorSpec], metadata: [String: String]? = nil) throws {
  let ordered = SafeTensorsWriter.fileOrder(specs)
  let header = SafeTensorsWriter.headerBytes(ordered: ordered, metadata: metadata)
  let dataBytes = ordered.reduce(0) { $0 + $1.byteCount }
  var length = UInt64(header.count).littleEndian
  var bytes = Data(bytes: &length, count: 8)
  bytes.append(contentsOf: header)
  #expect(FileManager.default.createFile(atPath: path, contents: bytes))
  let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
  try handle.truncate(atOffset: UInt64(8 + header.count + dataBytes))
  try handle.close()
}

/// The diffusers tensors of `template`, per subfolder, as the key map lays them out.
func diffusersSpecs(_ template: SDXLTemplate) -> [DiffusersSubfolder: [TensorSpec]] {
  let map = DiffusersKeyMap(template: template)
  var out: [DiffusersSubfolder: [TensorSpec]] = [:]
  for tensor in template.tensors {
    guard case .mapped(let correspondences) = map.diffusers(forSingleFileKey: tensor.key) else { continue }
    for c in correspondences {
      let shape = c.transform.diffusersShape(fromSingleFile: tensor.shape) ?? tensor.shape
      out[c.subfolder, default: []].append(
        TensorSpec(name: c.diffusersKey, dtype: tensor.isInteger ? .i64 : .f16, shape: shape))
    }
  }
  return out
}

@Suite struct DiffusersInspectionTests {
  @Test func fullSizeDiffusersUNetFile() throws {
    let path = TestPaths.temporaryDirectory("dunet") + "/diffusion_pytorch_model.safetensors"
    try writeSparseFile(at: path, diffusersSpecs(.sdxlBase)[.unet] ?? [])
    let report = try Inspector.inspect(path: path)
    #expect(report.layout == "diffusers-unet")
    #expect(report.tensorCount == 1680)
    #expect(report.architecture.kind == .sdxlBase, "\(report.architecture.evidence)")
    #expect(report.architecture.evidence.first?.contains("1680 of 1680") == true)
    let check = try #require(report.keyCheck)
    #expect(check.expected == 1680)
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty)
  }

  @Test func reducedDiffusersUNetWithAStrayKey() throws {
    var unet = UNetConfig.sdxl
    unet.modelChannels = 32
    unet.transformerDepth = [0, 1, 2]
    unet.contextDimension = 32
    unet.admChannels = 1552
    let template = SDXLTemplate(unet: unet, clipL: .clipL, clipG: .clipG, vae: .sdxl)
    var specs = diffusersSpecs(template)[.unet] ?? []
    specs.append(TensorSpec(name: "down_blocks.0.attentions.0.norm.weight", dtype: .f16, shape: [32]))
    let path = TestPaths.temporaryDirectory("dunet") + "/unet.safetensors"
    try writeSparseFile(at: path, specs)
    let report = try Inspector.inspect(path: path)
    #expect(report.architecture.kind == .sdxlReduced)
    #expect(report.architecture.unet?.transformerDepth == [0, 1, 2])
    // Level 0 has attention now, by the names: the key map follows the file's own topology, and
    // the template (no attention at level 0) reports the stray tensor as extra.
    let check = try #require(report.keyCheck)
    #expect(check.extra == ["unet/down_blocks.0.attentions.0.norm.weight"])
  }

  func makeFolder(_ template: SDXLTemplate, unetConfigJSON: String, dropPositionIDs: Bool = false) throws -> String {
    let root = TestPaths.temporaryDirectory("dfolder")
    let fm = FileManager.default
    try #"{"_class_name": "StableDiffusionXLPipeline"}"#.write(
      toFile: root + "/model_index.json", atomically: true, encoding: .utf8)
    for (subfolder, specs) in diffusersSpecs(template) {
      try fm.createDirectory(atPath: root + "/" + subfolder.rawValue, withIntermediateDirectories: true)
      let name = subfolder == .unet || subfolder == .vae ? "diffusion_pytorch_model.safetensors" : "model.safetensors"
      try writeSparseFile(
        at: root + "/\(subfolder.rawValue)/\(name)",
        specs.filter { !(dropPositionIDs && $0.name.hasSuffix("position_ids")) })
    }
    try unetConfigJSON.write(toFile: root + "/unet/config.json", atomically: true, encoding: .utf8)
    return root
  }

  @Test func fullSizeDiffusersFolderIsCheckedAgainstTheTemplate() throws {
    let root = try makeFolder(
      .sdxlBase,
      unetConfigJSON:
        #"{"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048, "addition_embed_type": "text_time"}"#,
      dropPositionIDs: true)
    let report = try Inspector.inspect(path: root)
    #expect(report.architecture.kind == .sdxlBase)
    #expect(report.tensorCount == 1680 + 196 + 517 + 248)
    let check = try #require(report.keyCheck)
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty, "\(check.missing.prefix(3))")
    #expect(!report.anomalies.contains { $0.code == "config-contradicts-weights" })
    // No scheduler config: diffusers assumes epsilon, and says so.
    #expect(report.anomalies.contains { $0.code == "missing-scheduler" })
  }

  @Test func refinerFolderWhoseConfigLies() throws {
    let root = try makeFolder(
      .sdxlRefiner,
      unetConfigJSON:
        #"{"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048, "addition_embed_type": "text_time"}"#)
    let report = try Inspector.inspect(path: root)
    #expect(report.architecture.kind == .sdxlRefiner)
    #expect(report.anomalies.contains { $0.code == "config-contradicts-weights" })
    // The refiner has no CLIP-L: its absence is not a finding.
    #expect(!report.anomalies.contains { $0.code == "missing-component" })
    let check = try #require(report.keyCheck)
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty)
  }

  @Test func fullSizeRefinerSingleFile() throws {
    let path = TestPaths.temporaryDirectory("refiner") + "/refiner.safetensors"
    try writeSparseFile(
      at: path, SDXLTemplate.sdxlRefiner.tensors.map { TensorSpec(name: $0.key, dtype: .f16, shape: $0.shape) })
    let report = try Inspector.inspect(path: path)
    #expect(report.tensorCount == 1858)
    #expect(report.architecture.kind == .sdxlRefiner)
    #expect(report.architecture.unet?.middleTransformerDepth == 4)
    #expect(report.components.first { $0.component == .clipG }?.tensors == 390)
    let check = try #require(report.keyCheck)
    #expect(check.template == "sdxl-refiner")
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty)
  }

  @Test func flattenedTextEncoderFile() throws {
    // transformers ≥ 5 writes CLIPTextModel without `text_model.`.
    let specs = (diffusersSpecs(.sdxlBase)[.textEncoder] ?? [])
      .filter { !$0.name.hasSuffix("position_ids") }
      .map { TensorSpec(name: String($0.name.dropFirst("text_model.".count)), dtype: $0.dtype, shape: $0.shape) }
    let path = TestPaths.temporaryDirectory("te") + "/model.safetensors"
    try writeSparseFile(at: path, specs)
    let report = try Inspector.inspect(path: path)
    #expect(report.layout == "diffusers-text-encoder")
    #expect(report.components.map(\.component) == [.clipL])
    let check = try #require(report.keyCheck)
    #expect(check.expected == 197)
    #expect(check.missing.isEmpty && check.extra.isEmpty && check.wrongShape.isEmpty)
  }

  @Test func renamedTextProjectionIsFlagged() throws {
    let path = TestPaths.temporaryDirectory("tproj") + "/kohya.safetensors"
    let specs = SDXLTemplate.sdxlBase.tensors.map { tensor -> TensorSpec in
      let name = tensor.key == "conditioner.embedders.1.model.text_projection" ? tensor.key + ".weight" : tensor.key
      return TensorSpec(name: name, dtype: tensor.isInteger ? .i64 : .f16, shape: tensor.shape)
    }
    try writeSparseFile(at: path, specs)
    let report = try Inspector.inspect(path: path)
    let anomaly = try #require(report.anomalies.first { $0.code == "text-projection-renamed" })
    #expect(anomaly.tensors == ["conditioner.embedders.1.model.text_projection.weight"])
    #expect(report.keyCheck?.missing == ["conditioner.embedders.1.model.text_projection"])
  }
}
