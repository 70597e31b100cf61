import ArgumentParser
import Foundation
import SafeTensors

/// The process exit codes scripts can rely on.
public enum ExitStatus: Int32, Sendable {
  /// Everything worked.
  case success = 0
  /// The command ran but a verification check failed.
  case verificationFailed = 1
  /// Bad input: a malformed file, a usage error, an impossible request.
  case badInput = 2
  /// The operating system failed us: a read, write, fsync or rename error.
  case ioFailure = 3

  /// Maps any error thrown by a command to its exit status, in one place.
  public init(for error: Error) {
    if let error = error as? ExitStatusProviding {
      self = error.exitStatus
      return
    }
    if let error = error as? SafeTensorsError {
      self = error.isIOFailure ? .ioFailure : .badInput
      return
    }
    if error is CocoaError || error is POSIXError {
      self = .ioFailure
      return
    }
    // Help and --version count as success; usage errors and anything unclassified as bad input
    // (the message says what went wrong).
    self = RootCommand.exitCode(for: error) == .success ? .success : .badInput
  }

  /// The one-line message for an error (argument-parser formats its own usage errors).
  static func message(for error: Error) -> String {
    if error is SafeTensorsError || error is ExitStatusProviding {
      // Messages may quote names from a hostile file: never let them reach the terminal raw.
      return SafeTensorsError.printable(String(describing: error), limit: 4096)
    }
    return RootCommand.fullMessage(for: error)
  }
}

/// Adopted by every module-level error type the CLI can see, so the mapping stays in one place.
public protocol ExitStatusProviding: Error {
  /// The exit status the error should produce.
  var exitStatus: ExitStatus { get }
}
