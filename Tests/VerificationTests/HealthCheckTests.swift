import Diffusion
import Foundation
import Testing

@testable import Verification

/// The image and latent checks on synthetic images with a known defect, one defect each.
@Suite struct HealthCheckTests {
  /// A 64×64 drawing: a coloured disc on a background of the given grey level.
  static func drawing(background: Float = 1, disc: (Float, Float, Float) = (0.85, 0.12, 0.12))
    -> FloatImage
  {
    let size = 64
    let plane = size * size
    var values = [Float](repeating: background, count: 3 * plane)
    for row in 0..<size {
      for column in 0..<size {
        let dx = Float(column) - 30
        let dy = Float(row) - 34
        guard dx * dx + dy * dy < 18 * 18 else { continue }
        let colour = [disc.0, disc.1, disc.2]
        for channel in 0..<3 { values[channel * plane + row * size + column] = colour[channel] }
      }
    }
    return FloatImage(validatedWidth: size, height: size, values: values)
  }

  static func failed(_ checks: [HealthCheck]) -> Set<String> {
    Set(checks.filter { !$0.passed }.map(\.name))
  }

  @Test func aCleanDrawingPassesEverything() {
    let checks = ImageHealth.check(Self.drawing(), expectation: .lightBackground)
    #expect(
      checks.map(\.name) == [
        "finite", "not_blank", "not_noise", "not_washed_out", "not_burned",
        "light_background",
      ])
    #expect(Self.failed(checks).isEmpty, "\(checks.map(\.line))")
    let dark = ImageHealth.check(Self.drawing(background: 0.01), expectation: .darkBackground)
    #expect(Self.failed(dark).isEmpty, "\(dark.map(\.line))")
  }

  @Test func eachDefectFailsItsOwnCheck() throws {
    var values = Self.drawing().values
    values[100] = .nan
    values[5000] = .infinity
    let nan = try FloatImage(width: 64, height: 64, values: values)
    let nanChecks = ImageHealth.check(nan)
    #expect(Self.failed(nanChecks) == ["finite"])
    #expect(nanChecks[0].value == 2 && nanChecks[0].explanation.contains("NaN"))

    let flat = try FloatImage(
      width: 64, height: 64, values: [Float](repeating: 0.3, count: 3 * 4096))
    #expect(Self.failed(ImageHealth.check(flat)).contains("not_blank"))

    var generator = TorchGenerator(seed: 5)
    let noise = try FloatImage(width: 64, height: 64, values: generator.rand(count: 3 * 4096))
    let noiseChecks = ImageHealth.check(noise)
    #expect(Self.failed(noiseChecks) == ["not_noise"], "\(noiseChecks.map(\.line))")

    // Washed out: the drawing squeezed into a narrow grey band.
    let grey = try FloatImage(
      width: 64, height: 64, values: Self.drawing().values.map { 0.45 + 0.1 * $0 })
    let greyChecks = ImageHealth.check(grey)
    #expect(Self.failed(greyChecks) == ["not_washed_out"], "\(greyChecks.map(\.line))")
    // The same low contrast near black is a dark image, not a washed-out one.
    let darkLow = try FloatImage(
      width: 64, height: 64, values: Self.drawing().values.map { 0.02 + 0.1 * $0 })
    #expect(!Self.failed(ImageHealth.check(darkLow)).contains("not_washed_out"))

    // Burned: a big disc of pure clipped colour.
    let burned = Self.drawing(background: 0.9, disc: (1, 0, 0))
    let burnedChecks = ImageHealth.check(burned)
    #expect(Self.failed(burnedChecks) == ["not_burned"], "\(burnedChecks.map(\.line))")

    // A grey background where black was asked for.
    let greyBackground = ImageHealth.check(
      Self.drawing(background: 0.15), expectation: .darkBackground)
    #expect(Self.failed(greyBackground) == ["dark_background"])
    let notWhite = ImageHealth.check(Self.drawing(background: 0.8), expectation: .lightBackground)
    #expect(Self.failed(notWhite) == ["light_background"])
    let fullRange = ImageHealth.check(
      Self.drawing(background: 0.6, disc: (0.05, 0.05, 0.05)), expectation: .fullRange)
    #expect(Self.failed(fullRange) == ["full_range"])
  }

  @Test func expectationsFollowThePrompt() {
    #expect(RangeExpectation.implied(by: "1girl, Black Background, simple") == .darkBackground)
    #expect(RangeExpectation.implied(by: "red circle, white background") == .lightBackground)
    #expect(RangeExpectation.implied(by: "black background, white background") == .none)
    #expect(RangeExpectation.implied(by: "a cat") == .none)
  }

  @Test func latentChecks() throws {
    // A healthy run: the latent's spread follows √(σ² + 1) down to ≈ 1.
    let sigmas: [Float] = [14.6, 8, 4, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.02, 0]
    let pattern: [Float] = (0..<64).map { Float(($0 % 7) - 3) / 2 }
    let healthy = sigmas.dropFirst().map { sigma in
      pattern.map { $0 * (sigma * sigma + 1).squareRoot() }
    }
    let good = try LatentHealth.check(steps: healthy, sigmas: sigmas)
    #expect(good.map(\.name) == LatentHealth.checkNames)
    #expect(Self.failed(good).isEmpty, "\(good.map(\.line))")
    #expect(abs(good[1].value - 1) < 0.02)  // 64 values of a period-7 pattern: std ≈ 1

    var broken = healthy
    broken[6][3] = Float.nan
    broken[7][0] = Float.nan
    let nan = try LatentHealth.check(steps: broken, sigmas: sigmas)
    #expect(Self.failed(nan) == ["finite_latents"])
    #expect(nan[0].value == 2 && nan[0].explanation.contains("step 7"))

    // A zeroed UNet under epsilon sampling never removes the noise: the spread stays at σ_max.
    let stuck = sigmas.dropFirst().map { _ in pattern.map { $0 * 14.6 } }
    let grown = try LatentHealth.check(steps: stuck, sigmas: sigmas)
    #expect(Self.failed(grown) == ["latent_scale"])
    #expect(grown[1].explanation.contains("step 10"))
    // Without sigmas only the final latent is judged, against 1.
    #expect(Self.failed(try LatentHealth.check(steps: stuck)) == ["latent_scale"])
    #expect(Self.failed(try LatentHealth.check(steps: healthy)).isEmpty)

    #expect(throws: VerificationError.self) { try LatentHealth.check(steps: []) }
    #expect(throws: VerificationError.self) {
      try LatentHealth.check(steps: healthy, sigmas: [1, 0])
    }
  }

  @Test func reportCollectsFailuresAndEncodes() throws {
    let good = try VerifyReport.Image(
      prompt: "red circle, white background", seed: 1, image: Self.drawing(), file: "out/1.png")
    #expect(good.expectation == .lightBackground && good.passed)
    let bad = try VerifyReport.Image(
      prompt: "red circle, black background", seed: 2, image: Self.drawing(background: 0.15))
    #expect(!bad.passed)
    let compared = try VerifyReport.Image(
      prompt: "x", seed: 3, image: Self.drawing(background: 0.9),
      reference: (Self.drawing(), ReferenceThresholds.default(for: .fp16)))
    #expect(compared.referenceCheck?.passed == false)

    let report = VerifyReport(
      model: "m.safetensors", reference: "ref.safetensors", change: .fp16, settings: "quick",
      images: [good, bad, compared], contactSheet: "out/sheet.png")
    #expect(!report.passed)
    #expect(report.failures.count == 2)
    #expect(
      report.failures[0].contains("image 2") && report.failures[0].contains("dark_background"))
    #expect(report.failures[1].contains("image 3") && report.failures[1].contains("reference"))
    let text = report.text
    #expect(text.hasPrefix("FAILED: m.safetensors"))
    #expect(text.contains("FAIL dark_background") && text.contains("contact sheet: out/sheet.png"))

    let data = try JSONEncoder().encode(report)
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    #expect(object["passed"] as? Bool == false)
    #expect((object["images"] as? [Any])?.count == 3)
    let decoded = try JSONDecoder().decode(VerifyReport.self, from: data)
    #expect(decoded.failures == report.failures)

    let empty = VerifyReport(model: "m", settings: "s", images: [])
    #expect(!empty.passed && empty.failures == ["no image was rendered"])
  }
}
