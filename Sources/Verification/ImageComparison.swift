import Foundation

/// How one render compares with the reference render of the same prompt and seed.
public struct ImageComparison: Codable, Sendable, Equatable {
  /// Peak signal-to-noise ratio of the 8-bit images in dB, `nil` when they are identical (∞).
  public var psnr: Double?
  /// Mean structural similarity of the 8-bit images (see `ImageComparison.ssim`), 1 when identical.
  public var ssim: Double
  /// The largest absolute difference of any 8-bit channel value.
  public var maximumDifference: Int
  /// Fraction of 8-bit channel values that differ by more than 1.
  public var fractionDifferingByMoreThanOne: Double

  enum CodingKeys: String, CodingKey {
    case psnr, ssim, maximumDifference, fractionDifferingByMoreThanOne
  }

  /// Encodes `psnr` as `null` (not absent) for identical images, so readers see the key.
  public func encode(to encoder: Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    if let psnr {
      try container.encode(psnr, forKey: .psnr)
    } else {
      try container.encodeNil(forKey: .psnr)
    }
    try container.encode(ssim, forKey: .ssim)
    try container.encode(maximumDifference, forKey: .maximumDifference)
    try container.encode(fractionDifferingByMoreThanOne, forKey: .fractionDifferingByMoreThanOne)
  }

  /// Compares `image` with `reference` after both are quantized to 8 bits (⌊255·v⌋, as the PNGs
  /// hold them).
  /// - Throws: `VerificationError.sizeMismatch` or `.imageTooSmall` (SSIM needs 11×11).
  public init(_ image: FloatImage, reference: FloatImage) throws {
    try self.init(
      bytes: image.interleavedRGB(), reference: reference.interleavedRGB(), width: image.width,
      height: image.height, referenceWidth: reference.width, referenceHeight: reference.height)
  }

  /// Compares two interleaved 8-bit RGB images.
  /// - Throws: `VerificationError.sizeMismatch`, `.invalidImage` or `.imageTooSmall`.
  public init(
    bytes: [UInt8], reference: [UInt8], width: Int, height: Int,
    referenceWidth: Int, referenceHeight: Int
  ) throws {
    guard width == referenceWidth, height == referenceHeight else {
      throw VerificationError.sizeMismatch(
        first: "\(width)×\(height)", second: "\(referenceWidth)×\(referenceHeight)")
    }
    psnr = try ImageComparison.psnr(bytes, reference, width: width, height: height)
    ssim = try ImageComparison.ssim(bytes, reference, width: width, height: height)
    var largest = 0
    var differing = 0
    for (a, b) in zip(bytes, reference) {
      let difference = abs(Int(a) - Int(b))
      largest = max(largest, difference)
      if difference > 1 { differing += 1 }
    }
    maximumDifference = largest
    fractionDifferingByMoreThanOne = Double(differing) / Double(max(bytes.count, 1))
  }

  /// PSNR = 10·log10(255² / MSE) over every channel value of two interleaved 8-bit RGB images
  /// (scikit-image `peak_signal_noise_ratio` with `data_range=255`); `nil` when they are equal.
  /// - Throws: `VerificationError.invalidImage` when a buffer is not `3·width·height` bytes.
  public static func psnr(_ a: [UInt8], _ b: [UInt8], width: Int, height: Int) throws -> Double? {
    try validate(a, width: width, height: height)
    try validate(b, width: width, height: height)
    var sum = 0.0
    for (x, y) in zip(a, b) {
      let difference = Double(x) - Double(y)
      sum += difference * difference
    }
    guard sum > 0 else { return nil }
    let meanSquared = sum / Double(a.count)
    return 10 * log10(255 * 255 / meanSquared)
  }

