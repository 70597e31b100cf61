import SafeTensors

/// Known defects of checkpoints in the wild (reference: checkpoint-layouts.md §7).
enum Anomalies {
  static func find(
    file: SafeTensorsFile, layout: Layout, architecture: ArchitectureReport, prediction: PredictionReport
  ) -> [Anomaly] {
    var found: [Anomaly] = []
    let tensors = file.tensors
    let ema = tensors.filter { $0.name.hasPrefix(SingleFilePrefix.ema) }.map(\.name)
    if !ema.isEmpty {
      found.append(
        Anomaly(
          severity: "warning", code: "ema-weights",
          message:
            "\(ema.count) EMA tensors (model_ema.*) double the file's size and are ignored by every loader; drop them with `convert --drop-ema`",
          tensors: Array(ema.prefix(5))))
    }
    let buffers = tensors.filter { MarkerKey.trainingBuffers.contains($0.name) }.map(\.name)
    if !buffers.isEmpty {
      found.append(
        Anomaly(
          severity: "info", code: "training-buffers",
          message: "\(buffers.count) training schedule buffers (betas, alphas_cumprod, …) are unused at inference",
          tensors: buffers))
    }
    for tensor in tensors where tensor.name.hasSuffix("embeddings.position_ids") {
      found += positionIDs(tensor, file: file)
    }
    let isSDXL = architecture.kind == .sdxlBase || architecture.kind == .sdxlRefiner
    let vae = tensors.filter { layout.component(of: $0.name) == .vae && $0.dtype.isFloatingPoint }
    if isSDXL, !vae.isEmpty, vae.allSatisfy({ $0.dtype == .f16 }) {
      found.append(
        Anomaly(
          severity: "warning", code: "fp16-vae",
          message:
            "the SDXL VAE is stored in fp16: the original SDXL VAE overflows in fp16 and decodes to NaN (black images) unless the loader upcasts it (A1111 --no-half-vae) or it is the fp16-fixed VAE",
          tensors: []))
    }
    for conflict in prediction.conflicts {
      found.append(Anomaly(severity: "warning", code: "prediction-conflict", message: conflict, tensors: []))
    }
    if file.contains(MarkerKey.scaledFP8) {
      found.append(
        Anomaly(
          severity: "info", code: "scaled-fp8",
          message:
            "ComfyUI scaled-fp8 weights (W = fp8 × scale_weight): loaders without scaled-fp8 support produce garbage",
          tensors: [MarkerKey.scaledFP8]))
    }
    // open_clip stores `text_projection` (applied as x @ P); the Hugging Face name `.weight` (a
    // Linear, x @ Wᵀ) inside a single file means some converter renamed it, possibly without
    // transposing (kohya's sdxl_model_util renames both ways without a transpose).
    for prefix in [SingleFilePrefix.clipG, SingleFilePrefix.refinerClipG] {
      let renamed = tensors.map(\.name).filter {
        $0 == prefix + "text_projection.weight" || $0 == prefix + "text_projection.weight.weight"
      }
      guard !renamed.isEmpty else { continue }
      found.append(
        Anomaly(
          severity: "warning", code: "text-projection-renamed",
          message:
            "OpenCLIP-G projection stored as `\(renamed[0].dropFirst(prefix.count))` instead of open_clip's `text_projection`: ComfyUI reads `.weight` as a Hugging Face Linear (the transpose of open_clip's matrix), sgm/A1111 look for `text_projection` and will not find it; whether the values were transposed to match cannot be told from the square shape",
          tensors: renamed))
    }
    if architecture.inpainting {
      found.append(
        Anomaly(severity: "info", code: "inpainting", message: "9-channel conv_in: an inpainting model", tensors: []))
    }
    for marker in [MarkerKey.vPrediction, MarkerKey.zeroTerminalSNR] {
      if let tensor = file.info(marker), tensor.elementCount != 0 {
        found.append(
          Anomaly(
            severity: "info", code: "marker-not-empty",
            message: "`\(marker)` holds \(tensor.elementCount) values; loaders only test its presence",
            tensors: [marker]))
      }
    }
    return found
  }

