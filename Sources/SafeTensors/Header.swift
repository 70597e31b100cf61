/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
  /// The tensor's key, e.g. `model.diffusion_model.out.2.weight`.
  public let name: String
  /// Element type.
  public let dtype: DType
  /// Dimensions, outermost first (C order). `[]` is a scalar, any `0` makes it empty.
  public let shape: [Int]
  /// Byte range `[begin, end)` relative to the start of the data section.
  public let dataOffsets: (begin: Int, end: Int)

  /// Creates an entry; validation happens in `SafeTensorsHeader.validate`.
  public init(name: String, dtype: DType, shape: [Int], dataOffsets: (begin: Int, end: Int)) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.dataOffsets = dataOffsets
  }

  /// Number of elements (1 for a scalar, 0 for an empty tensor).
  public var elementCount: Int { shape.reduce(1, *) }
  /// Number of bytes in the data section.
  public var byteCount: Int { dataOffsets.end - dataOffsets.begin }

  public static func == (lhs: TensorInfo, rhs: TensorInfo) -> Bool {
    lhs.name == rhs.name && lhs.dtype == rhs.dtype && lhs.shape == rhs.shape
      && lhs.dataOffsets == rhs.dataOffsets
  }
}

/// A parsed and validated safetensors header: tensors in data order, plus `__metadata__`.
public struct SafeTensorsHeader: Sendable {
  /// The tensors sorted by their position in the data section.
  public let tensors: [TensorInfo]
  /// The `__metadata__` map (string → string); empty when the file has none.
  public let metadata: [String: String]
  /// Whether the header carried a `__metadata__` object at all.
  public let hasMetadataObject: Bool
  /// Bytes of the data section the tensors index (the file holds exactly this many after the header).
  public let dataByteCount: Int

  /// The largest header the reader accepts, as safetensors-rs (`MAX_HEADER_SIZE`).
  public static let maximumHeaderLength: UInt64 = 100_000_000

  /// Parses and validates header JSON bytes. `dataSectionLength` is the file size minus 8 minus the
  /// header length; the tensors must cover exactly that range.
  public static func parse(
    _ bytes: UnsafeRawBufferPointer, dataSectionLength: UInt64, file: String
  ) throws -> SafeTensorsHeader {
    var parser = HeaderParser(bytes: bytes, file: file)
    let (entries, metadata) = try parser.parseHeader()
    return try validate(
      entries: entries, metadata: metadata, dataSectionLength: dataSectionLength, file: file)
  }

  /// Checks shapes, sizes and offsets as safetensors-rs `Metadata::validate` does, with
  /// overflow-checked arithmetic.
  static func validate(
    entries: [RawTensorEntry], metadata: [String: String]?, dataSectionLength: UInt64, file: String
  ) throws -> SafeTensorsHeader {
    guard dataSectionLength <= UInt64(Int.max) else {
      throw SafeTensorsError.invalidHeader(
        file: file, tensor: nil, reason: "data section of \(dataSectionLength) bytes is too large")
    }
    var tensors: [TensorInfo] = []
    tensors.reserveCapacity(entries.count)
    for entry in entries {
      // Every dimension, every partial product and the byte size must fit in Int, so that
      // `shape`, `elementCount` and `byteCount` can never trap later. (safetensors-rs checks the
      // final product in usize; a shape like [2^62, 3, 0] that it accepts is refused here.)
      var elements = 1
      var shape: [Int] = []
      shape.reserveCapacity(entry.shape.count)
      for dim in entry.shape {
        guard dim <= UInt64(Int.max) else {
          throw SafeTensorsError.shapeOverflow(file: file, tensor: entry.name, shape: entry.shape)
        }
        let (product, overflow) = elements.multipliedReportingOverflow(by: Int(dim))
        guard !overflow else {
          throw SafeTensorsError.shapeOverflow(file: file, tensor: entry.name, shape: entry.shape)
        }
        elements = product
        shape.append(Int(dim))
      }
      let (bits, bitsOverflow) = elements.multipliedReportingOverflow(by: entry.dtype.bitWidth)
      guard !bitsOverflow else {
        throw SafeTensorsError.shapeOverflow(file: file, tensor: entry.name, shape: entry.shape)
      }
      guard bits % 8 == 0 else {
        throw SafeTensorsError.misalignedElements(
          file: file, tensor: entry.name, dtype: entry.dtype, elements: UInt64(elements))
      }
      guard entry.end >= entry.begin else {
        throw SafeTensorsError.invalidOffsets(
          file: file, tensor: entry.name, reason: "end \(entry.end) is before begin \(entry.begin)")
      }
      // The data section fits in the file, so this bounds both offsets by Int.max too.
      guard entry.end <= dataSectionLength else {
        throw SafeTensorsError.invalidOffsets(
          file: file, tensor: entry.name,
          reason: "end \(entry.end) is past the \(dataSectionLength)-byte data section")
      }
      guard UInt64(bits / 8) == entry.end - entry.begin else {
        throw SafeTensorsError.sizeMismatch(
          file: file, tensor: entry.name, shapeBytes: UInt64(bits / 8),
          rangeBytes: entry.end - entry.begin)
      }
      tensors.append(
        TensorInfo(
          name: entry.name, dtype: entry.dtype, shape: shape,
          dataOffsets: (Int(entry.begin), Int(entry.end))))
    }
    // Contiguity: sorted by begin (then end, so empty tensors come first), each range starts where
    // the previous one ended. This rejects gaps, overlaps and aliases (safetensors `InvalidOffset`).
    tensors.sort {
      ($0.dataOffsets.begin, $0.dataOffsets.end) < ($1.dataOffsets.begin, $1.dataOffsets.end)
    }
    var cursor = 0
    for tensor in tensors {
      if tensor.dataOffsets.begin != cursor {
        let reason =
          tensor.dataOffsets.begin > cursor
          ? "begins at \(tensor.dataOffsets.begin), leaving a gap after byte \(cursor)"
          : "begins at \(tensor.dataOffsets.begin), overlapping data that ends at \(cursor)"
        throw SafeTensorsError.invalidOffsets(file: file, tensor: tensor.name, reason: reason)
      }
      cursor = tensor.dataOffsets.end
    }
    guard UInt64(cursor) == dataSectionLength else {
      throw SafeTensorsError.dataSectionMismatch(
        file: file, indexedBytes: UInt64(cursor), actualBytes: dataSectionLength)
    }
    return SafeTensorsHeader(
      tensors: tensors, metadata: metadata ?? [:], hasMetadataObject: metadata != nil,
      dataByteCount: cursor)
  }
}

/// A tensor entry as it appears in the JSON, before validation.
struct RawTensorEntry {
  var name: String
  var dtype: DType
  var shape: [UInt64]
  var begin: UInt64
  var end: UInt64
}
