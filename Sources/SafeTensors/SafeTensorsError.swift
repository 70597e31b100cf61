import Foundation

/// Everything that can be wrong with a safetensors file or with writing one.
///
/// Every case names the file and, where there is one, the tensor, so a message alone tells the user
/// what to look at. The CLI maps `isIOFailure` cases to exit code 3 and the rest to 2.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable, Sendable {
  /// Fewer than the 8 bytes of the header-length prefix.
  case fileTooSmall(file: String, size: UInt64)
  /// The declared header length exceeds the 100 MB cap.
  case headerTooLarge(file: String, declared: UInt64)
  /// The declared header length runs past the end of the file.
  case headerOutOfBounds(file: String, declared: UInt64, fileSize: UInt64)
  /// The header bytes are not valid UTF-8.
  case headerNotUTF8(file: String, byteOffset: Int)
  /// The header is not well-formed JSON.
  case invalidJSON(file: String, byteOffset: Int, reason: String)
  /// The JSON is well-formed but does not follow the safetensors schema.
  case invalidHeader(file: String, tensor: String?, reason: String)
  /// A key appears twice in one JSON object.
  case duplicateKey(file: String, key: String)
  /// A dtype string the format does not define.
  case unknownDType(file: String, tensor: String, dtype: String)
  /// A dimension, the element count or the size in bits of a shape reaches 2^63 (does not fit `Int`).
  case shapeOverflow(file: String, tensor: String, shape: [UInt64])
  /// The element count of a sub-byte dtype does not fill whole bytes.
  case misalignedElements(file: String, tensor: String, dtype: DType, elements: UInt64)
  /// The byte range does not match what the shape and dtype need.
  case sizeMismatch(file: String, tensor: String, shapeBytes: UInt64, rangeBytes: UInt64)
  /// The byte ranges leave a gap, overlap, run backwards, or do not start at zero.
  case invalidOffsets(file: String, tensor: String, reason: String)
  /// The data section is longer or shorter than the tensors it indexes.
  case dataSectionMismatch(file: String, indexedBytes: UInt64, actualBytes: UInt64)
  /// A tensor was asked for by a name the file does not have.
  case tensorNotFound(file: String, tensor: String)
  /// The output path names one of the inputs: we never overwrite an input.
  case outputIsInput(output: String, input: String)
  /// A producer wrote a different number of bytes than its tensor needs.
  case producerSizeMismatch(file: String, tensor: String, expected: UInt64, written: UInt64)
  /// The writer was given two tensors with the same name, or an unusable entry.
  case invalidEntry(file: String, tensor: String, reason: String)
  /// An operating-system call failed.
  case io(file: String, operation: String, errno: Int32)
  /// The path names a directory, pipe, device or socket, not a file.
  case notRegularFile(file: String, kind: String)
  /// The file changed under a live memory map (truncated by another program, or unreadable pages):
  /// what was read from it since may be wrong, so the result is not used.
  case fileChanged(file: String, reason: String)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    switch self {
    case .io, .fileChanged: return true
    default: return false
    }
  }

  /// One line naming the file, the tensor and the problem. Names from the file are shown with
  /// control and bidirectional-override characters escaped and long names shortened, so a hostile
  /// header cannot drive the terminal or flood it.
  public var description: String { SafeTensorsError.printable(rawDescription, limit: 4096) }

  private var rawDescription: String {
    let shown = { (text: String) in SafeTensorsError.printable(text, limit: 160) }
    switch self {
    case .fileTooSmall(let file, let size):
      return "\(file): not a safetensors file: \(size) bytes, fewer than the 8-byte header length"
    case .headerTooLarge(let file, let declared):
      return "\(file): header length \(declared) exceeds the 100000000-byte limit"
    case .headerOutOfBounds(let file, let declared, let fileSize):
      return "\(file): header length \(declared) runs past the end of the \(fileSize)-byte file"
    case .headerNotUTF8(let file, let offset):
      return "\(file): header is not valid UTF-8 (byte \(offset) of the header)"
    case .invalidJSON(let file, let offset, let reason):
      return "\(file): header is not valid JSON at byte \(offset): \(reason)"
    case .invalidHeader(let file, let tensor, let reason):
      if let tensor { return "\(file): tensor '\(shown(tensor))': \(reason)" }
      return "\(file): invalid header: \(reason)"
    case .duplicateKey(let file, let key):
      return "\(file): header names '\(shown(key))' twice"
    case .unknownDType(let file, let tensor, let dtype):
      return "\(file): tensor '\(shown(tensor))' has unknown dtype '\(shown(dtype))'"
    case .shapeOverflow(let file, let tensor, let shape):
      return "\(file): tensor '\(shown(tensor))' shape \(shape) is too large: its element or byte count reaches 2^63"
    case .misalignedElements(let file, let tensor, let dtype, let elements):
      return
        "\(file): tensor '\(shown(tensor))' has \(elements) \(dtype.rawValue) elements, which do not fill whole bytes"
    case .sizeMismatch(let file, let tensor, let shapeBytes, let rangeBytes):
      return "\(file): tensor '\(shown(tensor))' has \(rangeBytes) bytes but its shape and dtype need \(shapeBytes)"
    case .invalidOffsets(let file, let tensor, let reason):
      return "\(file): tensor '\(shown(tensor))' has invalid data_offsets: \(reason)"
    case .dataSectionMismatch(let file, let indexed, let actual):
      let what = actual > indexed ? "trailing bytes after the last tensor" : "the file is truncated"
      return "\(file): tensors index \(indexed) data bytes but the file has \(actual) (\(what))"
    case .tensorNotFound(let file, let tensor):
      return "\(file): no tensor named '\(shown(tensor))'"
    case .outputIsInput(let output, let input):
      return "\(output): refusing to write over the input \(input)"
    case .producerSizeMismatch(let file, let tensor, let expected, let written):
      return "\(file): tensor '\(shown(tensor))' needs \(expected) bytes but its producer wrote \(written)"
    case .invalidEntry(let file, let tensor, let reason):
      return "\(file): cannot write tensor '\(shown(tensor))': \(reason)"
    case .io(let file, let operation, let code):
      return "\(file): \(operation) failed: \(String(cString: strerror(code)))"
    case .notRegularFile(let file, let kind):
      return "\(file): not a regular file (\(kind))"
    case .fileChanged(let file, let reason):
      return "\(file): the file changed while it was being read: \(reason)"
    }
  }

  /// `text` with control characters (C0, DEL, C1) and bidirectional overrides escaped as `\u{…}`,
  /// shortened to about `limit` characters (the cut says how much was left out).
  public static func printable(_ text: String, limit: Int = 160) -> String {
    var out = ""
    var shown = 0
    for scalar in text.unicodeScalars {
      if shown >= limit {
        let rest = text.unicodeScalars.count - shown
        out += "…(\(rest) more characters)"
        break
      }
      let value = scalar.value
      if value < 0x20 || (0x7F...0x9F).contains(value) || (0x202A...0x202E).contains(value)
        || (0x2066...0x2069).contains(value)
      {
        out += "\\u{" + String(value, radix: 16) + "}"
      } else {
        out.unicodeScalars.append(scalar)
      }
      shown += 1
    }
    return out
  }
}
