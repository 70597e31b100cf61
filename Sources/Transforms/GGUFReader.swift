import Foundation
import SafeTensors

/// What can be wrong with a GGUF file.
public enum GGUFError: Error, CustomStringConvertible, Sendable {
  case invalid(file: String, reason: String)

  public var description: String {
    switch self {
    case .invalid(let file, let reason): return "\(file): not a readable GGUF file: \(reason)"
    }
  }
}

/// A GGUF v2/v3 file opened for reading over a memory map. Every count, length and offset is
/// checked against the file before use, so a hostile header gives a `GGUFError`, never a trap.
public final class GGUFFile {
  /// One tensor: name, torch-order shape, ggml type and its absolute byte range.
  public struct Tensor: Sendable {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { shape.reduce(1, *) }
  }

  public let path: String
  public let mapping: MappedFile
  public private(set) var tensors: [Tensor] = []
  /// String-valued metadata (other value types are skipped).
  public private(set) var metadata: [String: String] = [:]

  public init(path: String) throws {
    self.path = path
    mapping = try MappedFile(path: path)
    var cursor = Cursor(bytes: mapping.bytes(offset: 0, count: mapping.size), file: path)
    guard try cursor.bytes(4) == Array("GGUF".utf8) else { throw cursor.error("bad magic (not GGUF)") }
    let version = try cursor.u32()
    guard version == 2 || version == 3 else { throw cursor.error("version \(version) (2 and 3 are supported)") }
    let tensorCount = try cursor.u64(), kvCount = try cursor.u64()
    // Each entry takes at least 8 bytes, so counts beyond the file size are lies.
    guard tensorCount <= UInt64(mapping.size / 8), kvCount <= UInt64(mapping.size / 8) else {
      throw cursor.error("declares \(tensorCount) tensors and \(kvCount) keys in a \(mapping.size)-byte file")
    }
    var alignment = 32
    var keys = Set<String>()
    for _ in 0..<kvCount {
      let key = try cursor.string()
      guard keys.insert(key).inserted else { throw cursor.error("duplicate key '\(key)'") }
      let type = try cursor.u32()
      if type == 8 {
        metadata[key] = try cursor.string()
      } else if key == "general.alignment", type == 4 {
        alignment = Int(try cursor.u32())
        guard alignment > 0, alignment % 8 == 0, alignment <= 1 << 20 else { throw cursor.error("alignment \(alignment)") }
      } else {
        try cursor.skipValue(type: type, depth: 0)
      }
    }
    var infos: [(String, [Int], GGMLType, UInt64)] = []
    var names = Set<String>()
    for _ in 0..<tensorCount {
      let name = try cursor.string()
      guard names.insert(name).inserted else { throw cursor.error("duplicate tensor '\(name)'") }
      let dims = try cursor.u32()
      guard dims <= 4 else { throw cursor.error("tensor '\(name)' has \(dims) dimensions (at most 4)") }
      var shape: [Int] = []
      for _ in 0..<dims {
        let dim = try cursor.u64()
        guard dim <= UInt64(Int32.max) else { throw cursor.error("tensor '\(name)' dimension \(dim)") }
        shape.append(Int(dim))
      }
      let code = try cursor.u32()
      guard let type = GGMLType(rawValue: code) else { throw cursor.error("tensor '\(name)' has unsupported ggml type \(code)") }
      infos.append((name, shape.reversed(), type, try cursor.u64()))
    }
    let dataStart = (cursor.position + alignment - 1) / alignment * alignment
    for (name, shape, type, relative) in infos {
      var elements = 1
      for dim in shape {
        let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
        guard !overflow else { throw cursor.error("tensor '\(name)' shape \(shape) overflows") }
        elements = product
      }
      guard elements % type.blockSize == 0 else { throw cursor.error("tensor '\(name)' does not fill whole \(type.name) blocks") }
      let bytes = type.byteCount(elements: elements)
      guard relative <= UInt64(mapping.size), Int(relative) % alignment == 0,
        dataStart + Int(relative) + bytes <= mapping.size
      else { throw cursor.error("tensor '\(name)' data lies outside the file") }
      tensors.append(Tensor(name: name, shape: shape.isEmpty ? [] : shape, type: type, offset: dataStart + Int(relative), byteCount: bytes))
    }
  }

  /// The tensor's raw bytes.
  public func data(_ tensor: Tensor) -> UnsafeRawBufferPointer { mapping.bytes(offset: tensor.offset, count: tensor.byteCount) }

  struct Cursor {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var position = 0

    func error(_ reason: String) -> GGUFError { .invalid(file: file, reason: reason + " (at byte \(position))") }

