import Foundation

/// Everything `verify` found, for `--json` (Codable) and as text for people (`text`).
public struct VerifyReport: Codable, Sendable {
  /// One rendered image and its checks.
  public struct Image: Codable, Sendable {
    /// The prompt.
    public var prompt: String
    /// The negative prompt.
    public var negative: String
    /// The seed.
    public var seed: UInt64
    /// Pixels.
    public var width: Int, height: Int
    /// The PNG written, if any.
    public var file: String?
    /// What the prompt asked of the tonal range.
    public var expectation: RangeExpectation
    /// The measurements behind the image checks.
    public var statistics: ImageStatistics
    /// Image checks, then latent checks.
    public var checks: [HealthCheck]
    /// Against the reference render of the same prompt and seed, if there is a reference.
    public var comparison: ImageComparison?
    /// The reference check (PSNR and SSIM minimums), if there is a reference.
    public var referenceCheck: HealthCheck?

    /// Whether every check (and the reference check) passed.
    public var passed: Bool { checks.allSatisfy(\.passed) && (referenceCheck?.passed ?? true) }

    /// Runs the image and latent checks on a render.
    /// - Parameters:
    ///   - image: the decoded image in [0, 1].
    ///   - stepLatents: the latent after each step (the last is the final one); empty to skip the
    ///     latent checks.
    ///   - sigmas: the run's σ schedule (`stepLatents.count + 1` values), if known.
    ///   - initialLatent: the starting latent as the sampler starts from it (the noise already
    ///     scaled by σ₀ or √(1+σ₀²)), if known.
    ///   - expectation: what the prompt asks of the range; `nil` reads it from the prompt
    ///     (`RangeExpectation.implied(by:)`). Pass `.none` for models without zero-terminal SNR,
    ///     which cannot reach true black.
    ///   - reference: the reference render, and the thresholds for comparing with it.
    /// - Throws: `VerificationError` for inconsistent inputs (sizes of image and reference).
    public init(
      prompt: String, negative: String = "", seed: UInt64, image: FloatImage,
      stepLatents: [[Float]] = [],
      sigmas: [Float]? = nil, initialLatent: [Float]? = nil, expectation: RangeExpectation? = nil,
      file: String? = nil,
      reference: (image: FloatImage, thresholds: ReferenceThresholds)? = nil,
      imageThresholds: ImageHealthThresholds = .standard,
      latentThresholds: LatentHealthThresholds = .standard
    ) throws {
      self.prompt = prompt
      self.negative = negative
      self.seed = seed
      self.width = image.width
      self.height = image.height
      self.file = file
      let expectation = expectation ?? RangeExpectation.implied(by: prompt)
      self.expectation = expectation
      statistics = ImageStatistics(image)
      checks = ImageHealth.check(
        statistics: statistics, expectation: expectation, thresholds: imageThresholds)
      if !stepLatents.isEmpty {
        checks += try LatentHealth.check(
          steps: stepLatents, sigmas: sigmas, initial: initialLatent, thresholds: latentThresholds)
      }
      if let reference {
        let comparison = try ImageComparison(image, reference: reference.image)
        self.comparison = comparison
        referenceCheck = reference.thresholds.check(comparison)
      }
    }
  }

  /// The checkpoint verified.
  public var model: String
  /// The reference checkpoint, if any.
  public var reference: String?
  /// The kind of change the reference thresholds are for.
  public var change: ChangeKind?
  /// How the images were made (preset, sampler, steps, CFG, size), one line.
  public var settings: String
  /// Each rendered image.
  public var images: [Image]
  /// The behavioural probe, if it ran.
  public var probe: PredictionProbe.Result?
  /// The probe set against the markers, if it ran.
  public var prediction: PredictionVerdict?
  /// The contact sheet written, if any.
  public var contactSheet: String?
  /// Whether everything passed.
  public var passed: Bool
  /// One sentence per failed check, naming the image.
  public var failures: [String]
  /// Things worth knowing that do not fail the run (e.g. an inconclusive probe).
  public var warnings: [String]
  /// Where the time went (set by `VerifyRequest.run`).
  public var timings: Timings?

  /// A report; `passed`, `failures` and `warnings` are derived from the images and the verdict.
  public init(
    model: String, reference: String? = nil, change: ChangeKind? = nil, settings: String,
    images: [Image], probe: PredictionProbe.Result? = nil, prediction: PredictionVerdict? = nil,
    contactSheet: String? = nil, warnings: [String] = []
  ) {
    self.model = model
    self.reference = reference
    self.change = change
    self.settings = settings
    self.images = images
    self.probe = probe
    self.prediction = prediction
    self.contactSheet = contactSheet
    var failures: [String] = []
    var warnings = warnings
    if let prediction {
      if !prediction.passed { failures.append("prediction type: \(prediction.explanation)") }
      if prediction.inconclusive { warnings.append("prediction type: \(prediction.explanation)") }
    }
    for (index, image) in images.enumerated() {
      let name = "image \(index + 1) (\(VerifyReport.shortened(image.prompt)), seed \(image.seed))"
      for check in image.checks where !check.passed {
        failures.append("\(name): \(check.name): \(check.explanation)")
      }
      if let check = image.referenceCheck, !check.passed {
        failures.append("\(name): reference: \(check.explanation)")
      }
    }
    if images.isEmpty { failures.append("no image was rendered") }
    self.failures = failures
    self.warnings = warnings
    passed = failures.isEmpty
  }

