import Checkpoint
import Foundation
import SafeTensors
import Weights
import Workers

/// Writes GGUF v3 files (ggml `docs/gguf.md`): header, key/values, tensor infos with ggml-order
/// dimensions (innermost first), 32-byte aligned data written tensor by tensor, atomically.
public enum GGUFWriter {
  public static let alignment = 32

  /// One tensor: its name, torch-order shape, ggml type and a producer of exactly its bytes.
  public struct Tensor {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType
    public let produce: (TensorSink) throws -> Void

    /// Bytes of the tensor's data (without alignment padding).
    public var byteCount: Int { type.byteCount(elements: shape.reduce(1, *)) }

    /// A tensor of torch-order `shape` stored as `type`; `produce` must write exactly `byteCount` bytes.
    public init(name: String, shape: [Int], type: GGMLType, produce: @escaping (TensorSink) throws -> Void) {
      self.name = name
      self.shape = shape
      self.type = type
      self.produce = produce
    }
  }

  public static func write(
    to path: String, metadata: [(String, GGUFValue)], tensors: [Tensor], inputs: [String],
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws {
    // Refuse what ggml's reader would reject, before creating anything.
    var names = Set<String>(), keys = Set<String>()
    for (key, _) in metadata where !keys.insert(key).inserted {
      throw GGUFError.invalidEntry(file: path, tensor: key, reason: "metadata key given twice")
    }
    for tensor in tensors {
      guard names.insert(tensor.name).inserted else {
        throw GGUFError.invalidEntry(file: path, tensor: tensor.name, reason: "the name appears twice")
      }
      guard tensor.shape.count <= 4, tensor.shape.allSatisfy({ $0 >= 0 }),
        (tensor.shape.last ?? 1) % tensor.type.blockSize == 0
      else {
        throw GGUFError.invalidEntry(
          file: path, tensor: tensor.name,
          reason: "shape \(tensor.shape) is not storable as \(tensor.type.name) (at most 4 dims, rows of whole blocks)")
      }
    }
    var header = ByteWriter()
    header.append(Array("GGUF".utf8))
    header.append(UInt32(3))
    header.append(UInt64(tensors.count))
    header.append(UInt64(metadata.count))
    for (key, value) in metadata {
      header.append(string: key)
      header.append(value.type.rawValue)
      value.serialize(into: &header)
    }
    var offset = 0
    for tensor in tensors {
      header.append(string: tensor.name)
      header.append(UInt32(max(tensor.shape.count, 1)))
      for dim in (tensor.shape.isEmpty ? [1] : tensor.shape.reversed()) { header.append(UInt64(dim)) }
      header.append(tensor.type.rawValue)
      header.append(UInt64(offset))
      offset = aligned(offset + tensor.byteCount)
    }
    let total = UInt64(offset)
    let file = try AtomicFile(destination: path, inputs: inputs)
    do {
      try file.write(header.bytes)
      try file.write([UInt8](repeating: 0, count: aligned(header.bytes.count) - header.bytes.count))
      var done: UInt64 = 0
      let sink = TensorSink(file: file)
      for tensor in tensors {
        sink.reset()
        try tensor.produce(sink)
        guard sink.count == UInt64(tensor.byteCount) else {
          throw SafeTensorsError.producerSizeMismatch(
            file: path, tensor: tensor.name, expected: UInt64(tensor.byteCount), written: sink.count)
        }
        let padding = aligned(tensor.byteCount) - tensor.byteCount
        if padding > 0 { try file.write([UInt8](repeating: 0, count: padding)) }
        done += UInt64(aligned(tensor.byteCount))
        progress?(done, total)
      }
      // An input truncated under its map reads as zeros (SafeTensors.MapGuard): never commit that.
      try MappedFile.checkIntact(paths: inputs)
      try file.commit()
    } catch {
      file.abandon()
      throw error
    }
  }

  static func aligned(_ value: Int) -> Int { (value + alignment - 1) / alignment * alignment }
}

/// Little-endian byte accumulation for headers.
struct ByteWriter {
  var bytes: [UInt8] = []
  mutating func append(_ raw: [UInt8]) { bytes += raw }
  mutating func append<T: FixedWidthInteger>(_ value: T) {
    withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
  }
  mutating func append(string: String) {
    let utf8 = Array(string.utf8)
    append(UInt64(utf8.count))
    bytes += utf8
  }
}

/// Named mixtures of block types for SDXL, in the manner of llama.cpp's `Q4_K_M`: a base type for
/// the UNet's Linear and 1×1 weights, a higher one for the attention value projections and the
/// feed-forward output (`to_v`, `ff.net.2`, the tensors llama.cpp's and ComfyUI-GGUF's mixtures
/// also raise), the text encoders at `textEncoders`, the VAE never quantized. Tensors that are never
/// quantized in any mode: 1-D (norms, biases), `time_embed`, `label_emb`, `input_blocks.0`, `out.`,
/// embedding tables, and 3×3 convolutions (rows of 3 values).
public enum GGUFPreset: String, CaseIterable, Sendable {
  case q3_K_S = "Q3_K_S"
  case q3_K_M = "Q3_K_M"
  case q4_K_S = "Q4_K_S"
  case q4_K_M = "Q4_K_M"
  case q5_K_S = "Q5_K_S"
  case q5_K_M = "Q5_K_M"

