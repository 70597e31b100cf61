import Checkpoint
import Foundation
import SafeTensors
import Weights

/// Single-file SDXL checkpoint ⇄ diffusers pipeline folder, through `DiffusersKeyMap`. Values are
/// never changed except by the map's transforms (q/k/v split, `text_projection` transpose, VAE
/// 1×1-conv ⇄ linear reshape), so single → diffusers → single is bit-identical. Tensors without a
/// diffusers home (`logit_scale`, `position_ids` when transformers does not keep it) travel in the
/// weights file's metadata, and the prediction type goes into `scheduler/scheduler_config.json`
/// (`prediction_type`, `rescale_betas_zero_snr`), so diffusers samples a v-pred model as v-pred.
public enum DiffusersLayout {
  static let carriedPrefix = "rouwei.single_file."

  // MARK: - Single file → folder

  public static func export(input: String, folder: String, dtype: DType?) throws -> ConversionReport {
    let start = Date()
    let source = try SafeTensorsFile(path: input)
    var shapes: [String: [Int]] = [:]
    for tensor in source.tensors { shapes[tensor.name] = tensor.shape }
    let architecture = ArchitectureDetector.detect(shapes: shapes, unetPrefix: SingleFilePrefix.unet)
    guard let unet = architecture.unet, architecture.kind == .sdxlBase || architecture.kind == .sdxlReduced,
      let clipL = ArchitectureDetector.textEncoder(shapes: shapes, prefix: SingleFilePrefix.clipL, openCLIP: false),
      let clipG = ArchitectureDetector.textEncoder(shapes: shapes, prefix: SingleFilePrefix.clipG, openCLIP: true),
      let vae = ArchitectureDetector.vae(shapes: shapes, prefix: SingleFilePrefix.vae)
    else {
      throw ConversionError.invalidRequest(
        "\(input): the diffusers layout needs a full SDXL single-file checkpoint (UNet, both text encoders, VAE)")
    }
    let template = SDXLTemplate(unet: unet, clipL: clipL, clipG: clipG, vae: vae)
    let map = DiffusersKeyMap(template: template)
    var perFolder: [DiffusersSubfolder: [TensorEntry]] = [:]
    var carried: [DiffusersSubfolder: [String: String]] = [:]
    var written = 0, dropped = 0
    for tensor in source.tensors {
      switch map.diffusers(forSingleFileKey: tensor.name) {
      case .mapped(let correspondences):
        for c in correspondences {
          guard let shape = c.transform.diffusersShape(fromSingleFile: tensor.shape) else {
            throw ConversionError.invalidRequest(
              "\(input): '\(tensor.name)' has shape \(tensor.shape), which cannot become '\(c.diffusersKey)'")
          }
          let target =
            dtype != nil && FloatCodec.supported.contains(tensor.dtype) ? dtype ?? tensor.dtype : tensor.dtype
          perFolder[c.subfolder, default: []].append(
            TensorEntry(spec: TensorSpec(name: c.diffusersKey, dtype: target, shape: shape)) { sink in
              try emit(source: source, tensor: tensor, transform: c.transform, target: target, sink: sink)
            })
          written += 1
        }
      case .dropped, .unknown:
        dropped += 1
        // Carried in metadata so the way back restores it exactly (small tensors only).
        let component = Checkpoint.component(ofSingleFileKey: tensor.name)
        let folder: DiffusersSubfolder =
          component == .clipL ? .textEncoder : component == .clipG ? .textEncoder2 : component == .vae ? .vae : .unet
        if tensor.byteCount <= 4096, component != .markers {
          carried[folder, default: [:]][carriedPrefix + tensor.name] =
            "\(tensor.dtype.rawValue)|\(tensor.shape.map(String.init).joined(separator: ","))|\(hex(source.data(tensor)))"
        }
      }
    }
    let prediction = PredictionDetector.detect(keys: Set(shapes.keys), metadata: source.metadata)
    let fm = FileManager.default
    let staging = folder + ".partial-\(getpid())"
    try? fm.removeItem(atPath: staging)
    do {
      for subfolder in DiffusersSubfolder.allCases {
        try fm.createDirectory(atPath: staging + "/" + subfolder.rawValue, withIntermediateDirectories: true)
        let name = subfolder == .unet || subfolder == .vae ? "diffusion_pytorch_model.safetensors" : "model.safetensors"
        var metadata = carried[subfolder] ?? [:]
        metadata["format"] = "pt"
        try SafeTensorsWriter.write(
          to: staging + "/" + subfolder.rawValue + "/" + name, entries: perFolder[subfolder] ?? [], metadata: metadata,
          inputs: [input])
      }
      try fm.createDirectory(atPath: staging + "/scheduler", withIntermediateDirectories: true)
      try writeJSON(DiffusersConfigs.unet(unet, clipG: clipG), staging + "/unet/config.json")
      try writeJSON(DiffusersConfigs.vae(vae), staging + "/vae/config.json")
      try writeJSON(DiffusersConfigs.textEncoder(clipL, projection: false), staging + "/text_encoder/config.json")
      try writeJSON(DiffusersConfigs.textEncoder(clipG, projection: true), staging + "/text_encoder_2/config.json")
      try writeJSON(
        DiffusersConfigs.scheduler(v: prediction.prediction != .epsilon, zeroTerminalSNR: prediction.zeroTerminalSNR),
        staging + "/scheduler/scheduler_config.json")
      try writeJSON(DiffusersConfigs.modelIndex, staging + "/model_index.json")
      if fm.fileExists(atPath: folder) {
        throw ConversionError.invalidRequest("\(folder) already exists: choose a new folder for the diffusers pipeline")
      }
      try fm.moveItem(atPath: staging, toPath: folder)
    } catch {
      try? fm.removeItem(atPath: staging)
      throw error
    }
    return ConversionReport(
      input: input, output: folder, tensorsWritten: written, tensorsConverted: written, tensorsKeptWide: 0,
      tensorsDropped: dropped, bytesIn: source.fileSize, bytesOut: folderSize(folder), clamped: [:], nanTensors: [:],
      warnings: [], seconds: Date().timeIntervalSince(start))
  }

