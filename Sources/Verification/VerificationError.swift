import Foundation

/// What can go wrong in the Verification module: inputs of the wrong shape or size (bad input,
/// exit code 2 in the CLI), or an output folder that cannot be made (I/O, exit code 3).
public enum VerificationError: Error, CustomStringConvertible, Equatable, Sendable {
  /// An image's values do not match its stated size or layout.
  case invalidImage(reason: String)
  /// Two images that must be compared differ in size.
  case sizeMismatch(first: String, second: String)
  /// An image is too small for the measurement (e.g. SSIM needs 11×11).
  case imageTooSmall(width: Int, height: Int, minimum: Int, measurement: String)
  /// Probe or latent-check inputs are inconsistent.
  case invalidInput(reason: String)
  /// The folder for a run's images cannot be created.
  case cannotCreateFolder(path: String, reason: String)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    if case .cannotCreateFolder = self { return true }
    return false
  }

  /// One line saying what went wrong.
  public var description: String {
    switch self {
    case .invalidImage(let reason):
      return "invalid image: \(reason)"
    case .sizeMismatch(let first, let second):
      return "images differ in size: \(first) and \(second)"
    case .imageTooSmall(let width, let height, let minimum, let measurement):
      return
        "\(measurement) needs images of at least \(minimum)×\(minimum) pixels, got \(width)×\(height)"
    case .invalidInput(let reason):
      return "invalid input: \(reason)"
    case .cannotCreateFolder(let path, let reason):
      return "\(path): cannot create the folder: \(reason)"
    }
  }
}
