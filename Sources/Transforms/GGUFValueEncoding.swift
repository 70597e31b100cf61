import Weights

extension GGUFValue {
  /// Appends the value's payload (not its type code) in GGUF encoding.
  func serialize(into out: inout ByteWriter) {
    switch self {
    case .uint8(let v): out.append(v)
    case .int8(let v): out.append(v)
    case .uint16(let v): out.append(v)
    case .int16(let v): out.append(v)
    case .uint32(let v): out.append(v)
    case .int32(let v): out.append(v)
    case .float32(let v): out.append(v.bitPattern)
    case .bool(let v): out.append(UInt8(v ? 1 : 0))
    case .string(let v): out.append(string: v)
    case .uint64(let v): out.append(v)
    case .int64(let v): out.append(v)
    case .float64(let v): out.append(v.bitPattern)
    case .array(let elementType, let items):
      out.append(elementType.rawValue)
      out.append(UInt64(items.count))
      for item in items {
        // Nested arrays carry their own element type and count.
        item.serialize(into: &out)
      }
    case .unreadArray(let elementType, _):
      // Never produced by a writer caller; written as an empty array so output stays well-formed.
      out.append(elementType.rawValue)
      out.append(UInt64(0))
    }
  }
}