  /// The bytes of every regular file under `path` (a file's own size when it is one): what a
  /// diffusers folder occupies.
  static func folderSize(_ path: String) -> Int {
    let fm = FileManager.default
    var isFolder: ObjCBool = false
    guard fm.fileExists(atPath: path, isDirectory: &isFolder) else { return 0 }
    let files = isFolder.boolValue ? (fm.subpaths(atPath: path) ?? []).map { path + "/" + $0 } : [path]
    return files.reduce(0) { total, file in
      guard let attributes = try? fm.attributesOfItem(atPath: file),
        attributes[.type] as? FileAttributeType == .typeRegular
      else { return total }
      return total + ((attributes[.size] as? NSNumber)?.intValue ?? 0)
    }
  }

  /// Writes one diffusers tensor from its single-file source.
  static func emit(
    source: SafeTensorsFile, tensor: TensorInfo, transform: KeyTransform, target: DType, sink: TensorSink
  ) throws {
    let bytes = source.data(tensor)
    switch transform {
    case .identity, .dropUnitSpatialDimensions:
      try write(bytes, dtype: tensor.dtype, to: target, sink: sink)
    case .rowSlice(let index, let count):
      let part = bytes.count / count
      try write(
        UnsafeRawBufferPointer(rebasing: bytes[(index * part)..<((index + 1) * part)]), dtype: tensor.dtype, to: target,
        sink: sink)
    case .transpose:
      try transposed(bytes, dtype: tensor.dtype, rows: tensor.shape[0], columns: tensor.shape[1]).withUnsafeBytes {
        try write($0, dtype: tensor.dtype, to: target, sink: sink)
      }
    }
  }

