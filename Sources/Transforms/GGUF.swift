import Checkpoint
import Weights
import Foundation
import SafeTensors

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
          file: path, tensor: tensor.name, reason: "shape \(tensor.shape) is not storable as \(tensor.type.name) (at most 4 dims, rows of whole blocks)")
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

/// Exports a safetensors checkpoint as GGUF in the layout stable-diffusion.cpp writes (and
/// ComfyUI-GGUF loads in its compatibility mode): every component under its original name,
/// block-quantized where sd.cpp quantizes (2-D+ weights whose innermost dimension fills 32-value
/// blocks; not biases, `time_embed`, `label_emb` or embedding tables), the rest kept float.
public enum GGUFExport {
  /// Whether sd.cpp's rules quantize this tensor.
  public static func quantizes(_ tensor: TensorInfo) -> Bool {
    guard tensor.shape.count >= 2, let inner = tensor.shape.last, inner % 32 == 0, tensor.dtype.isFloatingPoint else { return false }
    let name = tensor.name
    return !name.hasSuffix(".bias") && !name.contains("time_embed.") && !name.contains("label_emb.")
      && !name.contains("embedding") && !name.hasSuffix(".scale_weight")
  }

  /// The ggml type a tensor is stored as for the requested file type.
  static func type(for tensor: TensorInfo, requested: GGMLType) -> GGMLType? {
    switch tensor.dtype {
    case .i64: return .i64
    case .i32: return .i32
    case .i16: return .i16
    case .i8: return .i8
    default: break
    }
    guard FloatCodec.supported.contains(tensor.dtype) else { return nil }
    // Tensors left unquantized keep a float type that holds their values: F32 and BF16 as they are
    // (BF16's range is F32's; casting it to F16 would clamp), the narrower ones as F16.
    if requested.isQuantized {
      return quantizes(tensor) ? requested : (tensor.dtype == .f32 ? .f32 : tensor.dtype == .bf16 ? .bf16 : .f16)
    }
    return requested
  }

  public static func export(
    input: String, output: String, type requested: GGMLType, components: Set<Component>?, dropEMA: Bool,
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> ConversionReport {
    let start = Date()
    let source = try SafeTensorsFile(path: input)
    let layout = Layout.detect(keys: Set(source.tensors.map(\.name)))
    var tensors: [GGUFWriter.Tensor] = []
    var dropped = 0, converted = 0
    for tensor in source.tensors {
      let component = layout.component(of: tensor.name)
      if dropEMA && (component == .ema || component == .trainingBuffers) { dropped += 1; continue }
      if let components, component != .markers, !components.contains(component) { dropped += 1; continue }
      guard let type = type(for: tensor, requested: requested) else {
        throw ConversionError.unsupportedDType(file: input, tensor: tensor.name, dtype: tensor.dtype)
      }
      if type.isQuantized {
        if let counts = NonFiniteScan.count(source.data(tensor), dtype: tensor.dtype), counts.nan + counts.infinite > 0 {
          throw ConversionError.invalidRequest("\(input): '\(tensor.name)' holds NaN or Inf values, which cannot be block-quantized")
        }
      }
      let unchanged: [GGMLType: DType] = [.f32: .f32, .f16: .f16, .bf16: .bf16, .f64: .f64, .i64: .i64, .i32: .i32, .i16: .i16, .i8: .i8]
      if unchanged[type] != tensor.dtype { converted += 1 }
      tensors.append(GGUFWriter.Tensor(name: tensor.name, shape: tensor.shape, type: type) { sink in
        try produce(file: source, tensor: tensor, type: type, sink: sink)
      })
    }
    var metadata: [(String, GGUFValue)] = []
    if tensors.contains(where: { $0.type.isQuantized }) { metadata.append(("general.quantization_version", .uint32(2))) }
    metadata.append(("rouwei.tool", .string("rouwei-ckpt")))
    metadata.append(("rouwei.version", .string(ToolInfo.version)))
    metadata.append(("rouwei.source", .string((input as NSString).lastPathComponent)))
    // The model's own metadata (modelspec.*, prediction type, head size) travels as GGUF strings,
    // as a safetensors conversion keeps it, so readers of the GGUF decide the same way.
    let written = Set(metadata.map(\.0))
    for (key, value) in source.metadata.sorted(by: { $0.key < $1.key }) where !written.contains(key) && key != GGUFImport.scalarsKey {
      metadata.append((key, .string(value)))
    }
    // GGUF has no rank-0 tensors (ggml stores them as [1]); remember which were scalars.
    let scalars = tensors.filter { $0.shape.isEmpty }.map(\.name)
    if !scalars.isEmpty { metadata.append((GGUFImport.scalarsKey, .string(scalars.joined(separator: "\n")))) }
    try GGUFWriter.write(to: output, metadata: metadata, tensors: tensors, inputs: [input], progress: progress)
    let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    return ConversionReport(
      input: input, output: output, tensorsWritten: tensors.count, tensorsConverted: converted,
      tensorsKeptWide: tensors.count - converted, tensorsDropped: dropped, bytesIn: source.fileSize, bytesOut: outSize ?? 0, clamped: [:],
      nanTensors: [:], warnings: [], seconds: Date().timeIntervalSince(start))
  }

  static func produce(file: SafeTensorsFile, tensor: TensorInfo, type: GGMLType, sink: TensorSink) throws {
    switch type {
    case .i64, .i32, .i16, .i8:
      try sink.write(file.data(tensor))
    case .f32, .f16, .bf16, .f64:
      let target: DType = type == .f32 ? .f32 : type == .f16 ? .f16 : type == .bf16 ? .bf16 : .f64
      if tensor.dtype == target {
        try sink.write(file.data(tensor))
      } else {
        _ = try Streaming.convert(file: file, tensor: tensor, to: target, policy: .clamp, sink: sink)
      }
    default:
      // Rows are whole blocks (the innermost dimension is a multiple of 32): quantize row by row.
      let columns = tensor.shape.last ?? 0
      let rows = tensor.elementCount / max(columns, 1)
      let width = FloatCodec.width(tensor.dtype)
      let bytes = file.data(tensor)
      let rowsPerChunk = max(1, (1 << 16) / max(columns, 1))
      var values = [Float](repeating: 0, count: rowsPerChunk * columns)
      var out = [UInt8](repeating: 0, count: type.byteCount(elements: rowsPerChunk * columns))
      var row = 0
      while row < rows {
        let n = min(rowsPerChunk, rows - row) * columns
        let slice = UnsafeRawBufferPointer(rebasing: bytes[(row * columns * width)..<(row * columns * width + n * width)])
        values.withUnsafeMutableBufferPointer { FloatCodec.decode(slice, dtype: tensor.dtype, into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }
        let outCount = type.byteCount(elements: n)
        values.withUnsafeBufferPointer { input in
          out.withUnsafeMutableBytes {
            GGMLQuantizer.quantize(UnsafeBufferPointer(rebasing: input[0..<n]), type: type, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<outCount]))
          }
        }
        try out.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<outCount])) }
        row += n / columns
      }
    }
  }
}
