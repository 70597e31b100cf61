import Checkpoint
import Foundation
import SafeTensors

/// What can be wrong with a GGUF file, or with a tensor asked of one.
public enum GGUFError: Error, CustomStringConvertible, Sendable {
  /// The file breaks the format (or one of ggml's rules for it).
  case invalid(file: String, reason: String)
  /// A tensor whose ggml type this tool cannot turn into floats.
  case unsupportedType(file: String, tensor: String, type: String)
  /// A tensor the writer was given that GGUF cannot hold as described.
  case invalidEntry(file: String, tensor: String, reason: String)

  public var description: String {
    switch self {
    case .invalid(let file, let reason): return "\(file): not a readable GGUF file: \(reason)"
    case .unsupportedType(let file, let tensor, let type):
      return
        "\(file): tensor '\(SafeTensorsError.printable(tensor))' is stored as ggml type \(type), which cannot be dequantized here"
    case .invalidEntry(let file, let tensor, let reason):
      return "\(file): cannot write tensor '\(SafeTensorsError.printable(tensor))': \(reason)"
    }
  }
}

/// A GGUF v2/v3 file opened for reading over a memory map (ggml `docs/gguf.md`, `src/gguf.cpp`).
///
/// Hostile-input safe: every count, length, dimension and offset is checked against the file with
/// overflow-checked arithmetic before use, metadata arrays are materialised only up to a budget,
/// and the rules ggml's own reader enforces (version, duplicate keys and names, at most 4
/// dimensions, whole blocks along `ne[0]`, power-of-two alignment, tensors packed in order at
/// aligned offsets) are enforced here too. A bad file gives a `GGUFError`, never a trap.
public final class GGUFFile: @unchecked Sendable {
  /// One tensor: name, torch-order shape (ggml's `ne` reversed), ggml type, absolute byte range.
  public struct Tensor: Sendable {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { shape.reduce(1, *) }
  }

  /// Longest tensor name or key accepted (ggml's default GGML_MAX_NAME is 64, sd.cpp builds 160).
  public static let maximumNameBytes = 65535
  /// Metadata array elements materialised per file; longer arrays are kept as `.unreadArray`.
  public static let arrayElementBudget = 1 << 20

  public let path: String
  public let mapping: MappedFile
  /// Format version (2 or 3).
  public let version: UInt32
  /// `general.alignment` (32 unless the file says otherwise).
  public let alignment: Int
  /// Absolute offset of the data section.
  public let dataOffset: Int
  public private(set) var tensors: [Tensor] = []
  /// Every metadata value by key.
  public private(set) var values: [String: GGUFValue] = [:]
  /// Metadata keys in file order.
  public private(set) var keys: [String] = []
  /// String-valued metadata (other value types are in `values`).
  public private(set) var metadata: [String: String] = [:]
  private var indexByName: [String: Int] = [:]

  /// `general.architecture`, when the file names one (ComfyUI-GGUF writes `sdxl`; sd.cpp writes none).
  public var architecture: String? { values["general.architecture"]?.stringValue }

