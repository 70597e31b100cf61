import SafeTensors

/// The element types a torch storage can hold, as they are named in a checkpoint's pickle.
public enum TorchDType: String, CaseIterable, Sendable {
  case float32, float64, float16, bfloat16
  case int64, int32, int16, int8, uint8, uint16, uint32, uint64, bool
  case complex64, complex128, complex32
  case float8_e4m3fn, float8_e5m2, float8_e4m3fnuz, float8_e5m2fnuz, float8_e8m0fnu

  /// Bytes per element.
  public var size: Int {
    switch self {
    case .float64, .int64, .uint64, .complex64: return 8
    case .complex128: return 16
    case .float32, .int32, .uint32, .complex32: return 4
    case .float16, .bfloat16, .int16, .uint16: return 2
    case .int8, .uint8, .bool, .float8_e4m3fn, .float8_e5m2, .float8_e4m3fnuz, .float8_e5m2fnuz, .float8_e8m0fnu:
      return 1
    }
  }

  /// The safetensors dtype with the same bytes, or nil (complex128 and complex32 have none).
  public var safeTensors: DType? {
    switch self {
    case .float32: return .f32
    case .float64: return .f64
    case .float16: return .f16
    case .bfloat16: return .bf16
    case .int64: return .i64
    case .int32: return .i32
    case .int16: return .i16
    case .int8: return .i8
    case .uint8: return .u8
    case .uint16: return .u16
    case .uint32: return .u32
    case .uint64: return .u64
    case .bool: return .bool
    case .complex64: return .c64
    case .float8_e4m3fn: return .f8e4m3
    case .float8_e5m2: return .f8e5m2
    case .float8_e4m3fnuz: return .f8e4m3fnuz
    case .float8_e5m2fnuz: return .f8e5m2fnuz
    case .float8_e8m0fnu: return .f8e8m0
    case .complex128, .complex32: return nil
    }
  }

  /// `torch.<name>` dtype objects, aliases included.
  static func dtype(named name: String) -> TorchDType? {
    if let exact = TorchDType(rawValue: name) { return exact }
    switch name {
    case "float": return .float32
    case "double": return .float64
    case "half": return .float16
    case "long": return .int64
    case "int": return .int32
    case "short": return .int16
    case "cfloat": return .complex64
    case "cdouble": return .complex128
    case "chalf": return .complex32
    default: return nil
    }
  }

  /// `torch.<Name>Storage` legacy typed-storage classes.
  static func storage(named name: String) -> TorchDType? {
    switch name {
    case "FloatStorage": return .float32
    case "DoubleStorage": return .float64
    case "HalfStorage": return .float16
    case "BFloat16Storage": return .bfloat16
    case "LongStorage": return .int64
    case "IntStorage": return .int32
    case "ShortStorage": return .int16
    case "CharStorage": return .int8
    case "ByteStorage": return .uint8
    case "BoolStorage": return .bool
    case "ComplexFloatStorage": return .complex64
    case "ComplexDoubleStorage": return .complex128
    default: return nil
    }
  }
}