  static func write(_ bytes: UnsafeRawBufferPointer, dtype: DType, to target: DType, sink: TensorSink) throws {
    if dtype == target || !FloatCodec.supported.contains(dtype) {
      try sink.write(bytes)
      return
    }
    let count = bytes.count / FloatCodec.width(dtype)
    var values = [Float](repeating: 0, count: count)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(bytes, dtype: dtype, into: $0) }
    var out = [UInt8](repeating: 0, count: count * FloatCodec.width(target))
    values.withUnsafeBufferPointer { input in
      out.withUnsafeMutableBytes { _ = FloatCodec.encode(input, to: target, into: $0, policy: .clamp) }
    }
    try sink.write(contentsOf: out)
  }

  /// A row-major matrix's transpose, element bytes moved as they are.
  static func transposed(_ bytes: UnsafeRawBufferPointer, dtype: DType, rows: Int, columns: Int) -> [UInt8] {
    let width = dtype.bitWidth / 8
    var out = [UInt8](repeating: 0, count: bytes.count)
    for r in 0..<rows {
      for c in 0..<columns {
        for b in 0..<width { out[(c * rows + r) * width + b] = bytes[(r * columns + c) * width + b] }
      }
    }
    return out
  }

  // MARK: - Folder → single file

  public static func importFolder(folder: String, output: String, dtype: DType?) throws -> ConversionReport {
    let start = Date()
    var files: [DiffusersSubfolder: SafeTensorsFile] = [:]
    for subfolder in DiffusersSubfolder.allCases {
      guard let path = DiffusersFolder.weightsFile(in: folder + "/" + subfolder.rawValue) else {
        throw ConversionError.invalidRequest("\(folder): no weights in \(subfolder.rawValue)/")
      }
      files[subfolder] = try SafeTensorsFile(path: path)
    }
    guard let unetFile = files[.unet], let vaeFile = files[.vae],
      let topology = DiffusersKeyMap.unetTopology(diffusersKeys: unetFile.tensors.map(\.name))
    else { throw ConversionError.invalidRequest("\(folder): unet/ does not hold a diffusers UNet") }
    let vaeLevels = Set(
      vaeFile.tensors.compactMap { t -> Int? in
        guard t.name.hasPrefix("decoder.up_blocks.") else { return nil }
        return Int(t.name.dropFirst("decoder.up_blocks.".count).prefix { $0 != "." })
      }
    ).count
    let map = DiffusersKeyMap(
      residualBlocksPerLevel: topology.residualBlocksPerLevel, levelHasAttention: topology.levelHasAttention,
      vaeLevels: vaeLevels)
    // Group diffusers tensors by their single-file key (three parts for a fused in_proj).
    var parts: [String: [(KeyCorrespondence, SafeTensorsFile, TensorInfo)]] = [:]
    var order: [String] = []
    for subfolder in DiffusersSubfolder.allCases {
      guard let file = files[subfolder] else { continue }
      for tensor in file.tensors {
        guard let c = map.singleFile(forDiffusersKey: tensor.name, in: subfolder) else {
          if tensor.name.hasSuffix("position_ids") { continue }
          throw ConversionError.invalidRequest("\(file.path): '\(tensor.name)' has no single-file name")
        }
        if parts[c.singleFileKey] == nil { order.append(c.singleFileKey) }
        parts[c.singleFileKey, default: []].append((c, file, tensor))
      }
    }
    var entries: [TensorEntry] = []
    for key in order {
      guard let group = parts[key], let (first, file, tensor) = group.first else { continue }
      let target = dtype != nil && FloatCodec.supported.contains(tensor.dtype) ? dtype ?? tensor.dtype : tensor.dtype
      switch first.transform {
      case .identity:
        entries.append(
          TensorEntry(spec: TensorSpec(name: key, dtype: target, shape: tensor.shape)) {
            try write(file.data(tensor), dtype: tensor.dtype, to: target, sink: $0)
          })
      case .dropUnitSpatialDimensions:
        entries.append(
          TensorEntry(spec: TensorSpec(name: key, dtype: target, shape: tensor.shape + [1, 1])) {
            try write(file.data(tensor), dtype: tensor.dtype, to: target, sink: $0)
          })
      case .transpose:
        let shape = [tensor.shape[1], tensor.shape[0]]
        entries.append(
          TensorEntry(spec: TensorSpec(name: key, dtype: target, shape: shape)) { sink in
            try transposed(file.data(tensor), dtype: tensor.dtype, rows: tensor.shape[0], columns: tensor.shape[1])
              .withUnsafeBytes {
                try write($0, dtype: tensor.dtype, to: target, sink: sink)
              }
          })
      case .rowSlice(_, let count):
        let sorted = group.sorted { lhs, rhs in
          if case .rowSlice(let a, _) = lhs.0.transform, case .rowSlice(let b, _) = rhs.0.transform { return a < b }
          return false
        }
        guard sorted.count == count else {
          throw ConversionError.invalidRequest("\(folder): '\(key)' needs \(count) parts, found \(sorted.count)")
        }
        let shape = [tensor.shape[0] * count] + tensor.shape.dropFirst()
        entries.append(
          TensorEntry(spec: TensorSpec(name: key, dtype: target, shape: shape)) { sink in
            for (_, partFile, partTensor) in sorted {
              try write(partFile.data(partTensor), dtype: partTensor.dtype, to: target, sink: sink)
            }
          })
      }
    }
    // Tensors carried in metadata, and the prediction markers from the scheduler config.
    for file in files.values {
      for (key, value) in file.metadata where key.hasPrefix(carriedPrefix) {
        let fields = value.split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 3, let carriedType = DType(rawValue: String(fields[0])) else { continue }
        let shape = fields[1].isEmpty ? [] : fields[1].split(separator: ",").compactMap { Int($0) }
        let bytes = unhex(String(fields[2]))
        let spec = TensorSpec(name: String(key.dropFirst(carriedPrefix.count)), dtype: carriedType, shape: shape)
        guard spec.byteCount == bytes.count else { continue }
        entries.append(TensorEntry(spec: spec) { try $0.write(contentsOf: bytes) })
      }
    }
    let scheduler = try? DiffusersFolder.readJSON(folder + "/scheduler/scheduler_config.json")
    let prediction = PredictionDetector.detect(keys: [], metadata: [:], schedulerConfig: scheduler ?? [:])
    var metadata: [String: String] = ["rouwei.tool": "rouwei-ckpt", "rouwei.version": ToolInfo.version]
    if prediction.prediction == .v {
      entries.append(TensorEntry(spec: TensorSpec(name: MarkerKey.vPrediction, dtype: .f32, shape: [0])) { _ in })
      if prediction.zeroTerminalSNR {
        entries.append(TensorEntry(spec: TensorSpec(name: MarkerKey.zeroTerminalSNR, dtype: .f32, shape: [0])) { _ in })
      }
    }
    metadata["modelspec.prediction_type"] = prediction.prediction == .v ? "v" : "epsilon"
    let inputs = files.values.map(\.path)
    try SafeTensorsWriter.write(to: output, entries: entries, metadata: metadata, inputs: inputs)
    return ConversionReport(
      input: folder, output: output, tensorsWritten: entries.count, tensorsConverted: entries.count, tensorsKeptWide: 0,
      tensorsDropped: 0, bytesIn: folderSize(folder), bytesOut: folderSize(output), clamped: [:], nanTensors: [:],
      warnings: [],
      seconds: Date().timeIntervalSince(start))
  }

  static func writeJSON(_ object: [String: Any], _ path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
  }

  static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
  }

  static func unhex(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex, let next = text.index(index, offsetBy: 2, limitedBy: text.endIndex) {
      guard let byte = UInt8(text[index..<next], radix: 16) else { return [] }
      out.append(byte)
      index = next
    }
    return out
  }
}

