import Foundation

/// Wall time and dense-equivalent work of a context's linear layers, convolutions and attention,
/// by kind, while `ComputeContext.profile` is set: what a benchmark needs to see which part of a
/// forward falls short of the peak (the rest of the forward's time is norms, element-wise work
/// and layout). Each call is timed as a whole, so the shares add up to the time spent in them.
public final class OperationProfile {
  public enum Kind: String, CaseIterable, Sendable {
    case linear = "linear layers"
    case convolution3x3 = "3×3 convolutions (kernel)"
    case winograd = "3×3 convolutions (Winograd)"
    case convolution = "other convolutions (im2col + sgemm)"
    case attention = "attention"
  }

  /// Time, work and calls of one kind, or of one shape of it.
  public struct Entry: Sendable {
    public var seconds = 0.0
    public var operations = 0.0
    public var calls = 0

    mutating func record(seconds elapsed: Double, operations work: Double) {
      seconds += elapsed
      operations += work
      calls += 1
    }
  }

  public private(set) var kinds: [Kind: Entry] = [:]
  /// Per kind, per shape ("rows×in→out" for linear layers, "N×C×H×W→out" for convolutions,
  /// "heads×queries×keys" for attention).
  public private(set) var shapes: [Kind: [String: Entry]] = [:]

  public init() {}

  /// Seconds spent in all kinds together.
  public var totalSeconds: Double { kinds.values.reduce(0) { $0 + $1.seconds } }

  func add(_ kind: Kind, shape: String, seconds: Double, operations: Double) {
    kinds[kind, default: Entry()].record(seconds: seconds, operations: operations)
    shapes[kind, default: [:]][shape, default: Entry()].record(seconds: seconds, operations: operations)
  }
}

extension ComputeContext {
  /// Where a profiled call started: its clock and the context's gemm work so far (nil when no
  /// profile is set).
  struct ProfileStart {
    let nanoseconds: UInt64
    let operations: Double
  }

  func startProfiling() -> ProfileStart? {
    guard profile != nil else { return nil }
    return ProfileStart(nanoseconds: DispatchTime.now().uptimeNanoseconds, operations: gemmOperations)
  }

  func finishProfiling(_ start: ProfileStart?, _ kind: OperationProfile.Kind, shape: @autoclosure () -> String) {
    guard let start, let profile else { return }
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.nanoseconds) / 1e9
    profile.add(kind, shape: shape(), seconds: elapsed, operations: gemmOperations - start.operations)
  }
}
