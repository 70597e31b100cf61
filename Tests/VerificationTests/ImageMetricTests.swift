import Foundation
import TestSupport
import Testing

@testable import Verification

/// The goldens of `Scripts/fixtures/make_image_metric_goldens.py` (scikit-image and NumPy).
struct ImageMetricGoldens: Decodable {
  struct Pair: Decodable {
    let a: String, b: String
    let psnr: Double?
    let ssim: Double
    let ssimSampleCovariance: Double
  }
  let width: Int, height: Int
  let images: [String: [UInt8]]
  let statistics: [String: ImageStatistics]
  let pairs: [Pair]

  static func load() throws -> ImageMetricGoldens {
    let data = try Data(
      contentsOf: URL(fileURLWithPath: TestPaths.fixture("verify/image-metrics.json")))
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    return try decoder.decode(ImageMetricGoldens.self, from: data)
  }

  func image(_ name: String) throws -> FloatImage {
    try FloatImage(width: width, height: height, interleavedRGB: images[name] ?? [])
  }
}

@Suite struct ImageMetricTests {
  @Test func psnrAndSSIMMatchScikitImage() throws {
    let goldens = try ImageMetricGoldens.load()
    #expect(goldens.pairs.count == 8)
    for pair in goldens.pairs {
      let a = try #require(goldens.images[pair.a])
      let b = try #require(goldens.images[pair.b])
      let (w, h) = (goldens.width, goldens.height)
      let psnr = try ImageComparison.psnr(a, b, width: w, height: h)
      if let expected = pair.psnr {
        let value = try #require(psnr)
        #expect(abs(value - expected) < 1e-9, "PSNR \(pair.a)/\(pair.b): \(value) vs \(expected)")
      } else {
        #expect(psnr == nil, "identical images have infinite PSNR")
      }
      let ssim = try ImageComparison.ssim(a, b, width: w, height: h)
      #expect(abs(ssim - pair.ssim) < 1e-9, "SSIM \(pair.a)/\(pair.b): \(ssim) vs \(pair.ssim)")
      let sample = try ImageComparison.ssim(a, b, width: w, height: h, sampleCovariance: true)
      #expect(
        abs(sample - pair.ssimSampleCovariance) < 1e-9,
        "SSIM (sample covariance) \(pair.a)/\(pair.b): \(sample) vs \(pair.ssimSampleCovariance)")
    }
  }

  @Test func comparisonOfFloatImagesQuantizesFirst() throws {
    let goldens = try ImageMetricGoldens.load()
    let base = try goldens.image("base")
    let noisy = try goldens.image("noisy")
    let comparison = try ImageComparison(noisy, reference: base)
    let pair = try #require(goldens.pairs.first { $0.a == "base" && $0.b == "noisy" })
    #expect(abs((comparison.psnr ?? 0) - (pair.psnr ?? -1)) < 1e-9)
    #expect(abs(comparison.ssim - pair.ssim) < 1e-9)
    #expect(comparison.maximumDifference > 1)
    let same = try ImageComparison(base, reference: base)
    #expect(same.psnr == nil && same.ssim == 1 && same.maximumDifference == 0)
    #expect(same.fractionDifferingByMoreThanOne == 0)
    // JSON carries the identical case as null, never as an unencodable infinity.
    let json = String(decoding: try JSONEncoder().encode(same), as: UTF8.self)
    #expect(json.contains("\"psnr\":null"))
    let decoded = try JSONDecoder().decode(ImageComparison.self, from: Data(json.utf8))
    #expect(decoded == same)
  }

  @Test func comparisonRejectsMismatchedOrTinyImages() throws {
    let small = try FloatImage(width: 10, height: 12, values: [Float](repeating: 0.5, count: 360))
    let other = try FloatImage(width: 12, height: 10, values: [Float](repeating: 0.5, count: 360))
    #expect(throws: VerificationError.sizeMismatch(first: "10×12", second: "12×10")) {
      try ImageComparison(small, reference: other)
    }
    #expect(
      throws: VerificationError.imageTooSmall(
        width: 10, height: 12, minimum: 11, measurement: "SSIM")
    ) {
      try ImageComparison(small, reference: small)
    }
    #expect(throws: VerificationError.self) {
      try ImageComparison.psnr([1, 2, 3], [1, 2], width: 1, height: 1)
    }
  }

  @Test func statisticsMatchNumPy() throws {
    let goldens = try ImageMetricGoldens.load()
    for (name, expected) in goldens.statistics {
      let actual = ImageStatistics(try goldens.image(name))
      #expect(actual.nonFiniteCount == expected.nonFiniteCount)
      #expect(actual.frameWidth == expected.frameWidth)
      let pairs: [(String, Double, Double)] = [
        ("lumaMean", actual.lumaMean, expected.lumaMean),
        ("lumaStandardDeviation", actual.lumaStandardDeviation, expected.lumaStandardDeviation),
        (
          "maximumChannelStandardDeviation", actual.maximumChannelStandardDeviation,
          expected.maximumChannelStandardDeviation
        ),
        ("neighbourCorrelation", actual.neighbourCorrelation, expected.neighbourCorrelation),
        ("lumaPercentile1", actual.lumaPercentile1, expected.lumaPercentile1),
        ("lumaPercentile99", actual.lumaPercentile99, expected.lumaPercentile99),
        ("clippedColourFraction", actual.clippedColourFraction, expected.clippedColourFraction),
        ("borderMedianLuma", actual.borderMedianLuma, expected.borderMedianLuma),
      ]
      for (field, value, golden) in pairs {
        #expect(abs(value - golden) < 1e-6, "\(name).\(field): \(value) vs NumPy \(golden)")
      }
    }
  }

  @Test func floatImageLayoutsAgree() throws {
    // 2×1 image: pixel 0 = (255, 0, 128), pixel 1 = (1, 2, 3), interleaved → planar.
    let image = try FloatImage(width: 2, height: 1, interleavedRGB: [255, 0, 128, 1, 2, 3])
    let expected: [Float] = [255, 1, 0, 2, 128, 3].map { Float($0) / 255 }
    #expect(image.values == expected)
    #expect(image.interleavedRGB() == [255, 0, 128, 1, 2, 3])
    let nan = try FloatImage(width: 1, height: 1, values: [.nan, 2, -1])
    #expect(nan.interleavedRGB() == [0, 255, 0])
    #expect(throws: VerificationError.self) { try FloatImage(width: 2, height: 2, values: [0]) }
    #expect(throws: VerificationError.self) { try FloatImage(width: 0, height: 2, values: []) }
  }
}
