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
    var correlations: [Double] = []
    if width > 1 {
      correlations.append(
        ImageStatistics.correlation(count: height * (width - 1)) { visit in
          for row in 0..<height {
            for column in 0..<(width - 1) {
              visit(luma[row * width + column], luma[row * width + column + 1])
            }
          }
        })
    }
    if height > 1 {
      correlations.append(
        ImageStatistics.correlation(count: (height - 1) * width) { visit in
          for index in 0..<((height - 1) * width) { visit(luma[index], luma[index + width]) }
        })
    }
    neighbourCorrelation =
      correlations.isEmpty ? 1 : correlations.reduce(0, +) / Double(correlations.count)

    let sorted = luma.sorted()
    lumaPercentile1 = ImageStatistics.percentile(sorted, 1)
    lumaPercentile99 = ImageStatistics.percentile(sorted, 99)

    var clipped = 0
    for position in 0..<plane {
      let red = FloatImage.byte(image.values[position])
      let green = FloatImage.byte(image.values[plane + position])
      let blue = FloatImage.byte(image.values[2 * plane + position])
      let low = red == 0 || green == 0 || blue == 0
      let high = red == 255 || green == 255 || blue == 255
      if low && high { clipped += 1 }
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

  /// Pearson correlation of the `count` pairs `pairs` visits (two passes: means, then moments);
  /// 1 when either side is constant (nothing varies, so no noise).
  static func correlation(count: Int, _ pairs: ((Double, Double) -> Void) -> Void) -> Double {
    var sumA = 0.0
    var sumB = 0.0
    pairs { a, b in
      sumA += a
      sumB += b
    }
    let meanA = sumA / Double(count)
    let meanB = sumB / Double(count)
    var covariance = 0.0
    var varianceA = 0.0
    var varianceB = 0.0
    pairs { a, b in
      covariance += (a - meanA) * (b - meanB)
      varianceA += (a - meanA) * (a - meanA)
      varianceB += (b - meanB) * (b - meanB)
    }
    // Below this the image is flat to within float rounding: call it smooth.
    guard varianceA > 1e-12 * Double(count), varianceB > 1e-12 * Double(count) else { return 1 }
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