    mutating func bytes(_ count: Int) throws -> [UInt8] {
      guard count >= 0, count <= bytes.count - position else { throw error("truncated") }
      defer { position += count }
      return Array(bytes[position..<(position + count)])
    }
    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
      let size = MemoryLayout<T>.size
      guard size <= bytes.count - position else { throw error("truncated") }
      defer { position += size }
      return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }
    mutating func u32() throws -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws -> UInt64 { try integer(UInt64.self) }
    mutating func string() throws -> String {
      let length = try u64()
      guard length <= UInt64(bytes.count - position) else { throw error("string of \(length) bytes runs past the end") }
      let raw = try self.bytes(Int(length))
      guard let text = String(validating: raw, as: UTF8.self) else { throw error("string is not UTF-8") }
      return text
    }
    mutating func skipValue(type: UInt32, depth: Int) throws {
      let sizes: [UInt32: Int] = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8]
      if let size = sizes[type] {
        _ = try bytes(size)
      } else if type == 8 {
        _ = try string()
      } else if type == 9 {
        guard depth < 4 else { throw error("arrays nested deeper than 4") }
        let elementType = try u32()
        let count = try u64()
        guard count <= UInt64(bytes.count - position) else { throw error("array of \(count) elements runs past the end") }
        if let size = sizes[elementType] {
          _ = try bytes(Int(count) * size)
        } else {
          for _ in 0..<count { try skipValue(type: elementType, depth: depth + 1) }
        }
      } else {
        throw error("unknown value type \(type)")
      }
    }
  }
}

/// GGUF → safetensors: dequantizes every block type to `dtype` (default F16; F32/I64 tensors keep
/// their type), restoring torch-order shapes and names.
public enum GGUFImport {
  /// Metadata key listing (newline-separated) the tensors that were rank 0 before export.
  public static let scalarsKey = "rouwei.scalar_tensors"

  public static func convert(input: String, output: String, dtype: DType?) throws -> ConversionReport {
    let start = Date()
    let source = try GGUFFile(path: input)
    let target = dtype ?? .f16
    guard FloatCodec.supported.contains(target) else {
      throw ConversionError.invalidRequest("GGUF can be converted to float dtypes only")
    }
    var entries: [TensorEntry] = []
    let scalars = Set((source.metadata[scalarsKey] ?? "").split(separator: "\n").map(String.init))
    for stored in source.tensors {
      let bytes = source.data(stored)
      let tensor = scalars.contains(stored.name) && stored.elementCount == 1
        ? GGUFFile.Tensor(name: stored.name, shape: [], type: stored.type, offset: stored.offset, byteCount: stored.byteCount)
        : stored
      switch tensor.type {
      case .i8, .i16, .i32, .i64:
        let dtype: DType = [.i8: .i8, .i16: .i16, .i32: .i32, .i64: .i64][tensor.type] ?? .i64
        entries.append(TensorEntry(spec: TensorSpec(name: tensor.name, dtype: dtype, shape: tensor.shape), bytes: bytes))
      case .f32, .f16, .bf16, .f64:
        let stored: DType = [.f32: .f32, .f16: .f16, .bf16: .bf16, .f64: .f64][tensor.type] ?? .f32
        let out = dtype == nil && stored == .f32 ? .f32 : target
        entries.append(TensorEntry(spec: TensorSpec(name: tensor.name, dtype: out, shape: tensor.shape)) { sink in
          try emit(count: tensor.elementCount, to: out, sink: sink) { range, values in
            let width = FloatCodec.width(stored)
            FloatCodec.decode(UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * width)..<(range.upperBound * width)]), dtype: stored, into: values)
          }
        })
      default:
        entries.append(TensorEntry(spec: TensorSpec(name: tensor.name, dtype: target, shape: tensor.shape)) { sink in
          try emit(count: tensor.elementCount, to: target, sink: sink) { range, values in
            let blockBytes = tensor.type.blockBytes, blocks = range.lowerBound / 32
            let slice = UnsafeRawBufferPointer(rebasing: bytes[(blocks * blockBytes)..<((blocks + range.count / 32) * blockBytes)])
            GGMLQuantizer.dequantize(slice, type: tensor.type, into: values)
          }
        })
      }
    }
    var metadata = source.metadata
    metadata.removeValue(forKey: scalarsKey)
    metadata["rouwei.tool"] = "rouwei-ckpt"
    metadata["rouwei.version"] = ToolInfo.version
    metadata["rouwei.convert"] = #"{"from":"gguf","dtype":"\#(target.rawValue)"}"#
    try SafeTensorsWriter.write(to: output, entries: entries, metadata: metadata, inputs: [input])
    let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    return ConversionReport(
      input: input, output: output, tensorsWritten: entries.count, tensorsConverted: entries.count, tensorsKeptWide: 0,
      tensorsDropped: 0, bytesIn: source.mapping.size, bytesOut: outSize ?? 0, clamped: [:], nanTensors: [:], warnings: [],
      seconds: Date().timeIntervalSince(start))
  }

  /// Streams `count` values through `fill` in chunks of whole 32-value blocks, encoding to `dtype`.
  static func emit(
    count: Int, to dtype: DType, sink: TensorSink, fill: (Range<Int>, UnsafeMutableBufferPointer<Float>) -> Void
  ) throws {
    let chunk = 1 << 16
    var values = [Float](repeating: 0, count: chunk)
    var out = [UInt8](repeating: 0, count: chunk * FloatCodec.width(dtype))
    var offset = 0
    while offset < count {
      let n = min(chunk, count - offset)
      values.withUnsafeMutableBufferPointer { fill(offset..<(offset + n), UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }
      values.withUnsafeBufferPointer { input in
        out.withUnsafeMutableBytes { _ = FloatCodec.encode(UnsafeBufferPointer(rebasing: input[0..<n]), to: dtype, into: $0, policy: .clamp) }
      }
      try out.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * FloatCodec.width(dtype))])) }
      offset += n
    }
  }
}
