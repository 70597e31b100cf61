/// The value types of GGUF metadata (ggml `docs/gguf.md`, `enum gguf_type`).
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
  case uint8 = 0
  case int8 = 1
  case uint16 = 2
  case int16 = 3
  case uint32 = 4
  case int32 = 5
  case float32 = 6
  case bool = 7
  case string = 8
  case array = 9
  case uint64 = 10
  case int64 = 11
  case float64 = 12

  /// Bytes of one value of a fixed-size type; nil for strings and arrays.
  public var fixedSize: Int? {
    switch self {
    case .uint8, .int8, .bool: return 1
    case .uint16, .int16: return 2
    case .uint32, .int32, .float32: return 4
    case .uint64, .int64, .float64: return 8
    case .string, .array: return nil
    }
  }
}

/// One GGUF metadata value.
public indirect enum GGUFValue: Sendable, Equatable {
  case uint8(UInt8)
  case int8(Int8)
  case uint16(UInt16)
  case int16(Int16)
  case uint32(UInt32)
  case int32(Int32)
  case float32(Float)
  case bool(Bool)
  case string(String)
  case uint64(UInt64)
  case int64(Int64)
  case float64(Double)
  /// An array whose elements all have `elementType` (arrays may nest).
  case array(elementType: GGUFValueType, [GGUFValue])
  /// An array the reader did not materialise (over its element budget): type and length only.
  case unreadArray(elementType: GGUFValueType, count: UInt64)

  /// An array of INT32, the type ComfyUI-GGUF insists on for `comfy.gguf.orig_shape.*`.
  public static func int32Array(_ values: [Int32]) -> GGUFValue {
    .array(elementType: .int32, values.map { .int32($0) })
  }

  /// The value's type code.
  public var type: GGUFValueType {
    switch self {
    case .uint8: return .uint8
    case .int8: return .int8
    case .uint16: return .uint16
    case .int16: return .int16
    case .uint32: return .uint32
    case .int32: return .int32
    case .float32: return .float32
    case .bool: return .bool
    case .string: return .string
    case .uint64: return .uint64
    case .int64: return .int64
    case .float64: return .float64
    case .array, .unreadArray: return .array
    }
  }

  /// The string, if this is a string.
  public var stringValue: String? {
    if case .string(let text) = self { return text }
    return nil
  }

  /// Any integer value that fits an `Int` (unsigned, signed and bool alike), else nil.
  public var intValue: Int? {
    switch self {
    case .uint8(let v): return Int(v)
    case .int8(let v): return Int(v)
    case .uint16(let v): return Int(v)
    case .int16(let v): return Int(v)
    case .uint32(let v): return Int(v)
    case .int32(let v): return Int(v)
    case .uint64(let v): return Int(exactly: v)
    case .int64(let v): return Int(exactly: v)
    case .bool(let v): return v ? 1 : 0
    default: return nil
    }
  }

  /// The elements of an INT32 array, else nil (the exact form `comfy.gguf.orig_shape.*` takes).
  public var int32Elements: [Int32]? {
    guard case .array(.int32, let items) = self else { return nil }
    return items.compactMap { if case .int32(let v) = $0 { return v } else { return nil } }
  }
}
