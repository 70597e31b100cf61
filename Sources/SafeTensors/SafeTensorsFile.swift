/// A safetensors file opened for reading: the validated header, and each tensor's bytes as a view
/// into a read-only memory map. Nothing is copied until a caller copies it.
public final class SafeTensorsFile: @unchecked Sendable {
  /// The path the file was opened with.
  public let path: String
  /// The validated header.
  public let header: SafeTensorsHeader
  /// The length of the header JSON, padding included (the data section starts at `8 + headerLength`).
  public let headerLength: Int
  /// The underlying map (shared with anything that hashes or copies the file).
  public let mapping: MappedFile
  private let indexByName: [String: Int]

  /// Opens and validates `path`. Throws `SafeTensorsError` naming the file and the tensor on any
  /// violation of the format.
  public init(path: String) throws {
    self.path = path
    mapping = try MappedFile(path: path)
    let size = UInt64(mapping.size)
    guard size >= 8 else { throw SafeTensorsError.fileTooSmall(file: path, size: size) }
    let prefix = mapping.bytes(offset: 0, count: 8)
    let declared = prefix.loadUnaligned(as: UInt64.self).littleEndian
    guard declared <= SafeTensorsHeader.maximumHeaderLength else {
      throw SafeTensorsError.headerTooLarge(file: path, declared: declared)
    }
    guard declared <= size - 8 else {
      throw SafeTensorsError.headerOutOfBounds(file: path, declared: declared, fileSize: size)
    }
    headerLength = Int(declared)
    do {
      header = try SafeTensorsHeader.parse(
        mapping.bytes(offset: 8, count: headerLength),
        dataSectionLength: size - 8 - declared, file: path)
    } catch {
      // A header read as zeros because the file shrank under the map is not a format error.
      try mapping.checkIntact()
      throw error
    }
    try mapping.checkIntact()
    var index: [String: Int] = [:]
    index.reserveCapacity(header.tensors.count)
    for (position, tensor) in header.tensors.enumerated() { index[tensor.name] = position }
    indexByName = index
  }

  /// The tensors in data order.
  public var tensors: [TensorInfo] { header.tensors }
  /// The `__metadata__` map.
  public var metadata: [String: String] { header.metadata }
  /// Byte offset of the data section in the file.
  public var dataOffset: Int { 8 + headerLength }
  /// Total file size in bytes.
  public var fileSize: Int { mapping.size }

  /// The entry for `name`, or nil.
  public func info(_ name: String) -> TensorInfo? {
    indexByName[name].map { header.tensors[$0] }
  }

  /// Whether the file has a tensor named `name`.
  public func contains(_ name: String) -> Bool { indexByName[name] != nil }

  /// The raw little-endian bytes of a tensor, as a view into the map.
  ///
  /// `tensor` must be one of this file's own entries (from `tensors` or `info(_:)`): those ranges
  /// were validated against the file when it was opened. Passing an entry of another file is a
  /// programming error and stops the process with a message naming both.
  ///
  /// If another program truncates the file while the view is read, the missing pages read as
  /// zeros instead of crashing the process (see `MappedFile`); call `checkIntact()` before using
  /// anything derived from the bytes where that matters.
  public func data(_ tensor: TensorInfo) -> UnsafeRawBufferPointer {
    let (begin, end) = tensor.dataOffsets
    precondition(
      begin >= 0 && begin <= end && end <= header.dataByteCount,
      "tensor '\(tensor.name)' [\(begin), \(end)) is not an entry of \(path)")
    return mapping.bytes(offset: dataOffset + begin, count: end - begin)
  }

  /// Throws `SafeTensorsError.fileChanged` if the file was truncated (or became unreadable) since
  /// it was opened, so that bytes read from the map may not be the file's.
  public func checkIntact() throws { try mapping.checkIntact() }

  /// The raw bytes of the tensor named `name`.
  public func data(named name: String) throws -> UnsafeRawBufferPointer {
    guard let tensor = info(name) else { throw SafeTensorsError.tensorNotFound(file: path, tensor: name) }
    return data(tensor)
  }
}
