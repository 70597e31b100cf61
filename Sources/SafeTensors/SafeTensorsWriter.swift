#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The name, dtype and shape of a tensor to be written.
public struct TensorSpec: Sendable, Equatable {
  public let name: String
  public let dtype: DType
  public let shape: [Int]

  public init(name: String, dtype: DType, shape: [Int]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
  }

  /// Bytes the tensor occupies (sub-byte types rounded down, as the format requires whole bytes).
  /// Precondition: the size fits in `Int` (`checkedByteCount` is not nil); the writer checks this
  /// for every entry before it uses the property.
  public var byteCount: Int {
    guard let count = checkedByteCount else {
      preconditionFailure("tensor '\(name)' shape \(shape) has no representable byte size")
    }
    return count
  }

  /// Bytes the tensor occupies, or nil when a dimension is negative or the size overflows `Int`.
  public var checkedByteCount: Int? {
    var elements = 1
    for dim in shape {
      guard dim >= 0 else { return nil }
      let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
      guard !overflow else { return nil }
      elements = product
    }
    let (bits, overflow) = elements.multipliedReportingOverflow(by: dtype.bitWidth)
    return overflow ? nil : bits / 8
  }

  /// Whether the element count fills whole bytes (always, except for 4- and 6-bit types).
  /// Meaningful once `checkedByteCount` is not nil.
  var fillsWholeBytes: Bool {
    let elements = shape.reduce(into: 1) { $0 = $0.multipliedReportingOverflow(by: $1).partialValue }
    return (elements % 8 * dtype.bitWidth) % 8 == 0
  }
}

/// Receives a tensor's bytes from its producer, in order, in as many pieces as the producer likes.
public final class TensorSink {
  private let file: AtomicFile
  /// Bytes received so far for the current tensor.
  public private(set) var count: UInt64 = 0
  private var expected: UInt64 = .max
  private var tensor = ""

  /// A sink appending to `file` (used by the safetensors and GGUF writers).
  public init(file: AtomicFile) { self.file = file }

  /// Appends bytes to the tensor. Throws `producerSizeMismatch` as soon as the producer offers
  /// more bytes than the tensor holds (nothing of the excess is written).
  public func write(_ bytes: UnsafeRawBufferPointer) throws {
    guard UInt64(bytes.count) <= expected - count else {
      throw SafeTensorsError.producerSizeMismatch(
        file: file.destination, tensor: tensor, expected: expected, written: count + UInt64(bytes.count))
    }
    try file.write(bytes)
    count += UInt64(bytes.count)
  }

  /// Appends bytes that stay valid until `release` is called (see `AtomicFile.write(_:release:)`:
  /// with direct I/O, page-aligned bytes are written without a copy). `release` is called once,
  /// whatever happens.
  public func write(_ bytes: UnsafeRawBufferPointer, release: @escaping @Sendable () -> Void) throws {
    guard UInt64(bytes.count) <= expected - count else {
      release()
      throw SafeTensorsError.producerSizeMismatch(
        file: file.destination, tensor: tensor, expected: expected, written: count + UInt64(bytes.count))
    }
    try file.write(bytes, release: release)
    count += UInt64(bytes.count)
  }

  /// Appends the raw bytes of an array of trivial values (e.g. `[Float]`, `[UInt16]`).
  public func write<T>(contentsOf values: [T]) throws {
    try values.withUnsafeBytes { try write($0) }
  }

  /// Starts a new tensor of `byteCount` bytes: writes beyond that many are refused.
  public func start(tensor name: String, byteCount: Int) {
    count = 0
    expected = UInt64(max(byteCount, 0))
    tensor = name
  }

  /// Starts counting a new tensor without a size limit (the caller checks `count` afterwards).
  public func reset() {
    count = 0
    expected = .max
    tensor = ""
  }
}

