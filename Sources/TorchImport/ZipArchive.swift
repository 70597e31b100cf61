import Foundation
import SafeTensors

/// The entries of a zip archive as `torch.save` writes it: stored (uncompressed), unencrypted,
/// zip64 where the file is large. Only the central directory is parsed; entry data stay in the map.
///
/// Everything is checked against the file before use (overflow-checked arithmetic): counts, sizes,
/// offsets, names. Compressed or encrypted entries are refused (torch never writes them, and a
/// stored entry cannot be a zip bomb); names that could escape a folder (`..`, absolute, `\`) are
/// refused although nothing is ever extracted to disk.
struct ZipArchive {
  struct Entry {
    let name: String
    /// Offset of the entry's bytes in the file.
    let dataOffset: Int
    let size: Int
    let crc32: UInt32
  }

  let path: String
  let mapping: MappedFile
  private(set) var entries: [Entry] = []
  private var index: [String: Int] = [:]

  /// Largest number of entries accepted (a full SDXL checkpoint has about 2,600).
  static let maximumEntries = 1 << 20

  init(mapping: MappedFile, path: String) throws {
    self.path = path
    self.mapping = mapping
    let size = mapping.size
    func fail(_ reason: String) -> TorchImportError { .invalidZip(file: path, reason: reason) }
    func bytes(_ offset: Int, _ count: Int) throws -> UnsafeRawBufferPointer {
      guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
        throw fail("a structure at byte \(offset) runs past the end of the file")
      }
      return mapping.bytes(offset: offset, count: count)
    }
    guard size >= 22 else { throw fail("\(size) bytes is too small for a zip archive") }

    // End of central directory: the last 22 bytes plus up to 65,535 bytes of comment.
    let searchStart = max(0, size - 22 - 65_535)
    let tail = try bytes(searchStart, size - searchStart)
    var eocd: Int?
    var position = tail.count - 22
    while position >= 0 {
      if tail.u32(position) == 0x0605_4B50 && position + 22 + Int(tail.u16(position + 20)) <= tail.count {
        eocd = searchStart + position
        break
      }
      position -= 1
    }
    guard let eocd else { throw fail("no end-of-central-directory record (truncated download?)") }
    let record = try bytes(eocd, 22)
    var entryCount = Int(record.u16(10))
    var directorySize = Int(record.u32(12))
    var directoryOffset = Int(record.u32(16))
    if record.u16(4) != 0 && record.u16(4) != 0xFFFF { throw fail("multi-disk archives are not supported") }

