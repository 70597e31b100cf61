import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Transforms
import Weights

/// `WeightSource` serves the same canonical tensors, with the same values, from every layout.
@Suite struct WeightSourceTests {
  static let model = TestPaths.fixture("trained/tiny-shapes-eps.safetensors")

  /// Every value of `name` as served.
  static func values(_ source: WeightSource, _ name: String) throws -> [UInt32] {
    try source.decoder(name).decodeAll().map(\.bitPattern)
  }

  /// Checks that `layout` serves every float tensor of the single-file `reference` under the same
  /// name, shape and values (`skip`: names the layout has no home for).
  static func expectSame(_ layout: WeightSource, as reference: WeightSource, skip: (String) -> Bool = { _ in false })
    throws
  {
    var checked = 0
    for name in reference.names where !skip(name) {
      guard let decoder = try? reference.decoder(name) else { continue }  // integer buffers
      #expect(
        layout.shape(name) == reference.shape(name),
        "\(name): shape \(layout.shape(name) ?? []) vs \(reference.shape(name) ?? [])")
      let ours = try layout.decoder(name).decodeAll().map(\.bitPattern)
      #expect(ours == decoder.decodeAll().map(\.bitPattern), "\(name): values differ")
      checked += 1
    }
    #expect(checked > 900)
  }

  @Test func singleFileServesItsOwnNames() throws {
    let source = try WeightSource(path: Self.model)
    let file = try SafeTensorsFile(path: Self.model)
    #expect(source.kind == .safetensors)
    #expect(source.names == file.tensors.map(\.name))
    #expect(source.storedType("model.diffusion_model.out.2.weight") == "F16")
    #expect(source.metadata["rouwei.unet_head_dim"] == "16")
  }

  @Test func diffusersFolderServesCanonicalNames() throws {
    let directory = TestPaths.temporaryDirectory("source-diffusers")
    let folder = directory + "/pipeline"
    _ = try DiffusersLayout.export(input: Self.model, folder: folder, dtype: nil)
    let reference = try WeightSource(path: Self.model)
    let layout = try WeightSource(path: folder)
    #expect(layout.kind == .diffusersFolder)
    // logit_scale has no diffusers home; position_ids is an integer buffer.
    try Self.expectSame(layout, as: reference) { $0.hasSuffix("logit_scale") }
    // Fused OpenCLIP q/k/v and the transposed projection are served as the single file has them.
    let fused = SingleFilePrefix.clipG + "transformer.resblocks.0.attn.in_proj_weight"
    #expect(reference.contains(fused) && layout.contains(fused))
    #expect(layout.storedType(fused) == "F16")

    // The fp16 variant file names diffusers uses are found too.
    let unet = folder + "/unet/diffusion_pytorch_model.safetensors"
    try FileManager.default.moveItem(atPath: unet, toPath: folder + "/unet/diffusion_pytorch_model.fp16.safetensors")
    let variant = try WeightSource(path: folder)
    #expect(
      try Self.values(variant, "model.diffusion_model.out.2.weight")
        == Self.values(reference, "model.diffusion_model.out.2.weight"))
  }

  @Test func wholeModelGGUFServesCanonicalNames() throws {
    let directory = TestPaths.temporaryDirectory("source-gguf")
    let path = directory + "/model-f16.gguf"
    _ = try GGUFExport.export(input: Self.model, output: path, type: .f16, components: nil, dropEMA: false)
    let layout = try WeightSource(path: path)
    #expect(layout.kind == .gguf)
    try Self.expectSame(layout, as: try WeightSource(path: Self.model))
  }

  @Test func unetOnlyFilePlusComponentFiles() throws {
    // ComfyUI-style parts: a UNet without its prefix, a VAE with LDM names, HF text encoders.
    let directory = TestPaths.temporaryDirectory("source-parts")
    let file = try SafeTensorsFile(path: Self.model)
    func write(_ path: String, prefix: String) throws {
      let entries = file.tensors.filter { $0.name.hasPrefix(prefix) }.map { info in
        TensorEntry(
          spec: TensorSpec(name: String(info.name.dropFirst(prefix.count)), dtype: info.dtype, shape: info.shape)
        ) { sink in
          try sink.write(file.data(info))
        }
      }
      try SafeTensorsWriter.write(to: path, entries: entries, metadata: [:])
    }
    try write(directory + "/unet.safetensors", prefix: SingleFilePrefix.unet)
    try write(directory + "/vae.safetensors", prefix: SingleFilePrefix.vae)
    try write(directory + "/clip_l.safetensors", prefix: SingleFilePrefix.clipL)
    _ = try DiffusersLayout.export(input: Self.model, folder: directory + "/pipeline", dtype: nil)
    let clipG = try #require(DiffusersFolder.weightsFile(in: directory + "/pipeline/text_encoder_2"))

    let unetOnly = try WeightSource(path: directory + "/unet.safetensors")
    #expect(unetOnly.names.allSatisfy { $0.hasPrefix(SingleFilePrefix.unet) })
    let assembled = try WeightSource(
      artifact: directory + "/unet.safetensors", textEncoders: [directory + "/clip_l.safetensors", clipG],
      vae: directory + "/vae.safetensors")
    try Self.expectSame(assembled, as: try WeightSource(path: Self.model)) {
      $0.hasSuffix("logit_scale") || $0 == "ztsnr" || $0 == "v_pred"
    }

    // A whole checkpoint lends its parts too; a part without the asked component is refused.
    let fromBase = try WeightSource(
      artifact: directory + "/unet.safetensors", textEncoders: [Self.model], vae: Self.model)
    #expect(fromBase.contains(SingleFilePrefix.vae + "decoder.conv_out.weight"))
    #expect(throws: WeightSourceError.self) {
      try WeightSource(artifact: Self.model, vae: directory + "/clip_l.safetensors")
    }
  }

  @Test func comfyUIGGUFUNetIsServedAsGGUFPyDequantizesIt() throws {
    // Fixtures/codecs/comfy-style.gguf (Scripts/fixtures/make_gguf_reader_goldens.py): written by
    // gguf-py the way ComfyUI-GGUF's convert.py writes SDXL UNets — no prefix, a reshaped tensor
    // with `comfy.gguf.orig_shape.*` — and gguf-py's `dequantize` of every tensor.
    let source = try WeightSource(path: TestPaths.fixture("codecs/comfy-style.gguf"))
    let expected = try SafeTensorsFile(path: TestPaths.fixture("codecs/comfy-style-expected.safetensors"))
    var legacy = Set<String>()
    for info in expected.tensors where info.name != "type_sizes" {
      let name = SingleFilePrefix.unet + info.name
      #expect(source.shape(name) == info.shape, "\(name)")
      var reference = [Float](repeating: 0, count: info.elementCount)
      reference.withUnsafeMutableBufferPointer { FloatCodec.decode(expected.data(info), dtype: .f32, into: $0) }
      #expect(try Self.values(source, name) == reference.map(\.bitPattern), "\(name) differs from gguf-py")
      legacy.insert(source.storedType(name) ?? "")
    }
    // Bit for bit on every legacy block type, not just some.
    #expect(legacy.isSuperset(of: ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]))
  }

  @Test func containersAreDetectedByContent() throws {
    let directory = TestPaths.temporaryDirectory("source-detect")
    // A GGUF named .safetensors is read as GGUF; a broken GGUF fails as GGUF, never as safetensors.
    let gguf = directory + "/misnamed.safetensors"
    try FileManager.default.copyItem(atPath: TestPaths.fixture("codecs/comfy-style.gguf"), toPath: gguf)
    #expect(try WeightSource(path: gguf).kind == .gguf)
    let truncated = directory + "/truncated.gguf"
    try Data(try Data(contentsOf: URL(fileURLWithPath: gguf)).prefix(100)).write(to: URL(fileURLWithPath: truncated))
    #expect(throws: GGUFError.self) { try WeightSource(path: truncated) }

    func refusal(_ bytes: [UInt8], _ name: String) -> String {
      let path = directory + "/" + name
      #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
      do {
        _ = try WeightSource(path: path)
        return "opened"
      } catch let error as WeightSourceError {
        return error.description
      } catch {
        return "other error: \(error)"
      }
    }
    #expect(refusal([0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0, 0, 0], "model.ckpt").contains("zip archive"))
    #expect(refusal([0x80, 0x02, 0x7D, 0x71], "model.bin").contains("pickle"))
    #expect(refusal(Array("hello world, not weights".utf8), "notes.txt").contains("supported: single-file SDXL"))
    try FileManager.default.createDirectory(atPath: directory + "/empty", withIntermediateDirectories: true)
    #expect(throws: WeightSourceError.self) { try WeightSource(path: directory + "/empty") }
  }

  /// A sub-range of a concatenation (diffusers' separate q, k, v served as open_clip's packed
  /// in_proj) decodes from the parts it touches only: a range inside a later part, or across two.
  @Test func concatenationDecodesAnySubRange() throws {
    func part(_ values: [Float], _ name: String) throws -> TensorDecoder {
      let bytes = values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) }
      return try TensorDecoder.owning(bytes, name: name, elementCount: values.count, dtype: .f32)
    }
    let packed = TensorDecoder.concatenating(
      [try part([0, 1, 2], "q"), try part([3, 4, 5, 6], "k"), try part([7, 8], "v")], name: "in_proj")
    for range in [4..<6, 7..<9, 2..<8, 0..<9, 5..<6] {
      let output = UnsafeMutableBufferPointer<Float>.allocate(capacity: range.count)
      defer { output.deallocate() }
      packed.decode(range, into: output)
      #expect(Array(output) == range.map(Float.init), "\(range)")
    }
  }
}