  /// The probe's verdict and its measurements at every noise level, for people (also `info --probe`).
  public static func predictionLines(
    _ prediction: PredictionVerdict?, probe: PredictionProbe.Result?
  ) -> [String] {
    var lines: [String] = []
    if let prediction {
      lines.append(
        "prediction type: \(prediction.passed ? "PASS" : "FAIL") declared \(prediction.declared.rawValue), "
          + "behaves \(prediction.behaviour?.rawValue ?? "undetermined") (confidence \(String(format: "%.2f", prediction.confidence)))"
      )
      lines.append("  \(prediction.explanation)")
    }
    if let probe {
      for level in probe.levels {
        lines.append(
          String(
            format:
              "  t=%d σ=%.3g: cos(F, ε) %.3f, noise tracking %.3f, v agreement %.3f, v recovery %.3f"
              + ", F ≈ %.3f·ε %+.3f·x₀ → %@",
            level.timestep, level.sigma, level.noiseCosine, level.noiseTracking, level.vAgreement,
            level.vRecovery, level.noiseCoefficient, level.cleanCoefficient, level.vote?.rawValue ?? "undetermined"))
      }
    }
    return lines
  }

  /// The report for people: a verdict line, then each image's checks, the probe and the failures.
  public var text: String {
    var lines: [String] = []
    lines.append("\(passed ? "PASSED" : "FAILED"): \(model)")
    if let reference {
      lines.append("reference: \(reference)\(change.map { " (\($0.rawValue) thresholds)" } ?? "")")
    }
    lines.append("settings: \(settings)")
    if prediction != nil || probe != nil {
      lines.append("")
      lines += VerifyReport.predictionLines(prediction, probe: probe)
    }
    for (index, image) in images.enumerated() {
      lines.append("")
      lines.append(
        "image \(index + 1): \(image.passed ? "PASS" : "FAIL") \(image.width)×\(image.height) "
          + "seed \(image.seed)\(image.file.map { " → \($0)" } ?? "")")
      lines.append("  prompt: \(image.prompt)")
      if !image.negative.isEmpty { lines.append("  negative: \(image.negative)") }
      for check in image.checks { lines.append("  \(check.line)") }
      if let check = image.referenceCheck { lines.append("  \(check.line)") }
    }
    if let contactSheet {
      lines.append("")
      lines.append("contact sheet: \(contactSheet)")
    }
    if let timings {
      if contactSheet == nil { lines.append("") }
      lines.append(timings.line)
    }
    if !warnings.isEmpty {
      lines.append("")
      lines.append("warnings:")
      lines += warnings.map { "  - \($0)" }
    }
    if !failures.isEmpty {
      lines.append("")
      lines.append("failures:")
      lines += failures.map { "  - \($0)" }
    }
    return lines.joined(separator: "\n")
  }

  /// Where a verify run's time went, in seconds of wall time.
  public struct Timings: Codable, Sendable, Equatable {
    /// Opening the model and building the pipeline.
    public var load: Double
    /// Rendering the reference's images (0 without a reference).
    public var reference: Double
    /// Encoding the prompts.
    public var text: Double
    /// The sampler steps: every UNet evaluation of the images.
    public var steps: Double
    /// The prediction probe (its VAE encode, empty-prompt encode and UNet evaluations).
    public var probe: Double
    /// Decoding the images with the VAE.
    public var decode: Double
    /// The whole run, these and the rest (hashing, checks, PNG writing).
    public var total: Double
    /// Images per UNet batch, in order (e.g. [3] for a quick preset sampled as one batch).
    public var batches: [Int]
    /// Floating-point operations of every gemm the model's compute context ran (2·m·n·k), the
    /// reference's excluded: the dense work, for benchmarks that compare with a gemm peak.
    public var gemmOperations: Double

    public init(
      load: Double, reference: Double, text: Double, steps: Double, probe: Double, decode: Double, total: Double,
      batches: [Int], gemmOperations: Double
    ) {
      self.load = load
      self.reference = reference
      self.text = text
      self.steps = steps
      self.probe = probe
      self.decode = decode
      self.total = total
      self.batches = batches
      self.gemmOperations = gemmOperations
    }

    /// One line: `time: 41.2 s (load 3.1, text 2.0, steps 30.5 in batches of 3, probe 4.0, decode 1.6)`.
    public var line: String {
      String(
        format: "time: %.1f s (load %.1f%@, text %.1f, steps %.1f in batches of %@, probe %.1f, decode %.1f)", total,
        load, reference > 0 ? String(format: ", reference %.1f", reference) : "", text, steps,
        batches.map(String.init).joined(separator: "+"), probe, decode)
    }
  }

  static func shortened(_ prompt: String) -> String {
    let single = prompt.replacingOccurrences(of: "\n", with: " ")
    return single.count <= 40 ? "\"\(single)\"" : "\"\(single.prefix(37))…\""
  }
}
