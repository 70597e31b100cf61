import Checkpoint
import Foundation
import SafeTensors

/// What can go wrong decoding a stored tensor to floats or encoding floats to a dtype.
public enum CodecError: Error, CustomStringConvertible, Sendable {
  /// The tensor's storage is not something this codec turns into floats (integers, an unknown
  /// `comfy_quant` format, a rotated int8 layout, a ggml type without a dequantizer, …).
  case unsupported(file: String, tensor: String, reason: String)
  /// The bytes do not match what the encoding needs for the element count.
  case sizeMismatch(file: String, tensor: String, expected: Int, actual: Int)
  /// Values did not fit the target dtype under `OverflowPolicy.refuse`.
  case outOfRange(file: String, tensor: String, target: DType, count: Int)

  /// Always false: these are problems with the input or the request (exit 2), never I/O.
  public var isIOFailure: Bool { false }

  public var description: String {
    switch self {
    case .unsupported(let file, let tensor, let reason):
      return "\(file): tensor '\(SafeTensorsError.printable(tensor))' cannot be decoded: \(reason)"
    case .sizeMismatch(let file, let tensor, let expected, let actual):
      return
        "\(file): tensor '\(SafeTensorsError.printable(tensor))' has \(actual) bytes but its encoding needs \(expected)"
    case .outOfRange(let file, let tensor, let target, let count):
      return
        "\(file): tensor '\(SafeTensorsError.printable(tensor))' has \(count) values outside the \(target.rawValue) range (refused; clamp to saturate or keep the tensor wide)"
    }
  }
}

/// How a stored tensor's bytes become Float32 values.
public enum StoredEncoding: Sendable, Equatable {
  /// A float dtype stored plainly: F64, F32, F16, BF16, F8_E4M3 (e4m3fn) or F8_E5M2.
  case float(DType)
  /// A float dtype times one scale: ComfyUI scaled fp8 (`scale_weight`) and tensorwise
  /// `comfy_quant` fp8 (`weight_scale`), W = stored × scale.
  case scaledFloat(DType, scale: Float)
  /// I8 rows times one scale each (`weight_scale`, `[out]` or `[out, 1]`): W[r, c] = q[r, c] × scales[r].
  case int8Rows(scales: [Float], columns: Int)
  /// ggml blocks, dequantized as ggml's `dequantize_row_*` does.
  case ggml(GGMLType)

  /// Bytes `elements` values occupy in this encoding; nil when that overflows.
  public func byteCount(elements: Int) -> Int? {
    switch self {
    case .float(let dtype), .scaledFloat(let dtype, _):
      let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.bitWidth / 8)
      return overflow ? nil : bytes
    case .int8Rows: return elements
    case .ggml(let type): return type.checkedByteCount(elements: elements)
    }
  }
}

/// Decodes a stored tensor to Float32 in any range, chunk by chunk: a 253 MB embedding table never
/// needs a full Float32 copy. Holds a view of mapped bytes: keep the file open while using it.
///
/// Build one with `TensorDecoder.resolve(file:tensor:)` (safetensors, detecting int8 rows and scaled
/// fp8 from the sibling tensors) or `resolve(gguf:tensor:)`, or directly from bytes.
public struct TensorDecoder: @unchecked Sendable {
  /// The tensor's name (for messages).
  public let name: String
  /// Number of values.
  public let elementCount: Int
  /// How the bytes map to values.
  public let encoding: StoredEncoding
  let bytes: UnsafeRawBufferPointer
  /// Stored bytes, or a tensor a weight source assembles from others (diffusers folders split
  /// OpenCLIP's fused q/k/v and transpose `text_projection`).
  let arrangement: Arrangement
  /// Keeps bytes computed in memory alive (`owning`); nil for mapped bytes.
  private(set) var owner: AnyObject?

  indirect enum Arrangement {
    case stored
    /// Parts stacked along dimension 0, in order.
    case concatenation([TensorDecoder])
    /// The transpose of a `rows × columns` matrix.
    case transpose(TensorDecoder, rows: Int, columns: Int)
  }