  /// Opens and validates `path`.
  public init(path: String) throws {
    self.path = path
    mapping = try MappedFile(path: path)
    var cursor = Cursor(bytes: mapping.bytes(offset: 0, count: mapping.size), file: path)
    guard try cursor.bytes(4) == Array("GGUF".utf8) else { throw cursor.error("bad magic (not GGUF)") }
    version = try cursor.u32()
    guard version == 2 || version == 3 else { throw cursor.error("version \(version) (2 and 3 are supported)") }
    let tensorCount = try cursor.u64(), kvCount = try cursor.u64()
    // A key/value takes at least 13 bytes and a tensor info 24, so larger counts are lies.
    guard tensorCount <= UInt64(mapping.size / 24), kvCount <= UInt64(mapping.size / 13) else {
      throw cursor.error("declares \(tensorCount) tensors and \(kvCount) keys in a \(mapping.size)-byte file")
    }
    var budget = GGUFFile.arrayElementBudget
    for _ in 0..<kvCount {
      let key = try cursor.string(limit: GGUFFile.maximumNameBytes)
      guard values[key] == nil else { throw cursor.error("duplicate key '\(SafeTensorsError.printable(key))'") }
      let code = try cursor.u32()
      guard let type = GGUFValueType(rawValue: code) else {
        throw cursor.error("key '\(SafeTensorsError.printable(key))' has unknown value type \(code)")
      }
      let value = try cursor.value(type: type, depth: 0, budget: &budget)
      values[key] = value
      keys.append(key)
      if let text = value.stringValue { metadata[key] = text }
    }
    var alignment = 32
    if let declared = values["general.alignment"] {
      // ggml reads it with gguf_get_val_u32 and requires a power of two.
      guard case .uint32(let value) = declared, value > 0, value & (value - 1) == 0, value <= 1 << 24 else {
        throw cursor.error("general.alignment must be a power-of-two UINT32, got \(declared)")
      }
      alignment = Int(value)
    }
    self.alignment = alignment
    var infos: [(name: String, shape: [Int], type: GGMLType, offset: UInt64)] = []
    var names = Set<String>()
    for _ in 0..<tensorCount {
      let name = try cursor.string(limit: GGUFFile.maximumNameBytes)
      let shown = SafeTensorsError.printable(name)
      guard names.insert(name).inserted else { throw cursor.error("duplicate tensor '\(shown)'") }
      let dims = try cursor.u32()
      guard dims <= 4 else { throw cursor.error("tensor '\(shown)' has \(dims) dimensions (at most 4)") }
      var ne: [Int] = []
      for _ in 0..<dims {
        let dim = try cursor.u64()
        guard let value = Int(exactly: dim) else { throw cursor.error("tensor '\(shown)' dimension \(dim)") }
        ne.append(value)
      }
      let code = try cursor.u32()
      guard let type = GGMLType(rawValue: code) else {
        throw cursor.error("tensor '\(shown)' has unknown ggml type \(code)")
      }
      infos.append((name, ne.reversed(), type, try cursor.u64()))
    }
    let (paddedStart, startOverflow) = cursor.position.addingReportingOverflow(alignment - 1)
    guard !startOverflow else { throw cursor.error("header too long") }
    dataOffset = paddedStart / alignment * alignment
    guard dataOffset <= mapping.size else { throw cursor.error("the data section starts past the end of the file") }
    var expected = 0
    for info in infos {
      let shown = SafeTensorsError.printable(info.name)
      var elements = 1
      for dim in info.shape {
        let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
        guard !overflow else { throw cursor.error("tensor '\(shown)' shape \(info.shape) overflows") }
        elements = product
      }
      // ggml: ne[0] (the innermost, last torch dimension) must hold whole blocks.
      guard (info.shape.last ?? 1) % info.type.blockSize == 0 else {
        throw cursor.error(
          "tensor '\(shown)' row of \(info.shape.last ?? 1) does not fill whole \(info.type.name) blocks")
      }
      guard let bytes = info.type.checkedByteCount(elements: elements) else {
        throw cursor.error("tensor '\(shown)' byte size overflows")
      }
      // ggml: each tensor starts where the previous one ended, padded to the alignment.
      guard info.offset == UInt64(expected) else {
        throw cursor.error("tensor '\(shown)' has data offset \(info.offset), expected \(expected)")
      }
      let (end, endOverflow) = dataOffset.addingReportingOverflow(expected)
      let (last, lastOverflow) = end.addingReportingOverflow(bytes)
      guard !endOverflow, !lastOverflow, last <= mapping.size else {
        throw cursor.error("tensor '\(shown)' data (\(bytes) bytes at \(expected)) lies outside the file")
      }
      tensors.append(Tensor(name: info.name, shape: info.shape, type: info.type, offset: end, byteCount: bytes))
      indexByName[info.name] = tensors.count - 1
      expected = (bytes % alignment == 0) ? expected + bytes : expected + bytes + alignment - bytes % alignment
    }
  }

  /// The tensor named `name`, or nil.
  public func tensor(named name: String) -> Tensor? { indexByName[name].map { tensors[$0] } }

  /// The tensor's raw bytes (a view into the map).
  public func data(_ tensor: Tensor) -> UnsafeRawBufferPointer {
    mapping.bytes(offset: tensor.offset, count: tensor.byteCount)
  }