  /// CLIP `position_ids` must be int64 0…76: merges that blend it as floats shift token positions
  /// (the "merged model ignores parts of my prompt" bug).
  static func positionIDs(_ tensor: TensorInfo, file: SafeTensorsFile) -> [Anomaly] {
    let bytes = file.data(tensor)
    var values: [Double] = []
    switch tensor.dtype {
    case .i64:
      values = (0..<tensor.elementCount).map {
        Double(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)))
      }
    case .i32:
      values = (0..<tensor.elementCount).map {
        Double(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)))
      }
    case .f32:
      values = (0..<tensor.elementCount).map {
        Double(Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))))
      }
    case .f16:
      values = (0..<tensor.elementCount).map {
        Double(halfToFloat(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))))
      }
    case .bf16:
      values = (0..<tensor.elementCount).map {
        Double(
          Float(
            bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) << 16
          ))
      }
    default: break
    }
    var found: [Anomaly] = []
    if tensor.dtype != .i64 {
      found.append(
        Anomaly(
          severity: "warning", code: "position-ids-not-int64",
          message:
            "`\(tensor.name)` is \(tensor.dtype.rawValue), not int64: a sign of a merge that blended it (ComfyUI and A1111 re-create it, other loaders may not)",
          tensors: [tensor.name]))
    }
    let wrong = values.enumerated().filter { $0.element != Double($0.offset) }
    if !values.isEmpty, !wrong.isEmpty {
      let first = wrong[0]
      found.append(
        Anomaly(
          severity: "error", code: "position-ids-corrupt",
          message:
            "`\(tensor.name)` is not 0…\(values.count - 1): \(wrong.count) positions differ (first at \(first.offset): \(first.element)); tokens will be read at wrong positions",
          tensors: [tensor.name]))
    }
    return found
  }

  static func halfToFloat(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
  }
}

/// Compares a file's keys and shapes with the template its architecture implies.
enum TemplateComparison {
  /// The template an architecture implies (widths read from `shapes` for reduced models), and its
  /// name in reports; nil for architectures without a template.
  static func template(for architecture: ArchitectureReport, shapes: [String: [Int]]) -> (SDXLTemplate, String)? {
    switch architecture.kind {
    case .sdxlBase: return (.sdxlBase, "sdxl-base")
    case .sdxlRefiner: return (.sdxlRefiner, "sdxl-refiner")
    case .sdxlReduced:
      guard let unet = architecture.unet else { return nil }
      let clipL =
        ArchitectureDetector.textEncoder(shapes: shapes, prefix: SingleFilePrefix.clipL, openCLIP: false) ?? .clipL
      let clipG =
        ArchitectureDetector.textEncoder(shapes: shapes, prefix: SingleFilePrefix.clipG, openCLIP: true) ?? .clipG
      let vae = ArchitectureDetector.vae(shapes: shapes, prefix: SingleFilePrefix.vae) ?? .sdxl
      return (SDXLTemplate(unet: unet, clipL: clipL, clipG: clipG, vae: vae), "SDXL-topology (widths read from shapes)")
    case .sd1, .sd2, .unknown: return nil
    }
  }

  static func compare(shapes: [String: [Int]], layout: Layout, architecture: ArchitectureReport) -> KeyCheck? {
    guard layout.name == "single-file" || layout.name == "unet-only",
      layout.unetPrefix == SingleFilePrefix.unet,
      let (template, name) = template(for: architecture, shapes: shapes)
    else { return nil }
    var expected = template.tensors
    if layout.name == "unet-only" { expected = expected.filter { $0.component == .unet } }
    var missing: [String] = []
    var wrongShape: [String] = []
    var expectedKeys = Set<String>()
    for tensor in expected {
      expectedKeys.insert(tensor.key)
      guard let shape = shapes[tensor.key] else {
        // Newer transformers drop position_ids; loaders re-create it.
        if !tensor.key.hasSuffix("position_ids") { missing.append(tensor.key) }
        continue
      }
      if shape != tensor.shape { wrongShape.append(tensor.key) }
    }
    let extra = shapes.keys.filter { key in
      !expectedKeys.contains(key) && Checkpoint.component(ofSingleFileKey: key) != .markers
        && Checkpoint.component(ofSingleFileKey: key) != .ema
        && Checkpoint.component(ofSingleFileKey: key) != .trainingBuffers && key != MarkerKey.scaledFP8
    }.sorted()
    return KeyCheck(template: name, expected: expected.count, missing: missing, extra: extra, wrongShape: wrongShape)
  }
}