/// A tensor to write: what it is, and a producer that streams its bytes into a sink when its turn
/// comes. Producers run one at a time in file order, so only one tensor's working memory is live.
public struct TensorEntry {
  public let spec: TensorSpec
  public let produce: (TensorSink) throws -> Void

  public init(spec: TensorSpec, produce: @escaping (TensorSink) throws -> Void) {
    self.spec = spec
    self.produce = produce
  }

  /// An entry that copies bytes already in memory (or in a map) verbatim.
  public init(spec: TensorSpec, bytes: UnsafeRawBufferPointer) {
    self.spec = spec
    self.produce = { try $0.write(bytes) }
  }
}

/// Writes safetensors files laid out exactly as the reference implementation lays them out.
public enum SafeTensorsWriter {
  /// The order safetensors-rs writes tensors in: dtype descending, then name ascending (bytewise).
  public static func fileOrder(_ specs: [TensorSpec]) -> [TensorSpec] {
    specs.sorted { left, right in
      if left.dtype != right.dtype { return left.dtype > right.dtype }
      return left.name.utf8.lexicographicallyPrecedes(right.name.utf8)
    }
  }

  /// The header JSON, for tensors already in file order, padded with spaces so the data starts at
  /// a multiple of `dataAlignment` bytes (8, as safetensors does; more is allowed by the format).
  /// Matches serde_json's compact output as safetensors writes it: `__metadata__` first when
  /// `metadata` is not nil (an empty map gives `"__metadata__":{}`, as safetensors-py's
  /// `metadata={}` does), its keys sorted bytewise for reproducibility, then the tensors with
  /// contiguous offsets. Precondition: every spec has a `checkedByteCount` (`write` checks this).
  public static func headerBytes(ordered specs: [TensorSpec], metadata: [String: String]?, dataAlignment: Int = 8)
    -> [UInt8]
  {
    var json = "{"
    var first = true
    if let metadata {
      json += "\"__metadata__\":{"
      let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      json += keys.map { "\(JSONText.quoted($0)):\(JSONText.quoted(metadata[$0] ?? ""))" }.joined(separator: ",")
      json += "}"
      first = false
    }
    var offset = 0
    for spec in specs {
      if !first { json += "," }
      first = false
      let end = offset + spec.byteCount
      json += "\(JSONText.quoted(spec.name)):{\"dtype\":\"\(spec.dtype.rawValue)\",\"shape\":["
      json += spec.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(offset),\(end)]}"
      offset = end
    }
    json += "}"
    var bytes = Array(json.utf8)
    // 8 bytes of length come first.
    let alignment = max(dataAlignment, 8)
    let padded = (8 + bytes.count + alignment - 1) / alignment * alignment - 8
    bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padded - bytes.count))
    return bytes
  }

  /// Writes `entries` to `path` atomically, tensor by tensor.
  ///
  /// - Parameters:
  ///   - metadata: the `__metadata__` map; nil writes none.
  ///   - inputs: the files the entries are read from. The write is refused if `path` is one of
  ///     them, and not committed if one of them changed under its memory map while it was read
  ///     (`SafeTensorsError.fileChanged`).
  ///   - progress: called after each tensor with (tensors done, total tensors, bytes done, total bytes).
  /// - Throws: `SafeTensorsError` for invalid entries, producers that write the wrong amount,
  ///   and I/O failures. On any error nothing is left at `path` that was not there before.
  ///   - directIO: write past the page cache where possible (see `AtomicFile`).
  ///   - dataAlignment: the data starts at a multiple of this many bytes (a multiple of 8), e.g.
  ///     `AtomicFile.pageSize`, so a producer can line its memory up with the file for direct I/O.
  ///   - finalMetadata: called after the last tensor; its metadata replaces `metadata` in the header.
  ///     It must not serialise longer (use placeholders of the final length, e.g. for hashes computed
  ///     while the tensors were written); a shorter header is padded with spaces, which the format allows.
  public static func write(
    to path: String, entries: [TensorEntry], metadata: [String: String]?, inputs: [String] = [],
    progress: ((Int, Int, UInt64, UInt64) -> Void)? = nil, directIO: Bool = false, dataAlignment: Int = 8,
    finalMetadata: (() throws -> [String: String])? = nil
  ) throws {
    precondition(dataAlignment > 0 && dataAlignment % 8 == 0, "dataAlignment must be a multiple of 8")
    var seen = Set<String>()
    var sizes: [String: Int] = [:]
    var totalBytes = 0
    for entry in entries {
      let spec = entry.spec
      guard seen.insert(spec.name).inserted else {
        throw SafeTensorsError.invalidEntry(file: path, tensor: spec.name, reason: "the name appears twice")
      }
      guard !spec.name.isEmpty, spec.name != "__metadata__" else {
        throw SafeTensorsError.invalidEntry(file: path, tensor: spec.name, reason: "reserved or empty name")
      }
      guard let size = spec.checkedByteCount else {
        throw SafeTensorsError.invalidEntry(
          file: path, tensor: spec.name,
          reason: "shape \(spec.shape) has a negative dimension or a size beyond 2^63 bytes")
      }
      guard spec.fillsWholeBytes else {
        throw SafeTensorsError.invalidEntry(
          file: path, tensor: spec.name,
          reason: "shape \(spec.shape) does not fill whole bytes as \(spec.dtype.rawValue)")
      }
      let (sum, overflow) = totalBytes.addingReportingOverflow(size)
      guard !overflow else {
        throw SafeTensorsError.invalidEntry(
          file: path, tensor: spec.name, reason: "the tensors add up to more than 2^63 bytes")
      }
      totalBytes = sum
      sizes[spec.name] = size
    }
    let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.spec.name, $0) })
    let ordered = fileOrder(entries.map(\.spec))
    let header = headerBytes(ordered: ordered, metadata: metadata, dataAlignment: dataAlignment)
    guard UInt64(header.count) <= SafeTensorsHeader.maximumHeaderLength else {
      throw SafeTensorsError.invalidEntry(file: path, tensor: "__metadata__", reason: "header would exceed 100 MB")
    }
    let file = try AtomicFile(destination: path, inputs: inputs, directIO: directIO)
    do {
      var length = UInt64(header.count).littleEndian
      try withUnsafeBytes(of: &length) { try file.write($0) }
      try file.write(header)
      let sink = TensorSink(file: file)
      var done: UInt64 = 0
      for (index, spec) in ordered.enumerated() {
        guard let entry = byName[spec.name], let size = sizes[spec.name] else { continue }
        sink.start(tensor: spec.name, byteCount: size)
        try entry.produce(sink)
        guard sink.count == UInt64(size) else {
          throw SafeTensorsError.producerSizeMismatch(
            file: path, tensor: spec.name, expected: UInt64(size), written: sink.count)
        }
        done += sink.count
        progress?(index + 1, ordered.count, done, UInt64(totalBytes))
      }
      if let finalMetadata {
        var patched = headerBytes(ordered: ordered, metadata: try finalMetadata(), dataAlignment: 8)
        guard patched.count <= header.count else {
          throw SafeTensorsError.invalidEntry(
            file: path, tensor: "__metadata__", reason: "final metadata is longer than its placeholder")
        }
        patched += [UInt8](repeating: UInt8(ascii: " "), count: header.count - patched.count)
        try file.overwrite(at: 8, with: patched)
      }
      // An input truncated under its map reads as zeros (see MapGuard): never commit such output.
      try MappedFile.checkIntact(paths: inputs)
      try file.commit()
    } catch let error as SafeTensorsError {
      file.abandon()
      // Copying straight from a map whose file shrank makes write(2) fail with EFAULT.
      if case .io(_, _, EFAULT) = error { try MappedFile.checkIntact(paths: inputs) }
      throw error
    } catch {
      file.abandon()
      throw error
    }
  }
}
