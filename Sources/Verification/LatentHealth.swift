import Foundation

/// The limits of the latent checks (see `LatentHealth`).
public struct LatentHealthThresholds: Codable, Sendable, Equatable {
  /// After every step the latent's standard deviation may be at most this multiple of the
  /// √(σ² + 1) a sample at that noise level has (σ the step's target noise level, 1 the standard
  /// deviation of SDXL latents scaled by 0.13025; the tiny fixtures' VAE is scaled to exactly 1).
  /// At the end σ = 0, so this bounds the final latent's standard deviation. Worst step on the
  /// tiny fixtures (`Fixtures/verify/calibration.json`, `max_scale_ratio`): good renders 0.92–1.39;
  /// a v model sampled as epsilon 4.9–13.9, a zeroed UNet output layer 13.7–15.1, random weights
  /// 16.2–17.4, CFG 30 1.6–4.5 (epsilon) and 1.8–4.8 (v).
  public var maximumScaleRatio: Double

  /// The defaults (see the property).
  public static let standard = LatentHealthThresholds(maximumScaleRatio: 4)

  /// Thresholds with every value given.
  public init(maximumScaleRatio: Double) {
    self.maximumScaleRatio = maximumScaleRatio
  }
}

/// Checks on the latents of a sampling run: finite at every step, standard deviation not exploding.
public enum LatentHealth {
  /// Check names, in the order the checks run.
  public static let checkNames = ["finite_latents", "latent_scale"]

  /// Checks `steps`, the latent after each sampler step in order (the last is the final latent).
  /// - Parameters:
  ///   - sigmas: the run's σ schedule (`steps.count + 1` values, the last 0, as samplers take
  ///     it); the latent after step i is compared with √(σᵢ₊₁² + 1). Without it only the final
  ///     latent is compared (with 1).
  ///   - initial: the starting latent (the noise already scaled by σ₀ or √(1+σ₀²)), checked for
  ///     finiteness.
  /// - Throws: `VerificationError.invalidInput` when there are no steps or the sigmas do not fit.
  public static func check(
    steps: [[Float]], sigmas: [Float]? = nil, initial: [Float]? = nil,
    thresholds: LatentHealthThresholds = .standard
  ) throws -> [HealthCheck] {
    guard let final = steps.last, !final.isEmpty else {
      throw VerificationError.invalidInput(reason: "no latents to check")
    }
    if let sigmas, sigmas.count != steps.count + 1 {
      throw VerificationError.invalidInput(
        reason: "\(sigmas.count) sigmas for \(steps.count) steps (needs \(steps.count + 1))")
    }
    var checks: [HealthCheck] = []
    let badSteps = steps.indices.filter { !steps[$0].allSatisfy(\.isFinite) }
    let initialBad = initial.map { !$0.allSatisfy(\.isFinite) } ?? false
    let badCount = badSteps.count + (initialBad ? 1 : 0)
    var finiteExplanation = "every latent of the \(steps.count) steps is finite"
    if initialBad {
      finiteExplanation = "the initial noise latent already holds NaN or infinity"
    } else if let first = badSteps.first {
      finiteExplanation =
        "the latent holds NaN or infinity from step \(first + 1) of \(steps.count) on "
        + "(\(badSteps.count) steps affected): a NaN/inf weight or an overflow in the UNet"
    }
    checks.append(
      HealthCheck(
        name: "finite_latents", value: Double(badCount), threshold: 0, requirement: .atMost,
        explanation: finiteExplanation))

    // The worst ratio of the latent's standard deviation to a clean sample's at its noise level.
    var worst = 0.0
    var worstStep = steps.count - 1
    let indices = sigmas == nil ? [steps.count - 1] : Array(steps.indices)
    for index in indices {
      let sigma = Double(sigmas?[index + 1] ?? 0)
      let ratio = finiteDeviation(steps[index]) / (sigma * sigma + 1).squareRoot()
      if ratio > worst || !ratio.isFinite {
        worst = ratio.isFinite ? ratio : .greatestFiniteMagnitude
        worstStep = index
      }
    }
    let finalDeviation = finiteDeviation(final)
    let passed = worst <= thresholds.maximumScaleRatio
    checks.append(
      HealthCheck(
        name: "latent_scale", value: worst, threshold: thresholds.maximumScaleRatio,
        requirement: .atMost,
        explanation: passed
          ? "the latent stays within ×\(fmt(worst)) of a clean sample's spread at every noise level; the "
            + "final latent's standard deviation is \(fmt(finalDeviation)) (SDXL latents are ≈ 1)"
          : "at step \(worstStep + 1) the latent's standard deviation is ×\(fmt(worst)) what a sample at that "
            + "noise level has (final \(fmt(finalDeviation)); SDXL latents are ≈ 1): sampling diverged "
            + "(wrong prediction type or schedule, broken UNet weights)"))
    return checks
  }

  /// Standard deviation over the finite values (0 when none is finite).
  static func finiteDeviation(_ values: [Float]) -> Double {
    let finite = values.filter(\.isFinite).map(Double.init)
    return ImageStatistics.meanAndDeviation(finite).deviation
  }

  static func fmt(_ value: Double) -> String { String(format: "%.3g", value) }
}
