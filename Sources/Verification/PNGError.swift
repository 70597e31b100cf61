import Foundation

/// What can go wrong writing or reading a PNG. The CLI maps `isIOFailure` cases to exit code 3 and
/// the rest to 2.
public enum PNGError: Error, CustomStringConvertible, Equatable, Sendable {
  /// A system call failed (the file could not be created, written, synced, renamed or read).
  case io(file: String, operation: String, errno: Int32)
  /// A text entry cannot be stored in a PNG (keyword or text not allowed by the format).
  case invalidText(keyword: String, reason: String)
  /// The image cannot be encoded (size out of PNG's range, or libpng refused it).
  case encodingFailed(file: String, reason: String)
  /// The file is not a PNG, or libpng could not decode it.
  case malformed(file: String, reason: String)
  /// The image is larger than the reader accepts.
  case tooLarge(file: String, width: Int, height: Int)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    if case .io = self { return true }
    return false
  }

  /// One line saying what went wrong and where.
  public var description: String {
    switch self {
    case .io(let file, let operation, let code):
      return "\(file): cannot \(operation): \(String(cString: strerror(code))) (errno \(code))"
    case .invalidText(let keyword, let reason):
      return "PNG text '\(keyword)': \(reason)"
    case .encodingFailed(let file, let reason):
      return "\(file): cannot encode the PNG: \(reason)"
    case .malformed(let file, let reason):
      return "\(file): not a readable PNG: \(reason)"
    case .tooLarge(let file, let width, let height):
      return
        "\(file): \(width)×\(height) pixels is more than the reader accepts (\(PNGReader.maximumPixels))"
    }
  }
}