  /// Default chunk: 1 Mi values (4 MiB of Float32).
  public static let defaultChunk = 1 << 20

  /// Wraps `bytes` holding `elementCount` values in `encoding`. Throws `CodecError` when the
  /// encoding cannot be decoded or the byte count is wrong.
  public init(name: String, bytes: UnsafeRawBufferPointer, elementCount: Int, encoding: StoredEncoding, file: String)
    throws
  {
    switch encoding {
    case .float(let dtype), .scaledFloat(let dtype, _):
      guard FloatCodec.supported.contains(dtype) else {
        throw CodecError.unsupported(
          file: file, tensor: name, reason: "\(dtype.rawValue) is not a float type this codec reads")
      }
    case .int8Rows(let scales, let columns):
      guard columns > 0 ? elementCount == scales.count * columns : elementCount == 0 else {
        throw CodecError.unsupported(
          file: file, tensor: name,
          reason: "\(scales.count) row scales do not cover \(elementCount) values in rows of \(columns)")
      }
    case .ggml(let type):
      if type.isQuantized {
        guard type.isDequantizable else {
          throw CodecError.unsupported(
            file: file, tensor: name, reason: "ggml type \(type.name) has no dequantizer here")
        }
        guard elementCount % type.blockSize == 0 else {
          throw CodecError.unsupported(
            file: file, tensor: name, reason: "\(elementCount) values do not fill whole \(type.name) blocks")
        }
      } else if type.floatDType == nil {
        throw CodecError.unsupported(
          file: file, tensor: name, reason: "ggml type \(type.name) holds integers, not floats")
      }
    }
    guard elementCount >= 0, let expected = encoding.byteCount(elements: elementCount) else {
      throw CodecError.unsupported(file: file, tensor: name, reason: "\(elementCount) values overflow byte sizes")
    }
    guard bytes.count == expected else {
      throw CodecError.sizeMismatch(file: file, tensor: name, expected: expected, actual: bytes.count)
    }
    // GGUF float types decode exactly like the safetensors dtypes.
    if case .ggml(let type) = encoding, let dtype = type.floatDType {
      self.encoding = .float(dtype)
    } else {
      self.encoding = encoding
    }
    self.name = name
    self.elementCount = elementCount
    self.bytes = bytes
    arrangement = .stored
  }

  private init(name: String, elementCount: Int, encoding: StoredEncoding, arrangement: Arrangement) {
    self.name = name
    self.elementCount = elementCount
    self.encoding = encoding
    self.bytes = UnsafeRawBufferPointer(start: nil, count: 0)
    self.arrangement = arrangement
  }

  /// A decoder over `bytes` it keeps (values computed in memory, such as a weight with adapters
  /// applied), stored as `dtype`.
  public static func owning(_ bytes: [UInt8], name: String, elementCount: Int, dtype: DType) throws -> TensorDecoder {
    let box = OwnedBytes(bytes)
    var decoder = try TensorDecoder(
      name: name, bytes: UnsafeRawBufferPointer(rebasing: box.buffer[0..<bytes.count]), elementCount: elementCount,
      encoding: .float(dtype),
      file: "(in memory)")
    decoder.owner = box
    return decoder
  }

  /// The values of `parts` one after another (tensors stacked along dimension 0), under `name`.
  /// `encoding` reports the first part's.
  public static func concatenating(_ parts: [TensorDecoder], name: String) -> TensorDecoder {
    if parts.count == 1, let only = parts.first { return only }
    return TensorDecoder(
      name: name, elementCount: parts.reduce(0) { $0 + $1.elementCount },
      encoding: parts.first?.encoding ?? .float(.f32),
      arrangement: .concatenation(parts))
  }

  /// The transpose of this tensor read as a `rows × columns` matrix, under `name`.
  public func transposed(rows: Int, columns: Int, name: String) -> TensorDecoder {
    precondition(rows * columns == elementCount, "transposed: \(rows)×\(columns) is not \(elementCount) values")
    return TensorDecoder(
      name: name, elementCount: elementCount, encoding: encoding,
      arrangement: .transpose(self, rows: rows, columns: columns))
  }

