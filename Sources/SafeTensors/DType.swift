/// The element types of the safetensors format, in the order safetensors-rs declares them.
///
/// The declaration order matters: the reference writer sorts tensors by dtype *descending* in this
/// order (widest types first), and `SafeTensorsWriter` reproduces that layout byte for byte.
public enum DType: String, CaseIterable, Sendable, Comparable, Codable {
  case bool = "BOOL"
  case f4 = "F4"
  case f6e2m3 = "F6_E2M3"
  case f6e3m2 = "F6_E3M2"
  case u8 = "U8"
  case i8 = "I8"
  case f8e5m2 = "F8_E5M2"
  case f8e4m3 = "F8_E4M3"
  case f8e8m0 = "F8_E8M0"
  case f8e4m3fnuz = "F8_E4M3FNUZ"
  case f8e5m2fnuz = "F8_E5M2FNUZ"
  case i16 = "I16"
  case u16 = "U16"
  case f16 = "F16"
  case bf16 = "BF16"
  case i32 = "I32"
  case u32 = "U32"
  case f32 = "F32"
  case c64 = "C64"
  case f64 = "F64"
  case i64 = "I64"
  case u64 = "U64"

  /// Bits per element (sub-byte types pack several elements in a byte).
  public var bitWidth: Int {
    switch self {
    case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
    case .f4: return 4
    case .f6e2m3, .f6e3m2: return 6
    case .i16, .u16, .f16, .bf16: return 16
    case .i32, .u32, .f32: return 32
    case .c64, .f64, .i64, .u64: return 64
    }
  }

  /// Whether the type holds floating-point values (what merges and casts operate on).
  public var isFloatingPoint: Bool {
    switch self {
    case .f4, .f6e2m3, .f6e3m2, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .f16, .bf16,
      .f32, .f64:
      return true
    case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .c64, .i64, .u64:
      return false
    }
  }

  /// Whether the type holds integers (or booleans): never blended, never cast to floats by default.
  public var isInteger: Bool {
    switch self {
    case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64: return true
    default: return false
    }
  }

  private var order: Int { DType.allCases.firstIndex(of: self) ?? 0 }

  public static func < (lhs: DType, rhs: DType) -> Bool { lhs.order < rhs.order }
}
