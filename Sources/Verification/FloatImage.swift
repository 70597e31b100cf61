import Diffusion
import Foundation
import Tensors

/// An RGB image as three planes of Float values, nominally in [0, 1]: what the VAE decoder gives
/// after clamp((x + 1)/2, 0, 1), or an 8-bit image divided by 255.
///
/// Values are kept as they come (NaN and ±∞ included) so the health checks can see them.
public struct FloatImage: Sendable, Equatable {
  /// Pixels per row.
  public let width: Int
  /// Rows.
  public let height: Int
  /// `[3, height, width]`, plane-major: the R plane, then G, then B, each row-major.
  public let values: [Float]

  /// The number of pixels (`width · height`).
  public var pixelCount: Int { width * height }

  /// An image from planar values; `values.count` must be `3 · width · height`.
  /// - Throws: `VerificationError.invalidImage` when the sizes disagree or are not positive.
  public init(width: Int, height: Int, values: [Float]) throws {
    guard width > 0, height > 0 else {
      throw VerificationError.invalidImage(reason: "size \(width)×\(height) is empty")
    }
    guard values.count == 3 * width * height else {
      throw VerificationError.invalidImage(
        reason:
          "\(values.count) values for a \(width)×\(height) RGB image (needs \(3 * width * height))")
    }
    self.width = width
    self.height = height
    self.values = values
  }

  /// Sample `sample` of an `[N, 3, H, W]` tensor, or a `[3, H, W]` tensor, in [0, 1].
  /// - Throws: `VerificationError.invalidImage` for any other shape or a sample out of range.
  public init(tensor: Tensor, sample: Int = 0) throws {
    let shape = tensor.shape
    if shape.rank == 3, shape[0] == 3, sample == 0 {
      try self.init(width: shape[2], height: shape[1], values: tensor.scalars)
      return
    }
    guard shape.rank == 4, shape[1] == 3, sample >= 0, sample < shape[0] else {
      throw VerificationError.invalidImage(
        reason: "tensor \(shape) (sample \(sample)) is not an RGB image [N, 3, H, W] or [3, H, W]")
    }
    let plane = 3 * shape[2] * shape[3]
    let start = tensor.pointer + sample * plane
    try self.init(
      width: shape[3], height: shape[2],
      values: Array(UnsafeBufferPointer(start: start, count: plane)))
  }

  /// An 8-bit image stored interleaved (R, G, B per pixel, rows top to bottom, as PNG stores it),
  /// each byte divided by 255.
  /// - Throws: `VerificationError.invalidImage` when `bytes.count ≠ 3 · width · height`.
  public init(width: Int, height: Int, interleavedRGB bytes: [UInt8]) throws {
    guard width > 0, height > 0, bytes.count == 3 * width * height else {
      throw VerificationError.invalidImage(
        reason:
          "\(bytes.count) bytes for a \(width)×\(height) 8-bit RGB image (needs \(3 * width * height))"
      )
    }
    let plane = width * height
    var values = [Float](repeating: 0, count: 3 * plane)
    for position in 0..<plane {
      for channel in 0..<3 {
        values[channel * plane + position] = Float(bytes[position * 3 + channel]) / 255
      }
    }
    try self.init(width: width, height: height, values: values)
  }

  /// The image as interleaved 8-bit RGB, each value mapped to ⌊255·v⌋ after clamping to [0, 1]
  /// (A1111 and ComfyUI truncate the same way), NaN to 0.
  public func interleavedRGB() -> [UInt8] {
    let plane = pixelCount
    var bytes = [UInt8](repeating: 0, count: 3 * plane)
    for position in 0..<plane {
      for channel in 0..<3 {
        bytes[position * 3 + channel] = FloatImage.byte(values[channel * plane + position])
      }
    }
    return bytes
  }

  /// The same image after a round trip through 8 bits (what a PNG of it holds).
  public func quantized() -> FloatImage {
    // Sizes are already validated, so the init cannot fail.
    let values = values.map { Float(FloatImage.byte($0)) / 255 }
    return FloatImage(validatedWidth: width, height: height, values: values)
  }

  /// Rec. 601 luma 0.299 R + 0.587 G + 0.114 B per pixel (row-major); non-finite values count as 0.
  public func luma() -> [Float] {
    let plane = pixelCount
    var result = [Float](repeating: 0, count: plane)
    for position in 0..<plane {
      let red = FloatImage.finite(values[position])
      let green = FloatImage.finite(values[plane + position])
      let blue = FloatImage.finite(values[2 * plane + position])
      result[position] = 0.299 * red + 0.587 * green + 0.114 * blue
    }
    return result
  }

  init(validatedWidth width: Int, height: Int, values: [Float]) {
    self.width = width
    self.height = height
    self.values = values
  }

  /// ⌊255·clamp(v, 0, 1)⌋ in Float32 arithmetic as NumPy does it; NaN → 0.
  @inline(__always)
  static func byte(_ value: Float) -> UInt8 {
    guard value == value else { return 0 }
    return UInt8(Swift.min(Swift.max(value * 255, 0), 255))
  }

  @inline(__always)
  static func finite(_ value: Float) -> Float { value.isFinite ? value : 0 }
}

extension FloatImage {
  /// An 8-bit `RGBImage` (e.g. read from a PNG) as values / 255.
  public init(_ image: RGBImage) throws {
    try self.init(width: image.width, height: image.height, interleavedRGB: image.pixels)
  }

  /// The image in 8 bits (⌊255·v⌋, as PNGs written by A1111 and ComfyUI hold it).
  public func rgbImage() -> RGBImage {
    RGBImage(width: width, height: height, pixels: interleavedRGB())
  }

  /// The image as a `[1, 3, H, W]` tensor in [-1, 1] (v·2 − 1), the VAE encoder's input.
  public func encoderInput() -> Tensor {
    Tensor(shape: [1, 3, height, width], values: values.map { FloatImage.finite($0) * 2 - 1 })
  }
}