  /// Decodes values `range` (any sub-range of `0..<elementCount`) into `output` (`range.count` long).
  public func decode(_ range: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) {
    precondition(
      range.lowerBound >= 0 && range.upperBound <= elementCount && output.count == range.count, "decode: bad range")
    guard !range.isEmpty, let out = output.baseAddress else { return }
    switch arrangement {
    case .stored: break
    case .concatenation(let parts):
      var start = 0
      for part in parts {
        // A part wholly before or after the range has no overlap (and no valid Range to form).
        let lower = max(range.lowerBound, start), upper = min(range.upperBound, start + part.elementCount)
        if lower < upper {
          let overlap = lower..<upper
          part.decode(
            (overlap.lowerBound - start)..<(overlap.upperBound - start),
            into: UnsafeMutableBufferPointer(start: out + (overlap.lowerBound - range.lowerBound), count: overlap.count)
          )
        }
        start += part.elementCount
      }
      return
    case .transpose(let source, let rows, let columns):
      // Small matrices only (text_projection): decoded whole, then read across.
      let values = source.decodeAll()
      for index in range {
        let row = index / rows, column = index % rows  // output is columns × rows
        out[index - range.lowerBound] = values[column * columns + row]
      }
      return
    }
    switch encoding {
    case .float(let dtype):
      let width = dtype.bitWidth / 8
      FloatCodec.decode(
        UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * width)..<(range.upperBound * width)]), dtype: dtype,
        into: output)
    case .scaledFloat(let dtype, let scale):
      let width = dtype.bitWidth / 8
      FloatCodec.decode(
        UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * width)..<(range.upperBound * width)]), dtype: dtype,
        into: output)
      // ComfyUI: weight.to(dtype) * scale_weight — one float32 product per value.
      for i in 0..<range.count { out[i] *= scale }
    case .int8Rows(let scales, let columns):
      scales.withUnsafeBufferPointer { scale in
        var index = range.lowerBound
        while index < range.upperBound {
          let row = index / columns
          let rowEnd = min(range.upperBound, (row + 1) * columns)
          let s = scale[row]
          for i in index..<rowEnd { out[i - range.lowerBound] = Float(Int8(bitPattern: bytes[i])) * s }
          index = rowEnd
        }
      }
    case .ggml(let type):
      let size = type.blockSize, blockBytes = type.blockBytes
      var block = range.lowerBound / size
      let lastBlock = (range.upperBound - 1) / size
      withUnsafeTemporaryAllocation(of: Float.self, capacity: size) { scratch in
        while block <= lastBlock {
          let start = block * size
          let source = UnsafeRawBufferPointer(rebasing: bytes[(block * blockBytes)..<((block + 1) * blockBytes)])
          if start >= range.lowerBound && start + size <= range.upperBound {
            // Whole blocks straight into the output.
            let whole = min(lastBlock + 1, range.upperBound / size) - block
            let span = UnsafeRawBufferPointer(rebasing: bytes[(block * blockBytes)..<((block + whole) * blockBytes)])
            GGMLQuantizer.dequantize(
              span, type: type,
              into: UnsafeMutableBufferPointer(start: out + (start - range.lowerBound), count: whole * size))
            block += whole
          } else {
            // A block cut by the range: decode it aside and copy the part inside.
            GGMLQuantizer.dequantize(source, type: type, into: scratch)
            let from = max(start, range.lowerBound), to = min(start + size, range.upperBound)
            for i in from..<to { out[i - range.lowerBound] = scratch[i - start] }
            block += 1
          }
        }
      }
    }
  }

  /// Calls `body` with consecutive chunks of at most `chunkElements` values covering the tensor,
  /// reusing one buffer (memory: one chunk, whatever the tensor size).
  public func forEachChunk(
    chunkElements: Int = TensorDecoder.defaultChunk, _ body: (Range<Int>, UnsafeBufferPointer<Float>) throws -> Void
  ) rethrows {
    let chunk = max(1, min(chunkElements, elementCount))
    var buffer = [Float](repeating: 0, count: chunk)
    var offset = 0
    while offset < elementCount {
      let range = offset..<min(elementCount, offset + chunk)
      try buffer.withUnsafeMutableBufferPointer { values in
        let part = UnsafeMutableBufferPointer(rebasing: values[0..<range.count])
        decode(range, into: part)
        try body(range, UnsafeBufferPointer(part))
      }
      offset = range.upperBound
    }
  }

  /// The stored bytes of a tensor served as stored (not assembled from parts), else nil: an
  /// engine uses F32 tensors in place from the map.
  public var storedBytes: UnsafeRawBufferPointer? {
    if case .stored = arrangement { return bytes }
    return nil
  }

  /// Drops the tensor's mapped pages from this process's resident set (`madvise(DONTNEED)`): the
  /// engine calls it for weights it is done with (text encoders once prompts are encoded). The
  /// pages stay in the page cache; reading the tensor again maps them back.
  public func releasePages() {
    switch arrangement {
    case .stored:
      guard let base = bytes.baseAddress, bytes.count > 0 else { return }
      let page = Int(sysconf(Int32(_SC_PAGESIZE)))
      // Whole pages inside the tensor only: a neighbour sharing a page keeps it.
      let start = (Int(bitPattern: base) + page - 1) / page * page
      let end = (Int(bitPattern: base) + bytes.count) / page * page
      guard end > start, let address = UnsafeMutableRawPointer(bitPattern: start) else { return }
      _ = madvise(address, end - start, Int32(MADV_DONTNEED))
    case .concatenation(let parts): for part in parts { part.releasePages() }
    case .transpose(let source, _, _): source.releasePages()
    }
  }

  /// The whole tensor as Float32 (for small tensors: scales, norms, biases).
  public func decodeAll() -> [Float] {
    // Not zero-filled first: `decode` writes every value of its range.
    [Float](unsafeUninitializedCapacity: elementCount) { buffer, initialized in
      decode(0..<elementCount, into: buffer)
      initialized = elementCount
    }
  }

  // MARK: - Resolving what a stored tensor means

  /// The decoder for a tensor of a safetensors file, reading the quantization bookkeeping around it:
  ///  - I8 `<layer>.weight` with `<layer>.weight_scale` (`[out]`, `[out, 1]` or a scalar): int8 rows
  ///    (ComfyUI `int8_tensorwise`, sd.cpp); a `comfy_quant`/`_quantization_metadata` entry naming
  ///    another format, or ConvRot (rotated weights), is refused rather than decoded wrongly;
  ///  - F8 `<layer>.weight` with `<layer>.scale_weight` in a file with the `scaled_fp8` marker
  ///    (ComfyUI scaled fp8), or with a scalar `<layer>.weight_scale` (comfy_quant tensorwise fp8):
  ///    fp8 × scale (the rule is `QuantizedLayers.scale(of:in:)`);
  ///  - any other float tensor: as stored.
  public static func resolve(file: SafeTensorsFile, tensor: TensorInfo) throws -> TensorDecoder {
    let bytes = file.data(tensor)
    let layer = QuantizedLayers.layer(of: tensor.name)
    func scalars(_ name: String) throws -> [Float]? {
      guard let info = file.info(name) else { return nil }
      guard FloatCodec.supported.contains(info.dtype) else {
        throw CodecError.unsupported(
          file: file.path, tensor: tensor.name, reason: "its scale '\(name)' is \(info.dtype.rawValue)")
      }
      return try TensorDecoder(
        name: name, bytes: file.data(info), elementCount: info.elementCount, encoding: .float(info.dtype),
        file: file.path
      ).decodeAll()
    }
    if let layer, let format = try quantFormat(file: file, layer: layer) {
      let known = ["int8_tensorwise", "float8_e4m3fn", "float8_e5m2"]
      guard known.contains(format.name), !format.rotated else {
        let what =
          format.rotated ? "\(format.name) with ConvRot (rotated weights)" : "comfy_quant format '\(format.name)'"
        throw CodecError.unsupported(file: file.path, tensor: tensor.name, reason: "\(what) is not supported")
      }
    }
    // Which scale applies is decided once, by `QuantizedLayers` (the converter and merger use it too).
    let scaleInfo = QuantizedLayers.scale(of: tensor, in: file)
    let scale = try scaleInfo.map { try scalars($0.name) ?? [] }
    switch tensor.dtype {
    case .i8:
      guard tensor.shape.count == 2, let scales = scale else {
        throw CodecError.unsupported(
          file: file.path, tensor: tensor.name, reason: "I8 without a per-row weight_scale holds integers, not weights")
      }
      let rows = tensor.shape[0], columns = tensor.shape[1]
      let perRow: [Float]
      if scales.count == rows {
        perRow = scales
      } else if scales.count == 1 {
        perRow = [Float](repeating: scales[0], count: rows)
      } else {
        throw CodecError.unsupported(
          file: file.path, tensor: tensor.name, reason: "weight_scale has \(scales.count) values for \(rows) rows")
      }
      return try TensorDecoder(
        name: tensor.name, bytes: bytes, elementCount: tensor.elementCount,
        encoding: .int8Rows(scales: perRow, columns: columns), file: file.path)
    case .f8e4m3, .f8e5m2:
      if let found = scale {
        guard found.count == 1 else {
          throw CodecError.unsupported(
            file: file.path, tensor: tensor.name, reason: "fp8 scale has \(found.count) values (one expected)")
        }
        return try TensorDecoder(
          name: tensor.name, bytes: bytes, elementCount: tensor.elementCount,
          encoding: .scaledFloat(tensor.dtype, scale: found[0]), file: file.path)
      }
      return try TensorDecoder(
        name: tensor.name, bytes: bytes, elementCount: tensor.elementCount, encoding: .float(tensor.dtype),
        file: file.path)
    default:
      guard FloatCodec.supported.contains(tensor.dtype) else {
        throw CodecError.unsupported(
          file: file.path, tensor: tensor.name, reason: "\(tensor.dtype.rawValue) is not a float type")
      }
      return try TensorDecoder(
        name: tensor.name, bytes: bytes, elementCount: tensor.elementCount, encoding: .float(tensor.dtype),
        file: file.path)
    }
  }

  /// The decoder for a GGUF tensor (float types as stored, block types dequantized).
  public static func resolve(gguf: GGUFFile, tensor: GGUFFile.Tensor) throws -> TensorDecoder {
    guard tensor.type.floatDType != nil || tensor.type.isDequantizable else {
      throw GGUFError.unsupportedType(file: gguf.path, tensor: tensor.name, type: tensor.type.name)
    }
    return try TensorDecoder(
      name: tensor.name, bytes: gguf.data(tensor), elementCount: tensor.elementCount, encoding: .ggml(tensor.type),
      file: gguf.path)
  }

  /// A layer's declared quantization format: its `<layer>.comfy_quant` U8 JSON tensor, else its
  /// entry in the `_quantization_metadata` header (`{"format_version":"1.0","layers":{…}}`).
  static func quantFormat(file: SafeTensorsFile, layer: String) throws -> (name: String, rotated: Bool)? {
    var object: [String: Any]?
    if let info = file.info(layer + ".comfy_quant"), info.dtype == .u8 || info.dtype == .i8 {
      object = try? JSONSerialization.jsonObject(with: Data(file.data(info))) as? [String: Any]
      guard object != nil else {
        throw CodecError.unsupported(
          file: file.path, tensor: layer + ".weight", reason: "its comfy_quant tensor is not a JSON object")
      }
    } else if let header = file.metadata["_quantization_metadata"],
      let parsed = try? JSONSerialization.jsonObject(with: Data(header.utf8)) as? [String: Any],
      let layers = parsed["layers"] as? [String: Any], let entry = layers[layer] as? [String: Any]
    {
      object = entry
    }
    guard let object else { return nil }
    let name = object["format"] as? String ?? "(no format)"
    return (name, (object["convrot"] as? Bool) == true)
  }
}

/// Bytes a decoder owns: copied once, freed with the last decoder that holds them.
final class OwnedBytes: @unchecked Sendable {
  let buffer: UnsafeMutableRawBufferPointer
  init(_ bytes: [UInt8]) {
    buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
    bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
  }
  deinit { buffer.deallocate() }
}
