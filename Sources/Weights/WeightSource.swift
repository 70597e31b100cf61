import Checkpoint
import Foundation
import SafeTensors

/// What can go wrong opening an artifact as a weight source.
public enum WeightSourceError: Error, CustomStringConvertible, Sendable {
  /// The path is not an artifact this tool reads; `seemsToBe` says what its content looks like.
  case unsupportedArtifact(path: String, seemsToBe: String)
  /// The artifact is of a supported kind but its tensors do not form an SDXL model (or part).
  case unrecognisedLayout(path: String, reason: String)
  /// The path cannot be read at all.
  case unreadable(path: String, reason: String)

  /// What the tool reads, for messages.
  public static let supported =
    "single-file SDXL .safetensors (any dtype, fp8, scaled fp8, int8 rows), a UNet-only .safetensors with separate "
    + "text-encoder/VAE files, a diffusers folder, or a GGUF (whole model from rouwei-ckpt, UNet-only from "
    + "ComfyUI-GGUF or stable-diffusion.cpp)"

  /// True when the operating system failed (exit 3), not the content (exit 2).
  public var isIOFailure: Bool {
    if case .unreadable = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .unsupportedArtifact(let path, let seemsToBe):
      return "\(path): \(seemsToBe), which cannot be read as model weights; supported: \(Self.supported)"
    case .unrecognisedLayout(let path, let reason):
      return "\(path): \(reason)"
    case .unreadable(let path, let reason):
      return "\(path): cannot be read: \(reason)"
    }
  }
}

/// One weight source for every artifact: opens a single-file checkpoint, a UNet-only file plus
/// separate text-encoder/VAE files, a diffusers folder (fp16 variant files included) or a GGUF,
/// and serves every tensor by its canonical SDXL single-file (SGM) name — `model.diffusion_model.…`,
/// `conditioner.embedders.0.transformer.…`, `conditioner.embedders.1.model.…`,
/// `first_stage_model.…`, markers — in its stored form, with a `TensorDecoder` that widens any
/// range of it to Float32. Nothing is copied: the files stay mapped while the source lives.
///
/// Names are translated through Checkpoint's `DiffusersKeyMap` (diffusers folders and lone
/// diffusers component files: OpenCLIP's q/k/v are served fused, `text_projection` transposed, VAE
/// attention with its 1×1 dimensions), ComfyUI-GGUF UNet files (keys without the
/// `model.diffusion_model.` prefix, tensors reshaped with `comfy.gguf.orig_shape.*`) and
/// stable-diffusion.cpp UNet files (keys with the prefix) alike. Quantization bookkeeping (scales,
/// `comfy_quant`) is not served as tensors: it is part of its weight's stored form.
public final class WeightSource: @unchecked Sendable {
  /// One served tensor.
  public struct Entry: Sendable {
    /// The canonical single-file name.
    public let name: String
    /// Torch-order shape in the single-file layout.
    public let shape: [Int]
    /// How it is stored (`F16`, `F8_E4M3 × scale`, `I8 rows × weight_scale`, `q4_0`, …).
    public let storedType: String
    /// The file it is read from.
    public let file: String
    /// Stored bits per value (16 for F16, 8 for fp8 and int8 rows, 4.5 for q4_0, …).
    public let bitsPerValue: Double
    let decoder: @Sendable () throws -> TensorDecoder
  }

  /// The artifact's kind, for reports.
  public enum Kind: String, Sendable {
    case safetensors = "safetensors"
    case diffusersFolder = "diffusers folder"
    case gguf = "GGUF"
  }

  /// The path the source was opened from (the main artifact).
  public let path: String
  /// The main artifact's kind.
  public let kind: Kind
  /// The main artifact's string metadata (safetensors `__metadata__`, GGUF string values; for a
  /// diffusers folder the scheduler's `prediction_type`/`rescale_betas_zero_snr` as
  /// `modelspec.prediction_type`/`rouwei.ztsnr`).
  public private(set) var metadata: [String: String]
  /// Canonical names in artifact order.
  public private(set) var names: [String] = []
  private var entries: [String: Entry] = [:]
  /// Keeps the maps alive and checks them.
  private var safetensors: [SafeTensorsFile] = []
  private var ggufs: [GGUFFile] = []
  private let vaePart: Bool

