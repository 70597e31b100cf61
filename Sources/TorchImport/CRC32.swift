/// CRC-32 (ISO-HDLC, the zip checksum), slicing by 8: torch.save records one per entry, so a
/// download corrupted in place (same length, other bytes) is caught before its tensors are used.
enum CRC32 {
  private static let tables: [[UInt32]] = {
    var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
    for index in 0..<256 {
      var value = UInt32(index)
      for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
      tables[0][index] = value
    }
    for index in 0..<256 {
      for slice in 1..<8 {
        let previous = tables[slice - 1][index]
        tables[slice][index] = (previous >> 8) ^ tables[0][Int(previous & 0xFF)]
      }
    }
    return tables
  }()

  static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    let tables = Self.tables
    let t0 = tables[0], t1 = tables[1], t2 = tables[2], t3 = tables[3]
    let t4 = tables[4], t5 = tables[5], t6 = tables[6], t7 = tables[7]
    var position = 0
    let count = bytes.count
    while count - position >= 8 {
      let low = bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian ^ crc
      let high = bytes.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self).littleEndian
      crc =
        t7[Int(low & 0xFF)] ^ t6[Int((low >> 8) & 0xFF)] ^ t5[Int((low >> 16) & 0xFF)] ^ t4[Int(low >> 24)]
        ^ t3[Int(high & 0xFF)] ^ t2[Int((high >> 8) & 0xFF)] ^ t1[Int((high >> 16) & 0xFF)] ^ t0[Int(high >> 24)]
      position += 8
    }
    while position < count {
      crc = (crc >> 8) ^ t0[Int((crc ^ UInt32(bytes[position])) & 0xFF)]
      position += 1
    }
    return crc ^ 0xFFFF_FFFF
  }
}
