import Foundation

/// The measurements the image health checks are made of, computed once per image.
///
/// Everything except `nonFiniteCount` is computed with non-finite values replaced by 0, and the
/// luma statistics use Rec. 601 weights (`FloatImage.luma()`). `Scripts/fixtures/
/// make_verify_calibration.py` computes the same numbers in NumPy; the thresholds in
/// `ImageHealthThresholds` were chosen from them.
public struct ImageStatistics: Codable, Sendable, Equatable {
  /// Number of channel values that are NaN or ±∞.
  public var nonFiniteCount: Int
  /// Mean luma, 0 (black) … 1 (white).
  public var lumaMean: Double
  /// Standard deviation of luma over the image (population).
  public var lumaStandardDeviation: Double
  /// The largest per-channel standard deviation: a flat but coloured image has 0 here too.
  public var maximumChannelStandardDeviation: Double
  /// Mean of the Pearson correlations between horizontally and vertically adjacent luma values:
  /// ≈ 1 for drawn or photographed content, ≈ 0 for white noise. 1 for a constant image (no noise).
  public var neighbourCorrelation: Double
  /// 1st and 99th percentiles of luma (NumPy's default linear interpolation).
  public var lumaPercentile1: Double
  /// See `lumaPercentile1`.
  public var lumaPercentile99: Double
  /// Fraction of pixels clipped at both ends: one channel at 8-bit 0 and another at 255 (pure,
  /// fully saturated colours such as (255, 0, 0) or (255, 255, 0)), the mark of burned images.
  /// Black and white backgrounds, which clip all channels at one end, do not count.
  public var clippedColourFraction: Double
  /// Median luma of the outer frame (`frameWidth` pixels wide on every side): the background level.
  public var borderMedianLuma: Double
  /// The width of the frame used for `borderMedianLuma`: max(1, ⌊min(W, H)/16⌋).
  public var frameWidth: Int

  /// Measures `image`.
  public init(_ image: FloatImage) {
    let plane = image.pixelCount
    let (width, height) = (image.width, image.height)
    nonFiniteCount = image.values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
    let luma = image.luma().map(Double.init)
    let (mean, deviation) = ImageStatistics.meanAndDeviation(luma)
    lumaMean = mean
    lumaStandardDeviation = deviation
    maximumChannelStandardDeviation =
      (0..<3).map { channel in
        ImageStatistics.meanAndDeviation(
          image.values[channel * plane..<(channel + 1) * plane].map {
            Double(FloatImage.finite($0))
          }
        ).deviation
      }.max() ?? 0

    // Neighbour correlation, horizontal and vertical pairs separately, then averaged.
    var horizontal: [(Double, Double)] = []
    var vertical: [(Double, Double)] = []
    horizontal.reserveCapacity(height * max(width - 1, 0))
    vertical.reserveCapacity(max(height - 1, 0) * width)
    for row in 0..<height {
      for column in 0..<width {
        let value = luma[row * width + column]
        if column + 1 < width { horizontal.append((value, luma[row * width + column + 1])) }
        if row + 1 < height { vertical.append((value, luma[(row + 1) * width + column])) }
      }
    }
    let correlations = [horizontal, vertical].filter { !$0.isEmpty }.map(
      ImageStatistics.correlation)
    neighbourCorrelation =
      correlations.isEmpty ? 1 : correlations.reduce(0, +) / Double(correlations.count)

    let sorted = luma.sorted()
    lumaPercentile1 = ImageStatistics.percentile(sorted, 1)
    lumaPercentile99 = ImageStatistics.percentile(sorted, 99)

    var clipped = 0
    for position in 0..<plane {
      let bytes = (0..<3).map { FloatImage.byte(image.values[$0 * plane + position]) }
      if bytes.contains(0) && bytes.contains(255) { clipped += 1 }
    }
    clippedColourFraction = Double(clipped) / Double(plane)

    frameWidth = max(1, min(width, height) / 16)
    var frame: [Double] = []
    for row in 0..<height {
      for column in 0..<width
      where row < frameWidth || row >= height - frameWidth || column < frameWidth
        || column >= width - frameWidth
      {
        frame.append(luma[row * width + column])
      }
    }
    borderMedianLuma = ImageStatistics.percentile(frame.sorted(), 50)
  }

  /// Mean and population standard deviation.
  static func meanAndDeviation(_ values: [Double]) -> (mean: Double, deviation: Double) {
    guard !values.isEmpty else { return (0, 0) }
    let mean = values.reduce(0, +) / Double(values.count)
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
    return (mean, variance.squareRoot())
  }

  /// Pearson correlation of pairs; 1 when either side is constant (nothing varies, so no noise).
  static func correlation(_ pairs: [(Double, Double)]) -> Double {
    let count = Double(pairs.count)
    let meanA = pairs.reduce(0) { $0 + $1.0 } / count
    let meanB = pairs.reduce(0) { $0 + $1.1 } / count
    var covariance = 0.0
    var varianceA = 0.0
    var varianceB = 0.0
    for (a, b) in pairs {
      covariance += (a - meanA) * (b - meanB)
      varianceA += (a - meanA) * (a - meanA)
      varianceB += (b - meanB) * (b - meanB)
    }
    // Below this the image is flat to within float rounding: call it smooth.
    guard varianceA > 1e-12 * count, varianceB > 1e-12 * count else { return 1 }
    return covariance / (varianceA * varianceB).squareRoot()
  }

  /// The `q`-th percentile of ascending `sorted` values with NumPy's default linear interpolation.
  static func percentile(_ sorted: [Double], _ q: Double) -> Double {
    guard let first = sorted.first else { return 0 }
    let position = q / 100 * Double(sorted.count - 1)
    let low = Int(position.rounded(.down))
    let high = min(low + 1, sorted.count - 1)
    let fraction = position - Double(low)
    return low >= sorted.count - 1
      ? (sorted.last ?? first) : sorted[low] + (sorted[high] - sorted[low]) * fraction
  }
}