  /// The UNet's type.
  public var base: GGMLType {
    switch self {
    case .q3_K_S, .q3_K_M: return .q3_K
    case .q4_K_S, .q4_K_M: return .q4_K
    case .q5_K_S, .q5_K_M: return .q5_K
    }
  }

  /// The type of `to_v` and `ff.net.2` weights.
  public var raised: GGMLType {
    switch self {
    case .q3_K_S: return .q3_K
    case .q3_K_M: return .q4_K
    case .q4_K_S: return .q5_K
    case .q4_K_M, .q5_K_M: return .q6_K
    case .q5_K_S: return .q5_K
    }
  }

  /// The text encoders' type.
  public var textEncoders: GGMLType {
    switch self {
    case .q3_K_S, .q4_K_S, .q5_K_S: return .q6_K
    case .q3_K_M, .q4_K_M, .q5_K_M: return .q8_0
    }
  }

  /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`).
  public var fileType: UInt32 {
    switch self {
    case .q3_K_S: return 11
    case .q3_K_M: return 12
    case .q4_K_S: return 14
    case .q4_K_M: return 15
    case .q5_K_S: return 16
    case .q5_K_M: return 17
    }
  }

  /// Parses `Q4_K_M`, `q4_k_m`, ….
  public init?(name: String) {
    guard let preset = GGUFPreset.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
      return nil
    }
    self = preset
  }
}

/// What `GGUFExport` writes: one block type everywhere it quantizes, or a preset mixture.
public struct GGUFQuantization: Sendable {
  public var type: GGMLType
  public var preset: GGUFPreset?
  public var method: GGMLQuantizerMethod
  /// Measure every quantized tensor's error (`ConversionReport.quantization`).
  public var measure: Bool

  public init(
    type: GGMLType, preset: GGUFPreset? = nil, method: GGMLQuantizerMethod = .conversionDefault,
    measure: Bool = false
  ) {
    self.type = preset?.base ?? type
    self.preset = preset
    self.method = method
    self.measure = measure
  }

  /// llama.cpp's `general.file_type` for the file.
  public var fileType: UInt32 {
    if let preset { return preset.fileType }
    let types: [GGMLType: UInt32] = [
      .f32: 0, .f16: 1, .q4_0: 2, .q4_1: 3, .q8_0: 7, .q5_0: 8, .q5_1: 9, .q2_K: 10, .q3_K: 11, .q4_K: 14, .q5_K: 16,
      .q6_K: 18, .bf16: 32,
    ]
    return types[type] ?? 1024
  }
}

/// Exports a safetensors checkpoint as GGUF in the layout stable-diffusion.cpp writes (and
/// ComfyUI-GGUF loads): every component under its original name, block-quantized where sd.cpp
/// quantizes (2-D+ weights whose innermost dimension fills 32-value blocks; not biases,
/// `time_embed`, `label_emb` or embedding tables), the rest kept float. K-quants need rows of 256:
/// other quantizable tensors fall back to the legacy type llama.cpp uses (Q4_K → Q5_0, …), where
/// sd.cpp would keep them f16.
public enum GGUFExport {
  /// Whether sd.cpp's rules quantize this tensor (except that sd.cpp also quantizes 1-D tensors
  /// whose length fills blocks, norms included; we keep every 1-D tensor float).
  public static func quantizes(_ tensor: TensorInfo) -> Bool {
    guard tensor.shape.count >= 2, let inner = tensor.shape.last, inner % 32 == 0, tensor.dtype.isFloatingPoint else {
      return false
    }
    let name = tensor.name
    return !name.hasSuffix(".bias") && !name.contains("time_embed.") && !name.contains("label_emb.")
      && !name.contains("embedding") && !name.hasSuffix(".scale_weight")
  }

  /// The legacy type written where a K-quant's 256-value rows do not fit (llama.cpp's choice,
  /// except Q2_K/Q3_K, whose IQ4_NL fallback needs a type we do not write).
  public static func fallback(for type: GGMLType) -> GGMLType {
    switch type {
    case .q2_K, .q3_K: return .q4_0
    case .q4_K: return .q5_0
    case .q5_K: return .q5_1
    case .q6_K: return .q8_0
    default: return type
    }
  }

  /// The ggml type a tensor is stored as.
  static func type(for tensor: TensorInfo, component: Component, quantization: GGUFQuantization) -> GGMLType? {
    switch tensor.dtype {
    case .i64: return .i64
    case .i32: return .i32
    case .i16: return .i16
    case .i8: return .i8
    default: break
    }
    guard FloatCodec.supported.contains(tensor.dtype) else { return nil }
    let requested = quantization.type
    // Tensors left unquantized keep a float type that holds their values: F32 and BF16 as they are
    // (BF16's range is F32's; casting it to F16 would clamp), the narrower ones as F16.
    let float: GGMLType = tensor.dtype == .f32 ? .f32 : tensor.dtype == .bf16 ? .bf16 : .f16
    guard requested.isQuantized else { return requested }
    guard quantizes(tensor) else { return float }
    var chosen = requested
    if let preset = quantization.preset {
      let name = tensor.name
      switch component {
      case .vae: return float
      case .clipL, .clipG: chosen = preset.textEncoders
      default:
        let unetName =
          name.hasPrefix(SingleFilePrefix.unet) ? String(name.dropFirst(SingleFilePrefix.unet.count)) : name
        if unetName.hasPrefix("input_blocks.0.") || unetName.hasPrefix("out.") { return float }
        if name.hasSuffix(".to_v.weight") || name.hasSuffix(".ff.net.2.weight") { chosen = preset.raised }
      }
    }
    if chosen.blockSize > (tensor.shape.last ?? 0) || (tensor.shape.last ?? 0) % chosen.blockSize != 0 {
      chosen = fallback(for: chosen)
    }
    return chosen
  }

  /// `general.architecture` as ComfyUI-GGUF names SDXL (`label_emb` is SDXL's, not SD1's).
  static func architecture(keys: Set<String>) -> String? {
    keys.contains(SingleFilePrefix.unet + "label_emb.0.0.weight") || keys.contains("label_emb.0.0.weight")
      ? "sdxl" : nil
  }

  public static func export(
    input: String, output: String, type requested: GGMLType, components: Set<Component>?, dropEMA: Bool,
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> ConversionReport {
    try export(
      input: input, output: output, quantization: GGUFQuantization(type: requested), components: components,
      dropEMA: dropEMA,
      progress: progress)
  }

  public static func export(
    input: String, output: String, quantization: GGUFQuantization, components: Set<Component>?, dropEMA: Bool,
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> ConversionReport {
    let start = Date()
    let source = try SafeTensorsFile(path: input)
    let keys = Set(source.tensors.map(\.name))
    let layout = Layout.detect(keys: keys)
    var tensors: [GGUFWriter.Tensor] = []
    var dropped = 0, converted = 0
    let errors = ErrorLog()
    for tensor in source.tensors {
      let component = layout.component(of: tensor.name)
      if dropEMA && (component == .ema || component == .trainingBuffers) { dropped += 1; continue }
      if let components, component != .markers, !components.contains(component) { dropped += 1; continue }
      guard let type = type(for: tensor, component: component, quantization: quantization) else {
        throw ConversionError.unsupportedDType(file: input, tensor: tensor.name, dtype: tensor.dtype)
      }
      if type.isQuantized {
        if let counts = NonFiniteScan.count(source.data(tensor), dtype: tensor.dtype), counts.nan + counts.infinite > 0
        {
          throw ConversionError.invalidRequest(
            "\(input): '\(tensor.name)' holds NaN or Inf values, which cannot be block-quantized")
        }
      }
      let unchanged: [GGMLType: DType] = [
        .f32: .f32, .f16: .f16, .bf16: .bf16, .f64: .f64, .i64: .i64, .i32: .i32, .i16: .i16, .i8: .i8,
      ]
      if unchanged[type] != tensor.dtype { converted += 1 }
      tensors.append(
        GGUFWriter.Tensor(name: tensor.name, shape: tensor.shape, type: type) { sink in
          let error = try produce(
            file: source, tensor: tensor, type: type, method: quantization.method, measure: quantization.measure,
            sink: sink)
          if let error { errors.append(error) }
        })
    }
    var metadata: [(String, GGUFValue)] = []
    if let architecture = architecture(keys: keys) { metadata.append(("general.architecture", .string(architecture))) }
    if tensors.contains(where: { $0.type.isQuantized }) {
      metadata.append(("general.quantization_version", .uint32(2)))
    }
    metadata.append(("general.file_type", .uint32(quantization.fileType)))
    metadata.append(("rouwei.tool", .string("rouwei-ckpt")))
    metadata.append(("rouwei.version", .string(ToolInfo.version)))
    metadata.append(("rouwei.source", .string((input as NSString).lastPathComponent)))
    if quantization.type.isQuantized { metadata.append(("rouwei.quantizer", .string(quantization.method.rawValue))) }
    // The model's own metadata (modelspec.*, prediction type, head size) travels as GGUF strings,
    // as a safetensors conversion keeps it, so readers of the GGUF decide the same way.
    let written = Set(metadata.map(\.0))
    for (key, value) in source.metadata.sorted(by: { $0.key < $1.key })
    where !written.contains(key) && key != GGUFImport.scalarsKey {
      metadata.append((key, .string(value)))
    }
    // GGUF has no rank-0 tensors (ggml stores them as [1]); remember which were scalars.
    let scalars = tensors.filter { $0.shape.isEmpty }.map(\.name)
    if !scalars.isEmpty { metadata.append((GGUFImport.scalarsKey, .string(scalars.joined(separator: "\n")))) }
    try GGUFWriter.write(to: output, metadata: metadata, tensors: tensors, inputs: [input], progress: progress)
    let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    var typeCounts: [String: Int] = [:]
    for tensor in tensors { typeCounts[tensor.type.name, default: 0] += 1 }
    var report = ConversionReport(
      input: input, output: output, tensorsWritten: tensors.count, tensorsConverted: converted,
      tensorsKeptWide: tensors.count - converted, tensorsDropped: dropped, bytesIn: source.fileSize,
      bytesOut: outSize, clamped: [:],
      nanTensors: [:], warnings: [], seconds: Date().timeIntervalSince(start))
    report.types = typeCounts
    if quantization.measure { report.quantization = errors.sorted() }
    return report
  }

  /// Writes `tensor` as `type`; for block types with `measure`, returns its quantization error.
  static func produce(
    file: SafeTensorsFile, tensor: TensorInfo, type: GGMLType, method: GGMLQuantizerMethod = .reference,
    measure: Bool = false,
    sink: TensorSink
  ) throws -> QuantizationError? {
    switch type {
    case .i64, .i32, .i16, .i8:
      try sink.write(file.data(tensor))
      return nil
    case .f32, .f16, .bf16, .f64:
      let target: DType = type == .f32 ? .f32 : type == .f16 ? .f16 : type == .bf16 ? .bf16 : .f64
      if tensor.dtype == target {
        try sink.write(file.data(tensor))
      } else {
        _ = try Streaming.convert(file: file, tensor: tensor, to: target, policy: .clamp, sink: sink)
      }
      return nil
    default:
      // Rows are whole blocks: quantize chunks of whole rows, the blocks of a chunk spread over the
      // shared pool's threads (each block is independent, so the bytes do not depend on threads).
      let columns = tensor.shape.last ?? 0
      let rows = tensor.elementCount / max(columns, 1)
      let width = FloatCodec.width(tensor.dtype)
      let bytes = file.data(tensor)
      let rowsPerChunk = max(1, (1 << 20) / max(columns, 1))
      var values = [Float](repeating: 0, count: min(rows, rowsPerChunk) * columns)
      var restored = measure ? values : []
      var out = [UInt8](repeating: 0, count: type.byteCount(elements: values.count))
      var stats = ErrorAccumulator()
      var row = 0
      while row < rows {
        let n = min(rowsPerChunk, rows - row) * columns
        let slice = UnsafeRawBufferPointer(
          rebasing: bytes[(row * columns * width)..<(row * columns * width + n * width)])
        let outCount = type.byteCount(elements: n)
        values.withUnsafeMutableBufferPointer { input in
          out.withUnsafeMutableBytes { output in
            quantizeRows(
              slice, dtype: tensor.dtype, scratch: UnsafeMutableBufferPointer(rebasing: input[0..<n]), columns: columns,
              type: type, method: method, into: output)
          }
        }
        if measure {
          out.withUnsafeBytes { raw in
            restored.withUnsafeMutableBufferPointer {
              GGMLQuantizer.dequantize(
                UnsafeRawBufferPointer(rebasing: raw[0..<outCount]), type: type,
                into: UnsafeMutableBufferPointer(rebasing: $0[0..<n]))
            }
          }
          for i in 0..<n { stats.add(values[i], restored[i]) }
        }
        try out.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<outCount])) }
        row += n / columns
      }
      return measure ? stats.result(name: tensor.name, type: type) : nil
    }
  }
}

extension GGUFExport {
  /// Quantizes the whole rows of `columns` values in `input` into `output`, the rows spread over
  /// the shared pool's threads (each row is independent, so the bytes do not depend on threads).
  /// Each thread decodes its rows of `source` (stored as `dtype`) into its part of `scratch`, which
  /// then holds the values (for `--report`).
  static func quantizeRows(
    _ source: UnsafeRawBufferPointer, dtype: DType, scratch: UnsafeMutableBufferPointer<Float>, columns: Int,
    type: GGMLType,
    method: GGMLQuantizerMethod, into output: UnsafeMutableRawBufferPointer
  ) {
    let rowBytes = type.byteCount(elements: columns)
    let width = FloatCodec.width(dtype)
    ThreadPool.shared.forEachChunk(scratch.count / columns, minimumChunk: max(1, 65536 / columns)) { rows in
      let range = (rows.lowerBound * columns)..<(rows.upperBound * columns)
      let mutable = UnsafeMutableBufferPointer(rebasing: scratch[range])
      FloatCodec.decode(
        UnsafeRawBufferPointer(rebasing: source[(range.lowerBound * width)..<(range.upperBound * width)]), dtype: dtype,
        into: mutable)
      let values = UnsafeBufferPointer(mutable)
      let bytes = UnsafeMutableRawBufferPointer(
        rebasing: output[(rows.lowerBound * rowBytes)..<(rows.upperBound * rowBytes)])
      GGMLQuantizer.quantize(values, type: type, method: method, rowLength: columns, into: bytes)
    }
  }
}

/// One quantized tensor's error against its source values.
public struct QuantizationError: Codable, Sendable, Equatable {
  public var name: String
  public var type: String
  /// Root-mean-square error.
  public var rmse: Double
  /// Largest absolute error.
  public var maxError: Double
  /// `maxError` divided by the source's value range (max − min); 0 for a constant tensor.
  public var relativeMaxError: Double
  /// `rmse` divided by the source's RMS value (0 for an all-zero tensor).
  public var relativeRMSE: Double
}

/// Streaming sums for `QuantizationError`.
struct ErrorAccumulator {
  var count = 0
  var squared = 0.0, valueSquared = 0.0, maxError = 0.0
  var low = Double.infinity, high = -Double.infinity

  mutating func add(_ value: Float, _ restored: Float) {
    let v = Double(value), e = abs(Double(restored) - v)
    count += 1
    squared += e * e
    valueSquared += v * v
    maxError = max(maxError, e)
    low = min(low, v)
    high = max(high, v)
  }

  func result(name: String, type: GGMLType) -> QuantizationError {
    let n = Double(max(count, 1))
    let rmse = (squared / n).squareRoot(), rms = (valueSquared / n).squareRoot()
    let range = high - low
    return QuantizationError(
      name: name, type: type.name, rmse: rmse, maxError: maxError, relativeMaxError: range > 0 ? maxError / range : 0,
      relativeRMSE: rms > 0 ? rmse / rms : 0)
  }
}

/// Collects errors from the tensor producers; worst (largest relative max error) first.
final class ErrorLog: @unchecked Sendable {
  private var entries: [QuantizationError] = []
  private let lock = NSLock()

  func append(_ entry: QuantizationError) {
    lock.lock()
    entries.append(entry)
    lock.unlock()
  }

  func sorted() -> [QuantizationError] {
    lock.lock()
    defer { lock.unlock() }
    return entries.sorted { ($0.relativeMaxError, $0.name) > ($1.relativeMaxError, $1.name) }
  }
}
