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
  public var byteCount: Int { shape.reduce(1, *) * dtype.bitWidth / 8 }
}

/// Receives a tensor's bytes from its producer, in order, in as many pieces as the producer likes.
public final class TensorSink {
  private let file: AtomicFile
  /// Bytes received so far for the current tensor.
  public private(set) var count: UInt64 = 0

  /// A sink appending to `file` (used by the safetensors and GGUF writers).
  public init(file: AtomicFile) { self.file = file }

  /// Appends bytes to the tensor.
  public func write(_ bytes: UnsafeRawBufferPointer) throws {
    try file.write(bytes)
    count += UInt64(bytes.count)
  }

  /// Appends the raw bytes of an array of trivial values (e.g. `[Float]`, `[UInt16]`).
  public func write<T>(contentsOf values: [T]) throws {
    try values.withUnsafeBytes { try write($0) }
  }

  /// Starts counting a new tensor.
  public func reset() { count = 0 }
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

  /// The header JSON (padded with spaces to a multiple of 8), for tensors already in file order.
  /// Matches serde_json's compact output: `__metadata__` first, keys sorted for reproducibility.
  public static func headerBytes(ordered specs: [TensorSpec], metadata: [String: String]?) -> [UInt8] {
    var json = "{"
    var first = true
    if let metadata, !metadata.isEmpty {
      json += "\"__metadata__\":{"
      let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      json += keys.map { "\(quoted($0)):\(quoted(metadata[$0] ?? ""))" }.joined(separator: ",")
      json += "}"
      first = false
    }
    var offset = 0
    for spec in specs {
      if !first { json += "," }
      first = false
      let end = offset + spec.byteCount
      json += "\(quoted(spec.name)):{\"dtype\":\"\(spec.dtype.rawValue)\",\"shape\":["
      json += spec.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(offset),\(end)]}"
      offset = end
    }
    json += "}"
    var bytes = Array(json.utf8)
    let padded = (bytes.count + 7) / 8 * 8
    bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padded - bytes.count))
    return bytes
  }

  /// Writes `entries` to `path` atomically, tensor by tensor.
  ///
  /// - Parameters:
  ///   - inputs: paths the output must not be (the write is refused if `path` is one of them).
  ///   - progress: called after each tensor with (tensors done, total tensors, bytes done, total bytes).
  /// - Throws: `SafeTensorsError` for invalid entries, producers that write the wrong amount,
  ///   and I/O failures. On any error nothing is left at `path` that was not there before.
  public static func write(
    to path: String, entries: [TensorEntry], metadata: [String: String]?, inputs: [String] = [],
    progress: ((Int, Int, UInt64, UInt64) -> Void)? = nil
  ) throws {
    var seen = Set<String>()
    for entry in entries {
      guard seen.insert(entry.spec.name).inserted else {
        throw SafeTensorsError.invalidEntry(file: path, tensor: entry.spec.name, reason: "the name appears twice")
      }
      guard !entry.spec.name.isEmpty, entry.spec.name != "__metadata__" else {
        throw SafeTensorsError.invalidEntry(file: path, tensor: entry.spec.name, reason: "reserved or empty name")
      }
      guard entry.spec.shape.allSatisfy({ $0 >= 0 }),
        (entry.spec.shape.reduce(1, *) * entry.spec.dtype.bitWidth) % 8 == 0
      else {
        throw SafeTensorsError.invalidEntry(
          file: path, tensor: entry.spec.name, reason: "shape \(entry.spec.shape) is not writable as \(entry.spec.dtype.rawValue)")
      }
    }
    let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.spec.name, $0) })
    let ordered = fileOrder(entries.map(\.spec))
    let header = headerBytes(ordered: ordered, metadata: metadata)
    guard UInt64(header.count) <= SafeTensorsHeader.maximumHeaderLength else {
      throw SafeTensorsError.invalidEntry(file: path, tensor: "__metadata__", reason: "header would exceed 100 MB")
    }
    let totalBytes = ordered.reduce(UInt64(0)) { $0 + UInt64($1.byteCount) }
    let file = try AtomicFile(destination: path, inputs: inputs)
    do {
      var length = UInt64(header.count).littleEndian
      try withUnsafeBytes(of: &length) { try file.write($0) }
      try file.write(header)
      let sink = TensorSink(file: file)
      var done: UInt64 = 0
      for (index, spec) in ordered.enumerated() {
        sink.reset()
        guard let entry = byName[spec.name] else { continue }
        try entry.produce(sink)
        guard sink.count == UInt64(spec.byteCount) else {
          throw SafeTensorsError.producerSizeMismatch(
            file: path, tensor: spec.name, expected: UInt64(spec.byteCount), written: sink.count)
        }
        done += sink.count
        progress?(index + 1, ordered.count, done, totalBytes)
      }
      try file.commit()
    } catch {
      file.abandon()
      throw error
    }
  }

  /// serde_json's string escaping: `"` `\` and control characters; everything else verbatim UTF-8.
  static func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }
}
