import Adapters
import ArgumentParser
import Checkpoint
import Diffusion
import Extraction
import Foundation
import SafeTensors
import Transforms
import Verification
import Weights

/// The process exit codes scripts can rely on.
public enum ExitStatus: Int32, Sendable {
  /// Everything worked.
  case success = 0
  /// The command ran but a verification check failed.
  case verificationFailed = 1
  /// Bad input: a malformed file, a usage error, an impossible request.
  case badInput = 2
  /// The operating system failed us: a read, write, fsync or rename error, a full disk, a vanished
  /// input.
  case ioFailure = 3

  /// Maps any error thrown by a command to its exit status: the one map, every error type of
  /// every module listed (a new error type belongs here).
  public init(for error: Error) {
    if let status = Self.moduleStatus(error) {
      self = status
    } else {
      // Help and --version count as success; usage errors and anything unclassified as bad input
      // (the message says what went wrong).
      self = RootCommand.exitCode(for: error) == .success ? .success : .badInput
    }
  }

  /// The status of an error thrown by the library modules or the CLI's own types; nil for
  /// argument-parser's errors and anything unknown.
  static func moduleStatus(_ error: Error) -> ExitStatus? {
    func status(io: Bool) -> ExitStatus { io ? .ioFailure : .badInput }
    switch error {
    case let error as ExitStatusProviding: return error.exitStatus
    // SafeTensors
    case let error as SafeTensorsError: return status(io: error.isIOFailure)
    // Checkpoint
    case let error as CheckpointError: return status(io: error.isIOFailure)
    // Adapters
    case let error as AdapterError: return status(io: error.isIOFailure)
    case is ExtractionError: return .badInput
    // Transforms
    case let error as MergeError: return status(io: error.isIOFailure)
    case is ConversionError: return .badInput
    // Weights
    case let error as WeightSourceError: return status(io: error.isIOFailure)
    case is GGUFError, is CodecError: return .badInput
    // Diffusion
    case let error as DiffusionError: return status(io: error.isIOFailure)
    case is ModelError: return .badInput
    // Verification
    case let error as PNGError: return status(io: error.isIOFailure)
    case let error as VerificationError: return status(io: error.isIOFailure)
    // Foundation's file operations (creating an output folder, reading a small file)
    case is CocoaError, is POSIXError: return .ioFailure
    default: return nil
    }
  }

  /// The one-line message for an error (argument-parser formats its own usage errors).
  static func message(for error: Error) -> String {
    if error is CocoaError || error is POSIXError {
      return SafeTensorsError.printable(error.localizedDescription, limit: 4096)
    }
    if moduleStatus(error) != nil {
      // Messages may quote names from a hostile file: never let them reach the terminal raw.
      return SafeTensorsError.printable(String(describing: error), limit: 4096)
    }
    return RootCommand.fullMessage(for: error)
  }
}

/// The CLI's own errors that carry their exit status (a failed verification, an error already
/// printed); library errors are mapped in `ExitStatus.moduleStatus`.
public protocol ExitStatusProviding: Error {
  /// The exit status the error should produce.
  var exitStatus: ExitStatus { get }
}
