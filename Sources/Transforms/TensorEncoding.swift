import Foundation
import SafeTensors
import Weights

/// Encodes Float32 chunks to a dtype with an overflow policy, accumulating statistics across chunks:
/// the streaming counterpart of `TensorDecoder`.
public struct ChunkEncoder {
  /// The dtype written.
  public let target: DType
  /// What happens to finite values the target cannot hold.
  public let policy: OverflowPolicy
  /// Everything seen so far (overflowed and non-finite counts).
  public private(set) var statistics = EncodeStatistics()
  /// Whether `encode(_:into:)` writes past the cache (output not read again soon).
  public let bypassCache: Bool
  private var buffer: [UInt8] = []

  /// An encoder to `target` (one of `FloatCodec.supported`). `bypassCache`: what it writes into
  /// memory goes to the disk, not to a reader (see `FloatCodec.encode`).
  public init(target: DType, policy: OverflowPolicy, bypassCache: Bool = false) throws {
    guard FloatCodec.supported.contains(target) else {
      throw CodecError.unsupported(
        file: "-", tensor: "-", reason: "\(target.rawValue) is not a float type this codec writes")
    }
    self.target = target
    self.policy = policy
    self.bypassCache = bypassCache
  }

  /// Bytes per value of the target.
  public var width: Int { target.bitWidth / 8 }

  /// Encodes `values` into `output` (at least `values.count × width` bytes); returns bytes written.
  @discardableResult
  public mutating func encode(_ values: UnsafeBufferPointer<Float>, into output: UnsafeMutableRawBufferPointer) -> Int {
    statistics += FloatCodec.encode(values, to: target, into: output, policy: policy, bypassCache: bypassCache)
    return values.count * width
  }

  /// Encodes `values` and appends the bytes to `sink` (through an internal reusable buffer).
  public mutating func encode(_ values: UnsafeBufferPointer<Float>, into sink: TensorSink) throws {
    let bytes = values.count * width
    if buffer.count < bytes { buffer = [UInt8](repeating: 0, count: bytes) }
    let stats = buffer.withUnsafeMutableBytes { FloatCodec.encode(values, to: target, into: $0, policy: policy) }
    statistics += stats
    try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<bytes])) }
  }

  /// Throws `CodecError.outOfRange` naming the tensor when the policy is `.refuse` and any value
  /// overflowed (the output must then be abandoned).
  public func checkRefusal(file: String, tensor: String) throws {
    if policy == .refuse, statistics.overflowed > 0 {
      throw CodecError.outOfRange(file: file, tensor: tensor, target: target, count: statistics.overflowed)
    }
  }
}

/// Decode → encode in one streamed pass: what `convert` does per tensor.
public enum Transcoder {
  /// Streams `decoder`'s values to `target` bytes in `sink`, chunk by chunk. Under `.refuse`,
  /// throws `CodecError.outOfRange` after the pass if anything overflowed (caller abandons output).
  @discardableResult
  public static func transcode(
    _ decoder: TensorDecoder, to target: DType, policy: OverflowPolicy, sink: TensorSink, file: String,
    chunkElements: Int = TensorDecoder.defaultChunk
  ) throws -> EncodeStatistics {
    var encoder = try ChunkEncoder(target: target, policy: policy)
    try decoder.forEachChunk(chunkElements: chunkElements) { _, values in try encoder.encode(values, into: sink) }
    try encoder.checkRefusal(file: file, tensor: decoder.name)
    return encoder.statistics
  }

  /// Counts what encoding `decoder`'s values to `target` would overflow, writing nothing.
  public static func count(_ decoder: TensorDecoder, to target: DType, chunkElements: Int = TensorDecoder.defaultChunk)
    throws -> EncodeStatistics
  {
    var encoder = try ChunkEncoder(target: target, policy: .refuse)
    var scratch = [UInt8](repeating: 0, count: min(chunkElements, max(decoder.elementCount, 1)) * encoder.width)
    decoder.forEachChunk(chunkElements: chunkElements) { _, values in
      scratch.withUnsafeMutableBytes { _ = encoder.encode(values, into: $0) }
    }
    return encoder.statistics
  }
}
