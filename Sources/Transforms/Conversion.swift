import Checkpoint
import Foundation
import SafeTensors
import Weights

/// Errors of the conversion layer; every message names the file and the tensors concerned.
public enum ConversionError: Error, CustomStringConvertible, Sendable {
  /// Narrowing would overflow: the tensors and how many values each could not hold.
  case overflow(file: String, target: DType, tensors: [(name: String, count: Int)])
  /// A dtype pair the converter cannot handle (e.g. an integer tensor to a float target).
  case unsupportedDType(file: String, tensor: String, dtype: DType)
  /// The selection left nothing to write.
  case nothingSelected(file: String, reason: String)
  /// The replacement VAE does not fit the model.
  case vaeMismatch(file: String, reason: String)
  /// Options that contradict each other or the input.
  case invalidRequest(String)

  public var description: String {
    switch self {
    case .overflow(let file, let target, let tensors):
      let list = tensors.prefix(8).map { "\($0.name) (\($0.count) values)" }.joined(separator: ", ")
      let more = tensors.count > 8 ? " and \(tensors.count - 8) more" : ""
      return
        "\(file): \(tensors.count) tensors hold values outside the \(target.rawValue) range: \(list)\(more). Nothing was written; use --clamp to saturate them or --keep PATTERN to keep those tensors wide"
    case .unsupportedDType(let file, let tensor, let dtype):
      return "\(file): tensor '\(tensor)' has dtype \(dtype.rawValue), which cannot be converted to a float type"
    case .nothingSelected(let file, let reason):
      return "\(file): nothing to write: \(reason)"
    case .vaeMismatch(let file, let reason):
      return "\(file): cannot use as VAE: \(reason)"
    case .invalidRequest(let reason):
      return reason
    }
  }
}

/// What a conversion should do. Built by the CLI from flags, or by code.
public struct ConversionRequest: Sendable {
  /// Target float dtype for weights; nil keeps every tensor's dtype.
  public var dtype: DType?
  /// Components to keep (nil: all). Markers always follow the model.
  public var components: Set<Component>?
  /// Glob patterns (`*` wildcard) of tensors kept in their input dtype.
  public var keepPatterns: [String] = []
  /// Saturate out-of-range values instead of refusing.
  public var overflowPolicy: OverflowPolicy = .refuse
  /// Drop `model_ema.*` and training buffers.
  public var dropEMA = false
  /// Path of a file whose VAE replaces the model's.
  public var replacementVAE: String?
  /// Set the prediction markers: `.epsilon` removes them, `.v` adds `v_pred`.
  public var prediction: PredictionType?
  /// With `.v`: also add `ztsnr`.
  public var zeroTerminalSNR = false
  /// With an fp8 e4m3fn target: ComfyUI's scaled fp8 (per-Linear `scale_weight`) for UNet Linears.
  public var scaledFP8 = false

  public init() {}

  /// Whether `name` matches one of the `--keep` globs.
  func kept(_ name: String) -> Bool {
    keepPatterns.contains { Glob.matches(name, pattern: $0) }
  }
}

/// What a conversion did.
public struct ConversionReport: Codable, Sendable {
  public var input: String
  public var output: String
  public var tensorsWritten: Int
  public var tensorsConverted: Int
  /// Tensors left in their dtype because of the rules (integers, markers, 1-D for 8-bit targets) or `--keep`.
  public var tensorsKeptWide: Int
  public var tensorsDropped: Int
  public var bytesIn: Int
  public var bytesOut: Int
  /// Tensors whose values were saturated under `--clamp`.
  public var clamped: [String: Int]
  /// Tensors holding NaN (carried over, reported).
  public var nanTensors: [String: Int]
  public var warnings: [String]
  public var seconds: Double
  /// GGUF output: tensors per ggml type written.
  public var types: [String: Int]? = nil
  /// GGUF output with `--report`: each block-quantized tensor's error, worst first.
  public var quantization: [QuantizationError]? = nil
}

/// Streams a safetensors checkpoint into a new one: dtype casts, component selection, VAE
/// replacement and marker changes, one tensor at a time, with memory independent of model size.
public enum Converter {
  /// Elements processed per chunk (4 MiB of Float32): bounds working memory for any tensor size.
  static let chunkElements = 1 << 20