  /// The torch shape ComfyUI-GGUF recorded for a tensor it stored reshaped
  /// (`comfy.gguf.orig_shape.<name>`, an ARRAY of INT32), when present and consistent.
  /// Throws when the key exists in another form or does not match the stored element count,
  /// as ComfyUI-GGUF's loader refuses such files.
  public func originalShape(of tensor: Tensor) throws -> [Int]? {
    guard let value = values["comfy.gguf.orig_shape." + tensor.name] else { return nil }
    guard let dims = value.int32Elements, dims.allSatisfy({ $0 >= 0 }) else {
      throw GGUFError.invalid(
        file: path,
        reason: "comfy.gguf.orig_shape.\(SafeTensorsError.printable(tensor.name)) is not an ARRAY of non-negative INT32"
      )
    }
    var elements = 1
    for dim in dims {
      let (product, overflow) = elements.multipliedReportingOverflow(by: Int(dim))
      guard !overflow else { elements = -1; break }
      elements = product
    }
    guard elements == tensor.elementCount else {
      throw GGUFError.invalid(
        file: path,
        reason:
          "comfy.gguf.orig_shape.\(SafeTensorsError.printable(tensor.name)) \(dims) does not match the stored shape \(tensor.shape)"
      )
    }
    return dims.map { Int($0) }
  }

  struct Cursor {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var position = 0

    var remaining: Int { bytes.count - position }

    func error(_ reason: String) -> GGUFError { .invalid(file: file, reason: reason + " (at byte \(position))") }

    mutating func bytes(_ count: Int) throws -> [UInt8] {
      guard count >= 0, count <= remaining else { throw error("truncated") }
      defer { position += count }
      return Array(bytes[position..<(position + count)])
    }
    mutating func skip(_ count: Int) throws {
      guard count >= 0, count <= remaining else { throw error("truncated") }
      position += count
    }
    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
      let size = MemoryLayout<T>.size
      guard size <= remaining else { throw error("truncated") }
      defer { position += size }
      return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }
    mutating func u32() throws -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws -> UInt64 { try integer(UInt64.self) }
    mutating func string(limit: Int = Int.max) throws -> String {
      let length = try u64()
      guard length <= UInt64(remaining) else { throw error("string of \(length) bytes runs past the end") }
      guard length <= UInt64(limit) else { throw error("name of \(length) bytes (at most \(limit))") }
      let raw = try self.bytes(Int(length))
      guard let text = String(validating: raw, as: UTF8.self) else { throw error("string is not UTF-8") }
      return text
    }

    /// Reads one value of `type`. Arrays consume the element budget; past it they are skipped
    /// (bounds still checked) and returned as `.unreadArray`.
    mutating func value(type: GGUFValueType, depth: Int, budget: inout Int) throws -> GGUFValue {
      switch type {
      case .uint8: return .uint8(try integer(UInt8.self))
      case .int8: return .int8(try integer(Int8.self))
      case .uint16: return .uint16(try integer(UInt16.self))
      case .int16: return .int16(try integer(Int16.self))
      case .uint32: return .uint32(try u32())
      case .int32: return .int32(try integer(Int32.self))
      case .float32: return .float32(Float(bitPattern: try u32()))
      case .bool:
        let byte = try integer(UInt8.self)
        guard byte <= 1 else { throw error("bool value \(byte)") }
        return .bool(byte == 1)
      case .string: return .string(try string())
      case .uint64: return .uint64(try u64())
      case .int64: return .int64(try integer(Int64.self))
      case .float64: return .float64(Double(bitPattern: try u64()))
      case .array:
        guard depth < 4 else { throw error("arrays nested deeper than 4") }
        let code = try u32()
        guard let elementType = GGUFValueType(rawValue: code) else { throw error("array of unknown type \(code)") }
        let count = try u64()
        // The smallest encoding of one element bounds the count before any loop runs.
        let smallest = elementType.fixedSize ?? (elementType == .string ? 8 : 12)
        guard count <= UInt64(remaining / smallest) else { throw error("array of \(count) elements runs past the end") }
        let n = Int(count)
        if n > budget {
          if let size = elementType.fixedSize {
            try skip(n * size)
          } else {
            var ignored = 0
            for _ in 0..<n { _ = try value(type: elementType, depth: depth + 1, budget: &ignored) }
          }
          return .unreadArray(elementType: elementType, count: count)
        }
        budget -= n
        var items: [GGUFValue] = []
        items.reserveCapacity(n)
        for _ in 0..<n { items.append(try value(type: elementType, depth: depth + 1, budget: &budget)) }
        return .array(elementType: elementType, items)
      }
    }
  }
}