  /// Opens the artifact at `path` (file or diffusers folder), detected by content.
  public convenience init(path: String) throws {
    try self.init(path: path, vaePart: false)
  }

  /// `vaePart`: the file is read for its VAE, so a bare LDM-named VAE file (`encoder.*`,
  /// `decoder.*`) is served under `first_stage_model.`; opened on its own it keeps its names, as
  /// `AutoencoderKL(checkpoint:)` expects.
  init(path: String, vaePart: Bool) throws {
    self.vaePart = vaePart
    self.path = path
    metadata = [:]
    kind = try Self.detect(path)
    switch kind {
    case .diffusersFolder: try addDiffusersFolder(path)
    case .gguf: try addGGUF(path)
    case .safetensors: try addSafeTensors(path)
    }
    guard !names.isEmpty else {
      throw WeightSourceError.unrecognisedLayout(path: path, reason: "holds no tensors")
    }
  }

  /// Opens `artifact` and takes the text encoders from `textEncoders` and the VAE from `vae`
  /// (each a component file — single-file names, ComfyUI-style, or diffusers-style — or a whole
  /// checkpoint to take them from); what they hold replaces what the artifact has.
  public convenience init(artifact: String, textEncoders: [String] = [], vae: String? = nil) throws {
    try self.init(path: artifact)
    for part in textEncoders { try add(part: part, components: [.clipL, .clipG]) }
    if let vae { try add(part: vae, components: [.vae]) }
  }

  /// Adds the `components` held by the artifact at `part`, replacing those already present.
  public func add(part: String, components: Set<Component>) throws {
    let other = try WeightSource(path: part, vaePart: components.contains(.vae))
    let taken = other.names.filter { components.contains(component(ofSingleFileKey: $0)) }
    guard !taken.isEmpty else {
      let names = components.map(\.title).sorted().joined(separator: ", ")
      throw WeightSourceError.unrecognisedLayout(path: part, reason: "holds no \(names) weights")
    }
    let replaced = Set(taken.map { component(ofSingleFileKey: $0) })
    let dropped = Set(names.filter { replaced.contains(component(ofSingleFileKey: $0)) })
    names.removeAll { dropped.contains($0) }
    for name in dropped { entries[name] = nil }
    for name in taken {
      names.append(name)
      entries[name] = other.entries[name]
    }
    safetensors += other.safetensors
    ggufs += other.ggufs
  }

  // MARK: - Serving

  /// Whether the source holds `name`.
  public func contains(_ name: String) -> Bool { entries[name] != nil }
  /// The entry for `name`.
  public func entry(_ name: String) -> Entry? { entries[name] }
  /// The single-file shape of `name`.
  public func shape(_ name: String) -> [Int]? { entries[name]?.shape }
  /// How `name` is stored.
  public func storedType(_ name: String) -> String? { entries[name]?.storedType }

  /// The decoder of `name`: a `CodecError` when it is not a float weight (integer buffers) or its
  /// stored form is not decodable, a `WeightSourceError` when the source lacks it.
  public func decoder(_ name: String) throws -> TensorDecoder {
    guard let entry = entries[name] else {
      throw WeightSourceError.unrecognisedLayout(
        path: path, reason: "has no tensor '\(SafeTensorsError.printable(name))'")
    }
    return try entry.decoder()
  }