    if entryCount == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
      // Zip64: the locator sits right before the classic record.
      let locator = try bytes(eocd - 20, 20)
      guard locator.u32(0) == 0x0706_4B50 else { throw fail("zip64 fields without a zip64 locator") }
      let recordOffset = locator.u64(8)
      guard recordOffset <= UInt64(eocd - 20) else {
        throw fail("zip64 record offset \(recordOffset) is past its locator")
      }
      let record64 = try bytes(Int(recordOffset), 56)
      guard record64.u32(0) == 0x0606_4B50 else {
        throw fail("no zip64 end-of-central-directory record at \(recordOffset)")
      }
      let count64 = record64.u64(32), size64 = record64.u64(40), offset64 = record64.u64(48)
      guard count64 <= UInt64(Self.maximumEntries), size64 <= UInt64(size), offset64 <= UInt64(size) else {
        throw fail("zip64 directory of \(count64) entries, \(size64) bytes at \(offset64) does not fit the file")
      }
      entryCount = Int(count64)
      directorySize = Int(size64)
      directoryOffset = Int(offset64)
    }
    guard entryCount <= Self.maximumEntries else {
      throw fail("\(entryCount) entries (at most \(Self.maximumEntries))")
    }
    // Each central header needs at least 46 bytes: a count the directory cannot hold is a lie.
    guard entryCount <= directorySize / 46 || entryCount == 0 else {
      throw fail("\(entryCount) entries cannot fit a central directory of \(directorySize) bytes")
    }
    let directory = try bytes(directoryOffset, directorySize)

    entries.reserveCapacity(entryCount)
    var cursor = 0
    for _ in 0..<entryCount {
      guard cursor + 46 <= directory.count, directory.u32(cursor) == 0x0201_4B50 else {
        throw fail("central directory entry \(entries.count) is damaged")
      }
      let flags = directory.u16(cursor + 8)
      let method = directory.u16(cursor + 10)
      let crc = directory.u32(cursor + 16)
      var compressed = UInt64(directory.u32(cursor + 20))
      var uncompressed = UInt64(directory.u32(cursor + 24))
      let nameLength = Int(directory.u16(cursor + 28))
      let extraLength = Int(directory.u16(cursor + 30))
      let commentLength = Int(directory.u16(cursor + 32))
      var localOffset = UInt64(directory.u32(cursor + 42))
      let variableEnd = cursor + 46 + nameLength + extraLength + commentLength
      guard variableEnd <= directory.count else {
        throw fail("central directory entry \(entries.count) runs past the directory")
      }
      let nameBytes = UnsafeRawBufferPointer(rebasing: directory[(cursor + 46)..<(cursor + 46 + nameLength)])
      guard let name = String(validating: nameBytes, as: UTF8.self) else {
        throw fail("entry \(entries.count) has a name that is not UTF-8")
      }
      try Self.checkName(name, fail: fail)

      // Zip64 extra field: the 64-bit values of the fields that hold all ones, in this order.
      var extra = cursor + 46 + nameLength
      let extraEnd = extra + extraLength
      while extra + 4 <= extraEnd {
        let id = directory.u16(extra), length = Int(directory.u16(extra + 2))
        guard extra + 4 + length <= extraEnd else { throw fail("entry '\(name)' has a damaged extra field") }
        if id == 0x0001 {
          var field = extra + 4
          func next() throws -> UInt64 {
            guard field + 8 <= extra + 4 + length else { throw fail("entry '\(name)' has a short zip64 field") }
            defer { field += 8 }
            return directory.u64(field)
          }
          if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
          if compressed == 0xFFFF_FFFF { compressed = try next() }
          if localOffset == 0xFFFF_FFFF { localOffset = try next() }
        }
        extra += 4 + length
      }
      if flags & 0x0001 != 0 || flags & 0x0040 != 0 {
        throw TorchImportError.unsupportedEntry(file: path, entry: name, reason: "it is encrypted")
      }
      guard method == 0 else {
        throw TorchImportError.unsupportedEntry(
          file: path, entry: name,
          reason:
            "it is compressed (method \(method)); torch.save stores entries uncompressed, so this archive was repacked")
      }
      guard compressed == uncompressed else {
        throw fail("stored entry '\(name)' declares \(compressed) stored bytes but \(uncompressed) bytes of content")
      }
      guard localOffset <= UInt64(size), uncompressed <= UInt64(size) else {
        throw fail("entry '\(name)' lies past the end of the file")
      }

      // The local header (its extra field is where torch pads data to 64-byte alignment).
      let local = try bytes(Int(localOffset), 30)
      guard local.u32(0) == 0x0403_4B50 else { throw fail("entry '\(name)' has no local header at \(localOffset)") }
      let localName = Int(local.u16(26)), localExtra = Int(local.u16(28))
      let dataOffset = Int(localOffset) + 30 + localName + localExtra
      guard localName == nameLength,
        try bytes(Int(localOffset) + 30, localName).elementsEqual(nameBytes)
      else { throw fail("entry '\(name)' has a different name in its local header") }
      guard dataOffset <= size, Int(uncompressed) <= size - dataOffset else {
        throw fail(
          "entry '\(name)' (\(uncompressed) bytes at \(dataOffset)) runs past the end of the file (\(size) bytes): truncated download?"
        )
      }
      guard index[name] == nil else { throw fail("entry '\(name)' appears twice") }
      index[name] = entries.count
      entries.append(Entry(name: name, dataOffset: dataOffset, size: Int(uncompressed), crc32: crc))
      cursor = variableEnd
    }
  }

  /// Refuses names that are not plain relative paths.
  static func checkName(_ name: String, fail: (String) -> TorchImportError) throws {
    let printable = SafeTensorsError.printable(name, limit: 160)
    guard !name.isEmpty, name.utf8.count <= 4096 else { throw fail("an entry has an empty or over-long name") }
    if name.hasPrefix("/") || name.contains("\\")
      || name.split(separator: "/", omittingEmptySubsequences: false).contains("..")
      || name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) || name.contains(":")
    {
      throw fail("entry name '\(printable)' is not a plain relative path (path traversal?)")
    }
  }

  func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

  func data(_ entry: Entry) -> UnsafeRawBufferPointer { mapping.bytes(offset: entry.dataOffset, count: entry.size) }

  /// Checks the entry's bytes against its recorded CRC-32. A zero CRC on a non-empty entry means
  /// none was recorded (`torch.serialization.set_crc32_options(False)`) and is accepted.
  func verify(_ entry: Entry) throws {
    guard entry.crc32 != 0 || entry.size == 0 else { return }
    let computed = CRC32.checksum(data(entry))
    guard computed == entry.crc32 else {
      throw TorchImportError.invalidZip(
        file: path,
        reason:
          "entry '\(SafeTensorsError.printable(entry.name, limit: 160))' fails its CRC-32 check (recorded \(String(format: "%08x", entry.crc32)), computed \(String(format: "%08x", computed))): the file is corrupted, download it again"
      )
    }
  }
}

extension UnsafeRawBufferPointer {
  func u16(_ offset: Int) -> UInt16 { loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian }
  func u32(_ offset: Int) -> UInt32 { loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian }
  func u64(_ offset: Int) -> UInt64 { loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian }
}
