import SafeTensors

/// Counts NaN and infinite values in a tensor's raw bytes by bit pattern (no conversion needed).
public enum NonFiniteScan {
  /// NaN and ±Inf counts, or nil for dtypes that cannot hold them.
  public static func count(_ bytes: UnsafeRawBufferPointer, dtype: DType) -> (nan: Int, infinite: Int)? {
    switch dtype {
    case .f32:
      return scan(bytes, as: UInt32.self, exponent: 0x7F80_0000, mantissa: 0x007F_FFFF)
    case .f16:
      return scan(bytes, as: UInt16.self, exponent: 0x7C00, mantissa: 0x03FF)
    case .bf16:
      return scan(bytes, as: UInt16.self, exponent: 0x7F80, mantissa: 0x007F)
    case .f64:
      return scan(bytes, as: UInt64.self, exponent: 0x7FF0_0000_0000_0000, mantissa: 0x000F_FFFF_FFFF_FFFF)
    case .f8e5m2:
      return scan(bytes, as: UInt8.self, exponent: 0x7C, mantissa: 0x03)
    case .f8e4m3:
      // e4m3fn has no infinities; S.1111.111 is NaN.
      var nan = 0
      for byte in bytes where byte & 0x7F == 0x7F { nan += 1 }
      return (nan, 0)
    case .f8e4m3fnuz, .f8e5m2fnuz:
      // The "fnuz" formats have no infinities and no negative zero: 0x80 is their only NaN.
      var nan = 0
      for byte in bytes where byte == 0x80 { nan += 1 }
      return (nan, 0)
    default:
      return nil
    }
  }

  private static func scan<T: FixedWidthInteger & UnsignedInteger>(
    _ bytes: UnsafeRawBufferPointer, as: T.Type, exponent: T, mantissa: T
  ) -> (nan: Int, infinite: Int) {
    var nan = 0
    var infinite = 0
    let count = bytes.count / MemoryLayout<T>.size
    guard let base = bytes.baseAddress else { return (0, 0) }
    for index in 0..<count {
      let bits = T(littleEndian: base.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self))
      if bits & exponent == exponent {
        if bits & mantissa == 0 { infinite += 1 } else { nan += 1 }
      }
    }
    return (nan, infinite)
  }
}