  /// Serves `name` through `decoder` from now on, with the same shape (how adapters applied in
  /// memory replace a weight); `storedType` describes it in reports.
  public func replace(_ name: String, storedType: String, decoder: @escaping @Sendable () throws -> TensorDecoder)
    throws
  {
    guard let entry = entries[name] else {
      throw WeightSourceError.unrecognisedLayout(
        path: path, reason: "has no tensor '\(SafeTensorsError.printable(name))'")
    }
    entries[name] = Entry(
      name: name, shape: entry.shape, storedType: storedType, file: entry.file, bitsPerValue: entry.bitsPerValue,
      decoder: decoder)
  }

  /// The map of the main artifact's file (for a diffusers folder: the UNet's weights file), for
  /// hashing and reports.
  public var primaryMapping: MappedFile? { kind == .gguf ? ggufs.first?.mapping : safetensors.first?.mapping }

  /// Throws when a mapped file was truncated under us (reads would otherwise return zeros).
  public func checkIntact() throws {
    for file in safetensors { try file.checkIntact() }
    for file in ggufs { try file.mapping.checkIntact() }
  }

  // MARK: - Detection (a small private dispatch; Checkpoint's file-kind sniffer can replace it)

  static func detect(_ path: String) throws -> Kind {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw WeightSourceError.unreadable(path: path, reason: "no such file or folder")
    }
    if isDirectory.boolValue {
      if FileManager.default.fileExists(atPath: path + "/model_index.json")
        || DiffusersFolder.weightsFile(in: path + "/unet") != nil
      {
        return .diffusersFolder
      }
      throw WeightSourceError.unsupportedArtifact(
        path: path, seemsToBe: "a folder without model_index.json or unet/ weights (not a diffusers pipeline)")
    }
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw WeightSourceError.unreadable(path: path, reason: "permission denied or not a regular file")
    }
    defer { try? handle.close() }
    let head = [UInt8]((try? handle.read(upToCount: 16)) ?? Data())
    if head.starts(with: Array("GGUF".utf8)) { return .gguf }
    if head.count >= 9 {
      // safetensors: a little-endian u64 header length, then a JSON object.
      let length = head.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
      if length >= 2, head[8] == UInt8(ascii: "{") { return .safetensors }
    }
    throw WeightSourceError.unsupportedArtifact(path: path, seemsToBe: Self.guessKind(head))
  }

  /// A readable guess at what a file that is neither safetensors nor GGUF is.
  static func guessKind(_ head: [UInt8]) -> String {
    if head.isEmpty { return "an empty file" }
    if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return "a zip archive (a PyTorch .ckpt/.pt pickle checkpoint?)" }
    if head.first == 0x80 { return "a Python pickle (a legacy .ckpt/.bin checkpoint?)" }
    if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "a PNG image" }
    if head.first == UInt8(ascii: "{") { return "a JSON document" }
    if head.starts(with: Array("ggml".utf8)) || head.starts(with: Array("ggjt".utf8))
      || head.starts(with: Array("lmgg".utf8))
    {
      return "a pre-GGUF ggml file"
    }
    return "neither safetensors nor GGUF (unknown content)"
  }

  // MARK: - Layouts

  private func add(_ entry: Entry) {
    if entries[entry.name] == nil { names.append(entry.name) }
    entries[entry.name] = entry
  }

  /// What a file's own key names are, relative to the canonical layout.
  enum Naming {
    /// Canonical (single-file) names, optionally under a prefix to prepend.
    case singleFile(prefix: String)
    /// A diffusers component file.
    case diffusers(DiffusersSubfolder)
  }

  /// Recognises a file's naming from its keys and shapes.
  static func naming(keys: [String], shapes: [String: [Int]], path: String, vaePart: Bool = false) -> Naming {
    let canonical = [
      SingleFilePrefix.unet, SingleFilePrefix.clipL, SingleFilePrefix.clipG, SingleFilePrefix.vae,
      SingleFilePrefix.refinerClipG,
    ]
    if keys.contains(where: { key in canonical.contains(where: key.hasPrefix) }) { return .singleFile(prefix: "") }
    let ldmUNet = ["input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb."]
    if keys.contains(where: { key in ldmUNet.contains(where: key.hasPrefix) }) {
      return .singleFile(prefix: SingleFilePrefix.unet)
    }
    if keys.contains(where: { $0.hasPrefix("down_blocks.") }) && keys.contains(where: { $0.hasPrefix("conv_in.") }) {
      return .diffusers(.unet)
    }
    if keys.contains(where: { $0.hasPrefix("encoder.down_blocks.") || $0.hasPrefix("decoder.up_blocks.") }) {
      return .diffusers(.vae)
    }
    if vaePart, keys.contains(where: { $0.hasPrefix("encoder.down.") || $0.hasPrefix("decoder.up.") }) {
      return .singleFile(prefix: SingleFilePrefix.vae)
    }
    let token = shapes["text_model.embeddings.token_embedding.weight"] ?? shapes["embeddings.token_embedding.weight"]
    if let width = token?.last {
      // CLIP-L is 768 wide; OpenCLIP-G 1280 (HF CLIPTextModel / CLIPTextModelWithProjection files).
      if width == 768 || shapes["text_projection.weight"] == nil && width < 1024 { return .diffusers(.textEncoder) }
      return .diffusers(.textEncoder2)
    }
    // Anything else (goldens, noise files, unknown extras) is served under its own names.
    return .singleFile(prefix: "")
  }

  /// A key map with the topology of the diffusers files at hand (tiny test models differ from SDXL).
  static func keyMap(unetKeys: [String]?, vaeKeys: [String]?) -> DiffusersKeyMap {
    let base = DiffusersKeyMap()
    let topology = unetKeys.flatMap { DiffusersKeyMap.unetTopology(diffusersKeys: $0) }
    var vaeLevels = base.vaeLevels
    if let vaeKeys {
      let levels = Set(
        vaeKeys.compactMap { key -> Int? in
          guard key.hasPrefix("decoder.up_blocks.") else { return nil }
          return Int(key.dropFirst("decoder.up_blocks.".count).prefix { $0 != "." })
        }
      ).count
      if levels > 0 { vaeLevels = levels }
    }
    return DiffusersKeyMap(
      residualBlocksPerLevel: topology?.residualBlocksPerLevel ?? base.residualBlocksPerLevel,
      levelHasAttention: topology?.levelHasAttention ?? base.levelHasAttention, vaeLevels: vaeLevels)
  }

  private func addSafeTensors(_ path: String) throws {
    let file = try SafeTensorsFile(path: path)
    safetensors.append(file)
    if kind == .safetensors && self.path == path { metadata = file.metadata }
    let keys = file.tensors.map(\.name)
    let shapes = Dictionary(file.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
    switch Self.naming(keys: keys, shapes: shapes, path: path, vaePart: vaePart) {
    case .singleFile(let prefix):
      for tensor in file.tensors where !QuantizedLayers.isBookkeeping(tensor.name, in: file) {
        let name = QuantizedLayers.scaledFP8Markers.contains(tensor.name) ? MarkerKey.scaledFP8 : prefix + tensor.name
        add(
          Entry(
            name: name, shape: tensor.shape, storedType: Self.describe(tensor, in: file), file: path,
            bitsPerValue: Double(tensor.dtype.bitWidth)
          ) {
            try TensorDecoder.resolve(file: file, tensor: tensor)
          })
      }
    case .diffusers(let subfolder):
      let map = Self.keyMap(unetKeys: subfolder == .unet ? keys : nil, vaeKeys: subfolder == .vae ? keys : nil)
      try addDiffusers([(subfolder, file)], map: map)
    }
  }

  private func addDiffusersFolder(_ folder: String) throws {
    var files: [(DiffusersSubfolder, SafeTensorsFile)] = []
    for subfolder in DiffusersSubfolder.allCases {
      guard let weights = DiffusersFolder.weightsFile(in: folder + "/" + subfolder.rawValue) else { continue }
      let file = try SafeTensorsFile(path: weights)
      safetensors.append(file)
      files.append((subfolder, file))
    }
    guard !files.isEmpty else {
      throw WeightSourceError.unrecognisedLayout(
        path: folder, reason: "no component folder holds a .safetensors weights file")
    }
    let unet = files.first { $0.0 == .unet }?.1.tensors.map(\.name)
    let vae = files.first { $0.0 == .vae }?.1.tensors.map(\.name)
    try addDiffusers(files, map: Self.keyMap(unetKeys: unet, vaeKeys: vae))
    // The prediction type lives in the scheduler config; report it as single-file metadata would.
    let scheduler = folder + "/scheduler/scheduler_config.json"
    if FileManager.default.fileExists(atPath: scheduler) {
      let config = try DiffusersFolder.readJSON(scheduler)
      if let prediction = config["prediction_type"] as? String {
        metadata["modelspec.prediction_type"] = prediction == "v_prediction" ? "v" : prediction
        if prediction == "v_prediction" { add(Self.marker(MarkerKey.vPrediction, file: scheduler)) }
      }
      if (config["rescale_betas_zero_snr"] as? Bool) == true {
        add(Self.marker(MarkerKey.zeroTerminalSNR, file: scheduler))
      }
    }
    if let index = try? DiffusersFolder.readJSON(folder + "/model_index.json"),
      let name = index["_name_or_path"] as? String
    {
      metadata["modelspec.title"] = name
    }
  }

  /// An empty marker tensor (v_pred, ztsnr) standing for a diffusers scheduler setting.
  static func marker(_ name: String, file: String) -> Entry {
    Entry(name: name, shape: [0], storedType: "F32", file: file, bitsPerValue: 32) {
      try TensorDecoder(
        name: name, bytes: UnsafeRawBufferPointer(start: nil, count: 0), elementCount: 0, encoding: .float(.f32),
        file: file)
    }
  }

  /// Diffusers-named files, grouped into canonical tensors (three parts for a fused in_proj).
  private func addDiffusers(_ files: [(DiffusersSubfolder, SafeTensorsFile)], map: DiffusersKeyMap) throws {
    var groups: [String: [(KeyCorrespondence, SafeTensorsFile, TensorInfo)]] = [:]
    var order: [String] = []
    for (subfolder, file) in files {
      for tensor in file.tensors where !QuantizedLayers.isBookkeeping(tensor.name, in: file) {
        guard let c = map.singleFile(forDiffusersKey: tensor.name, in: subfolder) else {
          if tensor.name.hasSuffix("position_ids") { continue }  // a buffer, not a weight
          throw WeightSourceError.unrecognisedLayout(
            path: file.path,
            reason:
              "tensor '\(SafeTensorsError.printable(tensor.name))' is not a \(subfolder.rawValue) tensor of this model's key map"
          )
        }
        if groups[c.singleFileKey] == nil { order.append(c.singleFileKey) }
        groups[c.singleFileKey, default: []].append((c, file, tensor))
      }
    }
    for key in order {
      guard let group = groups[key], let (first, file, tensor) = group.first else { continue }
      let stored = Self.describe(tensor, in: file)
      let bits = Double(tensor.dtype.bitWidth)
      switch first.transform {
      case .identity:
        add(
          Entry(name: key, shape: tensor.shape, storedType: stored, file: file.path, bitsPerValue: bits) {
            try TensorDecoder.resolve(file: file, tensor: tensor)
          })
      case .dropUnitSpatialDimensions:
        add(
          Entry(name: key, shape: tensor.shape + [1, 1], storedType: stored, file: file.path, bitsPerValue: bits) {
            try TensorDecoder.resolve(file: file, tensor: tensor)
          })
      case .transpose:
        guard tensor.shape.count == 2 else {
          throw WeightSourceError.unrecognisedLayout(path: file.path, reason: "'\(tensor.name)' is not a matrix")
        }
        let rows = tensor.shape[0], columns = tensor.shape[1]
        add(
          Entry(name: key, shape: [columns, rows], storedType: stored, file: file.path, bitsPerValue: bits) {
            try TensorDecoder.resolve(file: file, tensor: tensor).transposed(rows: rows, columns: columns, name: key)
          })
      case .rowSlice(_, let count):
        let parts = group.sorted { lhs, rhs in
          if case .rowSlice(let a, _) = lhs.0.transform, case .rowSlice(let b, _) = rhs.0.transform { return a < b }
          return false
        }
        guard parts.count == count, Set(parts.map { Array($0.2.shape.dropFirst()) }).count == 1 else {
          throw WeightSourceError.unrecognisedLayout(
            path: file.path, reason: "'\(key)' needs \(count) parts of one width (q, k, v), found \(parts.count)")
        }
        let rows = parts.reduce(0) { $0 + ($1.2.shape.first ?? 0) }
        add(
          Entry(
            name: key, shape: [rows] + tensor.shape.dropFirst(), storedType: stored, file: file.path, bitsPerValue: bits
          ) {
            TensorDecoder.concatenating(
              try parts.map { try TensorDecoder.resolve(file: $0.1, tensor: $0.2) }, name: key)
          })
      }
    }
  }

  private func addGGUF(_ path: String) throws {
    let file = try GGUFFile(path: path)
    ggufs.append(file)
    metadata = file.metadata
    // Rank-0 tensors this tool exported as [1] (GGUF has no scalars).
    let scalars = Set((file.metadata["rouwei.scalar_tensors"] ?? "").split(separator: "\n").map(String.init))
    var shapes: [String: [Int]] = [:]
    for tensor in file.tensors {
      var shape = try file.originalShape(of: tensor) ?? tensor.shape
      if scalars.contains(tensor.name) && tensor.elementCount == 1 { shape = [] }
      shapes[tensor.name] = shape
    }
    let keys = file.tensors.map(\.name)
    let naming = Self.naming(keys: keys, shapes: shapes, path: path)
    let map = Self.keyMap(unetKeys: keys, vaeKeys: nil)
    for tensor in file.tensors {
      let name: String
      var shape = shapes[tensor.name] ?? tensor.shape
      switch naming {
      case .singleFile(let prefix):
        name = QuantizedLayers.scaledFP8Markers.contains(tensor.name) ? MarkerKey.scaledFP8 : prefix + tensor.name
      case .diffusers(let subfolder):
        // ComfyUI-GGUF also converts diffusers-named UNets; other components stay single-file here.
        guard subfolder == .unet, let c = map.singleFile(forDiffusersKey: tensor.name, in: .unet) else {
          throw WeightSourceError.unrecognisedLayout(
            path: path, reason: "tensor '\(SafeTensorsError.printable(tensor.name))' has no single-file name")
        }
        name = c.singleFileKey
        if c.transform == .dropUnitSpatialDimensions { shape += [1, 1] }
      }
      // Float types read as the safetensors dtypes they are (so a GGUF f16 compares with an F16 file).
      let stored = tensor.type.floatDType?.rawValue ?? tensor.type.name
      let bits = Double(tensor.type.blockBytes * 8) / Double(tensor.type.blockSize)
      add(
        Entry(name: name, shape: shape, storedType: stored, file: path, bitsPerValue: bits) {
          if let integer = tensor.type.integerDType {
            throw CodecError.unsupported(
              file: path, tensor: tensor.name, reason: "\(integer.rawValue) holds integers, not weights")
          }
          return try TensorDecoder.resolve(gguf: file, tensor: tensor)
        })
    }
  }

  /// How a safetensors tensor is stored, in words.
  static func describe(_ tensor: TensorInfo, in file: SafeTensorsFile) -> String {
    guard let scale = QuantizedLayers.scale(of: tensor, in: file) else { return tensor.dtype.rawValue }
    let suffix = scale.name.split(separator: ".").last.map(String.init) ?? "scale"
    return tensor.dtype == .i8 ? "I8 rows × \(suffix)" : "\(tensor.dtype.rawValue) × \(suffix)"
  }
}