  /// Converts `input` into `output` as `request` says.
  public static func convert(
    input: String, output: String, request: ConversionRequest,
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> ConversionReport {
    let start = Date()
    let source = try SafeTensorsFile(path: input)
    let layout = Layout.detect(keys: Set(source.tensors.map(\.name)))
    var warnings: [String] = []
    if let dtype = request.dtype, !FloatCodec.supported.contains(dtype) && dtype != .i8 {
      throw ConversionError.invalidRequest("conversion to \(dtype.rawValue) is not supported")
    }
    if request.scaledFP8 && request.dtype != .f8e4m3 {
      throw ConversionError.invalidRequest("scaled fp8 needs the fp8-e4m3fn target")
    }
    // Quantized layers of the input (int8 rows, scaled or tensorwise fp8) are dequantized through
    // their decoder for a float target, and their bookkeeping goes with them: `QuantizedLayers` is
    // the one rule, shared with the engine's decoder and the merger.
    let keepsQuantization =
      request.dtype == nil || request.dtype == .i8 || (request.scaledFP8 && QuantizedLayers.hasScaledFP8Marker(source))
    let dequantizing = !keepsQuantization && source.tensors.contains { QuantizedLayers.isQuantized($0, in: source) }
    var quantizedLayers: [String] = []

    // Select and plan every output tensor from the mapped inputs.
    var plans: [Plan] = []
    var dropped = 0
    var vaeSource: SafeTensorsFile?
    var vaeTensors: [String: VAEReplacement.Source] = [:]
    if let path = request.replacementVAE {
      let file = try SafeTensorsFile(path: path)
      vaeSource = file
      vaeTensors = try VAEReplacement.tensors(from: file)
    }
    for tensor in source.tensors {
      let component = layout.component(of: tensor.name)
      if request.dropEMA && (component == .ema || component == .trainingBuffers) {
        dropped += 1
        continue
      }
      if component == .markers && (tensor.name == MarkerKey.vPrediction || tensor.name == MarkerKey.zeroTerminalSNR),
        request.prediction != nil
      {
        dropped += 1  // re-decided below
        continue
      }
      if let selected = request.components, component != .markers, !selected.contains(component) {
        dropped += 1
        continue
      }
      if component == .vae, vaeSource != nil {
        dropped += 1  // replaced below
        continue
      }
      if dequantizing, let target = request.dtype {
        if QuantizedLayers.isQuantized(tensor, in: source) {
          plans.append(
            Plan(name: tensor.name, file: source, tensor: tensor, shape: tensor.shape, target: target) { sink in
              try Streaming.convert(
                TensorDecoder.resolve(file: source, tensor: tensor), to: target, policy: .clamp, sink: sink)
            })
          continue
        }
        if QuantizedLayers.isBookkeeping(tensor.name, in: source) {
          dropped += 1
          continue
        }
      }
      if request.scaledFP8, !request.kept(tensor.name), Int8Rows.quantizable(tensor) {
        let layer = Int8Rows.layer(of: tensor.name)
        final class ScaleBox: @unchecked Sendable { var scale: Float? }
        let box = ScaleBox()
        func scale() -> Float {
          if let cached = box.scale { return cached }
          let computed = ScaledFP8.scale(file: source, tensor: tensor)
          box.scale = computed
          return computed
        }
        plans.append(
          Plan(name: tensor.name, file: source, tensor: tensor, shape: tensor.shape, target: .f8e4m3) { sink in
            try ScaledFP8.quantize(file: source, tensor: tensor, scale: scale(), sink: sink)
          })
        plans.append(
          Plan(name: layer + ".scale_weight", file: nil, tensor: nil, shape: [], target: .f32) { sink in
            try sink.write(contentsOf: [scale()])
          })
        continue
      }
      if request.scaledFP8 {
        // Everything but the scaled Linears keeps its dtype (ComfyUI's scaled ops cover Linears only).
        plans.append(Plan(name: tensor.name, file: source, tensor: tensor, shape: tensor.shape, target: tensor.dtype))
        continue
      }
      if request.dtype == .i8, !request.kept(tensor.name), Int8Rows.quantizable(tensor) {
        let layer = Int8Rows.layer(of: tensor.name)
        let rows = tensor.shape[0]
        final class ScaleBox: @unchecked Sendable { var scales: [Float]? }
        let box = ScaleBox()
        func scales() -> [Float] {
          if let cached = box.scales { return cached }
          let computed = Int8Rows.scales(file: source, tensor: tensor)
          box.scales = computed
          return computed
        }
        plans.append(
          Plan(name: tensor.name, file: source, tensor: tensor, shape: tensor.shape, target: .i8) { sink in
            try Int8Rows.quantize(file: source, tensor: tensor, scales: scales(), sink: sink)
          })
        plans.append(
          Plan(name: layer + ".weight_scale", file: nil, tensor: nil, shape: [rows], target: .f32) { sink in
            try sink.write(contentsOf: scales())
          })
        let json = Array(Int8Rows.layerFormat.utf8)
        plans.append(
          Plan(name: layer + ".comfy_quant", file: nil, tensor: nil, shape: [json.count], target: .u8) { sink in
            try sink.write(contentsOf: json)
          })
        quantizedLayers.append(String(layer.dropFirst(SingleFilePrefix.unet.count)))
        continue
      }
      plans.append(
        Plan(
          name: tensor.name, file: source, tensor: tensor, shape: tensor.shape,
          target: target(for: tensor, request: request)))
    }
    if let vaeSource {
      guard request.components == nil || request.components?.contains(.vae) == true else {
        throw ConversionError.invalidRequest("--replace-vae given but the VAE is not among the selected components")
      }
      let modelVAE = source.tensors.filter { layout.component(of: $0.name) == .vae }
      if !modelVAE.isEmpty {
        let expected = Dictionary(uniqueKeysWithValues: modelVAE.map { ($0.name, $0.shape) })
        let missing = expected.keys.filter { vaeTensors[$0] == nil }.sorted()
        if let first = missing.first {
          throw ConversionError.vaeMismatch(
            file: vaeSource.path, reason: "\(missing.count) VAE tensors are missing, e.g. '\(first)'")
        }
        for (name, source) in vaeTensors where expected[name] != nil && expected[name] != source.shape {
          throw ConversionError.vaeMismatch(
            file: vaeSource.path, reason: "'\(name)' has shape \(source.shape), the model's has \(expected[name] ?? [])"
          )
        }
      }
      for (name, source) in vaeTensors.sorted(by: { $0.key < $1.key }) {
        plans.append(
          Plan(
            name: name, file: vaeSource, tensor: source.tensor, shape: source.shape,
            target: target(for: source.tensor, request: request)))
      }
    }
    if request.scaledFP8 && !source.contains(ScaledFP8.marker) {
      // The marker's dtype tells ComfyUI which fp8 type the weights are.
      plans.append(Plan(name: ScaledFP8.marker, file: nil, tensor: nil, shape: [0], target: .f8e4m3) { _ in })
    }
    var metadata = source.metadata
    if let prediction = request.prediction {
      let declared = source.metadata["modelspec.prediction_type"] ?? source.metadata["modelspec.predict_key"]
      switch prediction {
      case .v, .edmV:
        if let declared, PredictionDetector.parse(declared) == .epsilon {
          warnings.append(
            "the input's metadata says epsilon, yet --set-prediction v marks it v-prediction: check with `verify` before shipping"
          )
        }
        plans.append(Plan.marker(MarkerKey.vPrediction))
        if request.zeroTerminalSNR { plans.append(Plan.marker(MarkerKey.zeroTerminalSNR)) }
        metadata["modelspec.prediction_type"] = "v"
      case .epsilon:
        if request.zeroTerminalSNR { throw ConversionError.invalidRequest("--ztsnr needs --set-prediction v") }
        metadata["modelspec.prediction_type"] = "epsilon"
      }
      metadata.removeValue(forKey: "modelspec.predict_key")
    } else if request.zeroTerminalSNR {
      throw ConversionError.invalidRequest("--ztsnr needs --set-prediction v")
    }
    guard plans.contains(where: { $0.tensor != nil }) else {
      throw ConversionError.nothingSelected(file: input, reason: "the selection matches no tensor")
    }

    // Overflow is decided before anything is written: a refused conversion leaves no file.
    if request.overflowPolicy == .refuse, let dtype = request.dtype, dtype != .i8, !request.scaledFP8 {
      var overflowing: [(String, Int)] = []
      for plan in plans where plan.target == dtype && plan.tensor?.dtype != dtype && plan.produce == nil {
        if let file = plan.file, let tensor = plan.tensor {
          let count = try Streaming.count(file: file, tensor: tensor, to: dtype).overflowed
          if count > 0 { overflowing.append((plan.name, count)) }
        }
      }
      if !overflowing.isEmpty { throw ConversionError.overflow(file: input, target: dtype, tensors: overflowing) }
    }

    metadata["rouwei.tool"] = "rouwei-ckpt"
    metadata["rouwei.version"] = ToolInfo.version
    metadata["rouwei.convert"] = describe(request)
    if dequantizing { metadata.removeValue(forKey: "_quantization_metadata") }
    if !quantizedLayers.isEmpty {
      // ComfyUI's mixed-precision index, keyed by layer name without the UNet prefix.
      var layers: [String: Any] = [:]
      for layer in quantizedLayers { layers[layer] = ["format": "int8_tensorwise"] }
      let object: [String: Any] = ["format_version": "1.0", "layers": layers]
      let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
      metadata["_quantization_metadata"] = String(decoding: data, as: UTF8.self)
    }
    var clamped: [String: Int] = [:]
    var nans: [String: Int] = [:]
    var converted = 0, keptWide = 0
    let entries: [TensorEntry] = plans.map { plan in
      TensorEntry(spec: TensorSpec(name: plan.name, dtype: plan.target, shape: plan.shape)) { sink in
        if let produce = plan.produce {
          try produce(sink)
          return
        }
        guard let file = plan.file, let tensor = plan.tensor else { return }
        if tensor.dtype == plan.target {
          try sink.write(file.data(tensor))
        } else {
          let stats = try Streaming.convert(
            file: file, tensor: tensor, to: plan.target, policy: request.overflowPolicy, sink: sink)
          if stats.overflowed > 0 { clamped[plan.name] = stats.overflowed }
          if stats.nan > 0 { nans[plan.name] = stats.nan }
        }
        file.mapping.advise(
          offset: file.dataOffset + tensor.dataOffsets.begin, count: tensor.byteCount, willNeed: false)
      }
    }
    for plan in plans {
      guard let tensor = plan.tensor else { continue }
      if tensor.dtype != plan.target {
        converted += 1
      } else if request.dtype != nil && request.dtype != tensor.dtype {
        keptWide += 1
      }
    }
    var inputs = [input]
    if let path = request.replacementVAE { inputs.append(path) }
    try SafeTensorsWriter.write(to: output, entries: entries, metadata: metadata, inputs: inputs) { _, _, done, total in
      progress?(done, total)
    }
    let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    return ConversionReport(
      input: input, output: output, tensorsWritten: plans.count, tensorsConverted: converted,
      tensorsKeptWide: keptWide, tensorsDropped: dropped, bytesIn: source.fileSize, bytesOut: outSize ?? 0,
      clamped: clamped, nanTensors: nans, warnings: warnings, seconds: Date().timeIntervalSince(start))
  }

  /// The dtype a tensor is written in: integers, markers, `--keep` matches and (for 8-bit targets)
  /// 1-D tensors and embedding tables stay as they are, because consumers expect them wide.
  static func target(for tensor: TensorInfo, request: ConversionRequest) -> DType {
    guard let dtype = request.dtype, dtype != .i8 else { return tensor.dtype }
    if !tensor.dtype.isFloatingPoint || !FloatCodec.supported.contains(tensor.dtype) { return tensor.dtype }
    if tensor.elementCount == 0 || request.kept(tensor.name) { return tensor.dtype }
    if dtype.bitWidth == 8 {
      let embedding =
        tensor.name.hasSuffix("token_embedding.weight") || tensor.name.hasSuffix("positional_embedding")
        || tensor.name.hasSuffix("position_embedding.weight")
      if tensor.shape.count <= 1 || embedding { return tensor.dtype }
    }
    return dtype
  }

  static func describe(_ request: ConversionRequest) -> String {
    var parts: [String: Any] = [:]
    if let dtype = request.dtype { parts["dtype"] = dtype.rawValue }
    if let components = request.components { parts["components"] = components.map(\.rawValue).sorted() }
    if !request.keepPatterns.isEmpty { parts["keep"] = request.keepPatterns }
    if request.overflowPolicy == .clamp { parts["clamp"] = true }
    if request.dropEMA { parts["drop_ema"] = true }
    if let vae = request.replacementVAE { parts["replace_vae"] = (vae as NSString).lastPathComponent }
    if let prediction = request.prediction { parts["set_prediction"] = prediction.rawValue }
    if request.zeroTerminalSNR { parts["ztsnr"] = true }
    if request.scaledFP8 { parts["scaled_fp8"] = true }
    let data = (try? JSONSerialization.data(withJSONObject: parts, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
  }

  /// One output tensor: where it comes from and the dtype it is written in (markers have no source).
  struct Plan {
    let name: String
    let file: SafeTensorsFile?
    let tensor: TensorInfo?
    /// The output shape (a diffusers VAE's linear attention weights become 1×1 convs).
    let shape: [Int]
    let target: DType
    /// A custom producer (int8 codes, scales, dequantization); nil streams a cast of `tensor`.
    var produce: ((TensorSink) throws -> Void)? = nil

    static func marker(_ name: String) -> Plan { Plan(name: name, file: nil, tensor: nil, shape: [0], target: .f32) }
  }
}

/// Chunked decode → encode of one mapped tensor, on every core. Values are read through
/// `TensorDecoder` (the one decode path for every stored layout).
public enum Streaming {
  /// Converts a float tensor (as stored) chunk by chunk into `sink`.
  @discardableResult
  public static func convert(
    file: SafeTensorsFile, tensor: TensorInfo, to target: DType, policy: OverflowPolicy, sink: TensorSink
  ) throws -> EncodeStatistics {
    try convert(try plain(file: file, tensor: tensor), to: target, policy: policy, sink: sink)
  }

  /// Converts whatever `decoder` reads (plain, scaled, int8 rows, ggml blocks) into `sink`.
  @discardableResult
  public static func convert(
    _ decoder: TensorDecoder, to target: DType, policy: OverflowPolicy, sink: TensorSink
  ) throws -> EncodeStatistics {
    try pass(decoder, to: target, policy: policy) { try sink.write($0) }
  }

  /// Counts what converting a tensor would overflow, writing nothing.
  public static func count(file: SafeTensorsFile, tensor: TensorInfo, to target: DType) throws -> EncodeStatistics {
    try pass(try plain(file: file, tensor: tensor), to: target, policy: .refuse) { _ in }
  }

  static func plain(file: SafeTensorsFile, tensor: TensorInfo) throws -> TensorDecoder {
    guard FloatCodec.supported.contains(tensor.dtype) else {
      throw ConversionError.unsupportedDType(file: file.path, tensor: tensor.name, dtype: tensor.dtype)
    }
    return try TensorDecoder(
      name: tensor.name, bytes: file.data(tensor), elementCount: tensor.elementCount, encoding: .float(tensor.dtype),
      file: file.path)
  }

  static func pass(
    _ decoder: TensorDecoder, to target: DType, policy: OverflowPolicy, emit: (UnsafeRawBufferPointer) throws -> Void
  ) throws -> EncodeStatistics {
    let outWidth = FloatCodec.width(target)
    let total = decoder.elementCount
    let chunk = min(Converter.chunkElements, max(total, 1))
    var floats = [Float](repeating: 0, count: chunk)
    var encoded = [UInt8](repeating: 0, count: chunk * outWidth)
    var stats = EncodeStatistics()
    var offset = 0
    while offset < total {
      let count = min(chunk, total - offset)
      let chunkStart = offset
      let lock = NSLock()
      floats.withUnsafeMutableBufferPointer { values in
        encoded.withUnsafeMutableBytes { output in
          parallelRanges(count) { range in
            let part = UnsafeMutableBufferPointer(rebasing: values[range])
            decoder.decode((chunkStart + range.lowerBound)..<(chunkStart + range.upperBound), into: part)
            let partStats = FloatCodec.encode(
              UnsafeBufferPointer(part), to: target,
              into: UnsafeMutableRawBufferPointer(
                rebasing: output[(range.lowerBound * outWidth)..<(range.upperBound * outWidth)]),
              policy: policy)
            lock.lock()
            stats += partStats
            lock.unlock()
          }
        }
      }
      try encoded.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<(count * outWidth)])) }
      offset += count
    }
    return stats
  }
}