/// The diffusers / transformers config files of an SDXL pipeline.
enum DiffusersConfigs {
  static let modelIndex: [String: Any] = [
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1", "force_zeros_for_empty_prompt": true,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": [NSNull(), NSNull()],
    "tokenizer_2": [NSNull(), NSNull()], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
  ]

  static func unet(_ c: UNetConfig, clipG: TextEncoderConfig) -> [String: Any] {
    let channels = c.channelMultipliers.map { $0 * c.modelChannels }
    let attention = c.transformerDepth.map { $0 > 0 }
    return [
      "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
      "addition_time_embed_dim": 256, "attention_head_dim": channels.map { max(1, $0 / c.headDimension) },
      "block_out_channels": channels, "cross_attention_dim": c.contextDimension,
      "down_block_types": attention.map { $0 ? "CrossAttnDownBlock2D" : "DownBlock2D" },
      "up_block_types": attention.reversed().map { $0 ? "CrossAttnUpBlock2D" : "UpBlock2D" },
      "mid_block_type": "UNetMidBlock2DCrossAttn", "flip_sin_to_cos": true, "freq_shift": 0,
      "in_channels": c.inChannels, "out_channels": c.outChannels, "layers_per_block": c.residualBlocksPerLevel,
      "norm_eps": 1e-5, "norm_num_groups": 32, "projection_class_embeddings_input_dim": c.admChannels ?? 2816,
      "sample_size": 128, "transformer_layers_per_block": c.transformerDepth.map { max($0, 1) },
      "use_linear_projection": true,
    ]
  }

  static func vae(_ c: VAEConfig) -> [String: Any] {
    [
      "_class_name": "AutoencoderKL", "act_fn": "silu",
      "block_out_channels": c.channelMultipliers.map { $0 * c.baseChannels },
      "down_block_types": Array(repeating: "DownEncoderBlock2D", count: c.channelMultipliers.count),
      "up_block_types": Array(repeating: "UpDecoderBlock2D", count: c.channelMultipliers.count),
      "in_channels": c.imageChannels, "out_channels": c.imageChannels, "latent_channels": c.latentChannels,
      "layers_per_block": c.residualBlocks, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.13025,
      "force_upcast": true,
    ]
  }

  static func textEncoder(_ c: TextEncoderConfig, projection: Bool) -> [String: Any] {
    [
      "architectures": [projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"], "model_type": "clip_text_model",
      "hidden_act": projection ? "gelu" : "quick_gelu", "hidden_size": c.width, "intermediate_size": c.mlpWidth,
      "num_attention_heads": max(1, c.width / 64), "num_hidden_layers": c.layers,
      "max_position_embeddings": c.contextLength, "vocab_size": c.vocabularySize,
      "projection_dim": c.projectionDimension ?? c.width, "layer_norm_eps": 1e-5, "bos_token_id": 49406,
      "eos_token_id": 49407, "pad_token_id": 1, "torch_dtype": "float32",
    ]
  }

  static func scheduler(v: Bool, zeroTerminalSNR: Bool) -> [String: Any] {
    [
      "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
      "beta_schedule": "scaled_linear",
      "num_train_timesteps": 1000, "prediction_type": v ? "v_prediction" : "epsilon",
      "rescale_betas_zero_snr": zeroTerminalSNR, "steps_offset": 1,
      "timestep_spacing": zeroTerminalSNR ? "trailing" : "leading", "interpolation_type": "linear",
      "use_karras_sigmas": false,
    ]
  }
}