  /// SSIM of Wang et al. (2004) on each RGB channel of two interleaved 8-bit images, averaged over
  /// the channels: an 11×11 Gaussian window with σ = 1.5 (SciPy's kernel, truncated at 3.5σ),
  /// K1 = 0.01, K2 = 0.03, L = 255, population covariances, and the mean over the pixels at least
  /// 5 away from every edge. This is scikit-image's `structural_similarity(a, b,
  /// channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
  /// use_sample_covariance=False)`; `sampleCovariance: true` gives scikit-image's default
  /// N/(N−1) covariance scaling instead (what `gaussian_weights=True` alone gives).
  /// - Throws: `VerificationError.invalidImage` or `.imageTooSmall` (below 11×11).
  public static func ssim(
    _ a: [UInt8], _ b: [UInt8], width: Int, height: Int, sampleCovariance: Bool = false
  ) throws -> Double {
    try validate(a, width: width, height: height)
    try validate(b, width: width, height: height)
    let radius = 5
    let window = 2 * radius + 1
    guard width >= window, height >= window else {
      throw VerificationError.imageTooSmall(
        width: width, height: height, minimum: window, measurement: "SSIM")
    }
    // scipy.ndimage._gaussian_kernel1d: exp(−x²/(2σ²)) normalised, radius int(3.5·1.5 + 0.5) = 5.
    let sigma = 1.5
    var kernel = (-radius...radius).map { exp(-0.5 * Double($0 * $0) / (sigma * sigma)) }
    let total = kernel.reduce(0, +)
    kernel = kernel.map { $0 / total }
    let covarianceScale =
      sampleCovariance ? Double(window * window) / Double(window * window - 1) : 1
    let c1 = (0.01 * 255.0) * (0.01 * 255.0)
    let c2 = (0.03 * 255.0) * (0.03 * 255.0)
    let plane = width * height
    // Only the cropped interior is averaged, and its windows lie inside the image, so no
    // border mode is needed (scikit-image's 'reflect' padding never reaches the result).
    let innerWidth = width - 2 * radius
    let innerHeight = height - 2 * radius
    var channelMeans: [Double] = []
    for channel in 0..<3 {
      var x = [Double](repeating: 0, count: plane)
      var y = x
      for position in 0..<plane {
        x[position] = Double(a[position * 3 + channel])
        y[position] = Double(b[position * 3 + channel])
      }
      let products: [[Double]] = [
        x, y, zip(x, x).map { $0 * $1 }, zip(y, y).map { $0 * $1 }, zip(x, y).map { $0 * $1 },
      ]
      let filtered = products.map {
        filterInterior($0, width: width, height: height, kernel: kernel, radius: radius)
      }
      var sum = 0.0
      for index in 0..<(innerWidth * innerHeight) {
        let ux = filtered[0][index]
        let uy = filtered[1][index]
        let vx = covarianceScale * (filtered[2][index] - ux * ux)
        let vy = covarianceScale * (filtered[3][index] - uy * uy)
        let vxy = covarianceScale * (filtered[4][index] - ux * uy)
        sum += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
      }
      channelMeans.append(sum / Double(innerWidth * innerHeight))
    }
    return channelMeans.reduce(0, +) / 3
  }

  /// The separable Gaussian filter evaluated at the interior pixels (those `radius` or more from
  /// every edge), row-major `[(height − 2r), (width − 2r)]`. Like SciPy's `gaussian_filter` it
  /// filters axis 0 (vertically) first, then axis 1.
  static func filterInterior(
    _ values: [Double], width: Int, height: Int, kernel: [Double], radius: Int
  ) -> [Double] {
    let innerWidth = width - 2 * radius
    let innerHeight = height - 2 * radius
    var vertical = [Double](repeating: 0, count: innerHeight * width)
    for row in 0..<innerHeight {
      for column in 0..<width {
        var sum = 0.0
        for tap in 0..<kernel.count {
          sum += kernel[tap] * values[(row + tap) * width + column]
        }
        vertical[row * width + column] = sum
      }
    }
    var result = [Double](repeating: 0, count: innerHeight * innerWidth)
    for row in 0..<innerHeight {
      for column in 0..<innerWidth {
        var sum = 0.0
        for tap in 0..<kernel.count {
          sum += kernel[tap] * vertical[row * width + column + tap]
        }
        result[row * innerWidth + column] = sum
      }
    }
    return result
  }

  static func validate(_ bytes: [UInt8], width: Int, height: Int) throws {
    guard width > 0, height > 0, bytes.count == 3 * width * height else {
      throw VerificationError.invalidImage(
        reason: "\(bytes.count) bytes for a \(width)×\(height) 8-bit RGB image")
    }
  }
}
