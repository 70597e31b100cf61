import Tensors

/// An 8-bit RGB image: `height` rows of `width` pixels, each three bytes R, G, B (row-major,
/// interleaved, as PNG and PIL store it).
public struct RGBImage: Sendable, Equatable {
  /// Pixels per row.
  public let width: Int
  /// Rows.
  public let height: Int
  /// `width · height · 3` bytes.
  public var pixels: [UInt8]

  /// An image from its bytes; `pixels.count` must be `width · height · 3`.
  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(
      width >= 0 && height >= 0 && pixels.count == width * height * 3,
      "\(pixels.count) bytes for a \(width)×\(height) RGB image")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// A `width`×`height` image filled with one colour.
  public init(width: Int, height: Int, red: UInt8, green: UInt8, blue: UInt8) {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for index in stride(from: 0, to: pixels.count, by: 3) {
      pixels[index] = red
      pixels[index + 1] = green
      pixels[index + 2] = blue
    }
    self.init(width: width, height: height, pixels: pixels)
  }

  /// How a value in [0, 1] becomes a byte.
  public enum Quantization: String, Sendable, CaseIterable {
    /// ⌊255·v⌋: A1111 (`(255. * x).astype(np.uint8)`) and ComfyUI (`np.clip(255. * i, 0, 255)
    /// .astype(np.uint8)`) both truncate, so files they write compare byte for byte. The default.
    case truncate
    /// round-half-even(255·v): diffusers' `numpy_to_pil` (`(images * 255).round()`).
    case round
  }

  /// The images of a decoder output `[N, 3, H, W]` (raw, about [-1, 1]), mapped to [0, 1] as
  /// clamp((x + 1) / 2, 0, 1) (sgm, diffusers, A1111, ComfyUI) and to bytes by `quantization`
  /// (truncation by default, like A1111 and ComfyUI). NaN becomes 0.
  public static func images(decoded: Tensor, quantization: Quantization = .truncate) -> [RGBImage] {
    images(unitRange: unitRange(decoded: decoded), quantization: quantization)
  }

  /// clamp((x + 1) / 2, 0, 1) element by element, as a new tensor of the same shape (NaN stays NaN,
  /// as with `torch.clamp`).
  public static func unitRange(decoded: Tensor) -> Tensor {
    let result = Tensor(zeros: decoded.shape)
    let source = decoded.pointer
    let target = result.pointer
    for index in 0..<decoded.count {
      let value = (source[index] + 1) / 2
      // min/max written out so NaN propagates (Swift.min/max would pick the other operand).
      target[index] = value < 0 ? 0 : (value > 1 ? 1 : value)
    }
    return result
  }

  /// The images of `[N, 3, H, W]` values already in [0, 1] (values outside are clamped; NaN → 0).
  public static func images(unitRange image: Tensor, quantization: Quantization = .truncate)
    -> [RGBImage]
  {
    precondition(
      image.shape.rank == 4 && image.shape[1] == 3,
      "RGB images need [N, 3, H, W], got \(image.shape)")
    let (batch, height, width) = (image.shape[0], image.shape[2], image.shape[3])
    let plane = height * width
    return (0..<batch).map { sample in
      let source = image.pointer + sample * 3 * plane
      var pixels = [UInt8](repeating: 0, count: plane * 3)
      for position in 0..<plane {
        for channel in 0..<3 {
          pixels[position * 3 + channel] = byte(source[channel * plane + position], quantization)
        }
      }
      return RGBImage(width: width, height: height, pixels: pixels)
    }
  }

  /// One value in [0, 1] as a byte; 255·v is a Float32 product as in NumPy/PyTorch.
  @inline(__always)
  static func byte(_ value: Float, _ quantization: Quantization) -> UInt8 {
    guard value == value else { return 0 }
    let scaled = Swift.min(Swift.max(value * 255, 0), 255)
    switch quantization {
    case .truncate: return UInt8(scaled)
    case .round: return UInt8(scaled.rounded(.toNearestOrEven))
    }
  }

  /// The image as a `[1, 3, H, W]` tensor in [-1, 1] (byte / 255 · 2 − 1), the encoder's input
  /// convention (diffusers' `VaeImageProcessor.preprocess`).
  public func encoderInput() -> Tensor {
    let plane = width * height
    let result = Tensor(zeros: [1, 3, height, width])
    for position in 0..<plane {
      for channel in 0..<3 {
        result.pointer[channel * plane + position] =
          Float(pixels[position * 3 + channel]) / 255 * 2 - 1
      }
    }
    return result
  }
}
