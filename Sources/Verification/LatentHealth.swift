import Foundation

/// The limits of the latent checks (see `LatentHealth`).
public struct LatentHealthThresholds: Codable, Sendable, Equatable {
  /// The final latent's standard deviation must be at most this. SDXL latents scaled by 0.13025
  /// have a standard deviation near 1 (the tiny fixtures' VAE is scaled to exactly 1; their good
  /// renders end at 0.65–2.73; v sampled as epsilon 6.5–15.5, a zeroed UNet output 13.7–15.1,
  /// random weights 16–17).
  public var maximumFinalDeviation: Double
  /// From one step to the next the latent's standard deviation may grow at most by this factor.
  /// Sampling shrinks it from σ_max towards ≈1 (good renders: never above ×0.9996); a model that
  /// amplifies its input makes it grow (v sampled as epsilon up to ×1.6, epsilon as v ×1.04–1.17).
  public var maximumStepGrowth: Double

  /// The defaults, measured on good and broken renders of the tiny fixtures
  /// (`Fixtures/verify/calibration.json`).
  public static let standard = LatentHealthThresholds(maximumFinalDeviation: 4, maximumStepGrowth: 1.1)

  /// Thresholds with every value given.
  public init(maximumFinalDeviation: Double, maximumStepGrowth: Double) {
    self.maximumFinalDeviation = maximumFinalDeviation
    self.maximumStepGrowth = maximumStepGrowth
  }
}

/// Checks on the latents of a sampling run: finite at every step, standard deviation not exploding.
public enum LatentHealth {
  /// Check names, in the order the checks run.
  public static let checkNames = ["finite_latents", "latent_scale", "latent_growth"]

  /// Checks `steps`, the latent after each sampler step in order (the last is the final latent),
  /// optionally preceded by the starting latent `initial` (the noise scaled as the sampler starts
  /// from it, not the unit-variance seed noise).
  /// - Throws: `VerificationError.invalidInput` when there are no steps.
  public static func check(
    steps: [[Float]], initial: [Float]? = nil, thresholds: LatentHealthThresholds = .standard
  ) throws -> [HealthCheck] {
    guard let final = steps.last, !final.isEmpty else {
      throw VerificationError.invalidInput(reason: "no latents to check")
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

    let deviations = ((initial.map { [$0] } ?? []) + steps).map(finiteDeviation)
    let finalDeviation = deviations.last ?? 0
    checks.append(
      HealthCheck(
        name: "latent_scale", value: finalDeviation, threshold: thresholds.maximumFinalDeviation,
        requirement: .atMost,
        explanation: finalDeviation <= thresholds.maximumFinalDeviation
          ? "the final latent's standard deviation is \(fmt(finalDeviation)) (SDXL latents are ≈ 1)"
          : "the final latent's standard deviation is \(fmt(finalDeviation)), far from SDXL's ≈ 1: "
            + "sampling diverged (wrong prediction type or schedule, broken UNet weights)"))

    var worstGrowth = 0.0, worstStep = 0
    for index in deviations.indices.dropFirst() where deviations[index - 1] > 0 {
      let growth = deviations[index] / deviations[index - 1]
      if growth > worstGrowth {
        worstGrowth = growth
        worstStep = index
      }
    }
    // Steps are counted from 1; with the initial latent prepended, index k is after step k.
    let stepNumber = initial == nil ? worstStep + 1 : worstStep
    checks.append(
      HealthCheck(
        name: "latent_growth", value: worstGrowth, threshold: thresholds.maximumStepGrowth,
        requirement: .atMost,
        explanation: worstGrowth <= thresholds.maximumStepGrowth
          ? "the latent's standard deviation never grows by more than ×\(fmt(worstGrowth)) in a step"
          : "the latent's standard deviation grows ×\(fmt(worstGrowth)) at step \(stepNumber): the model "
            + "amplifies its input instead of denoising"))
    return checks
  }

  /// Standard deviation over the finite values (0 when none is finite).
  static func finiteDeviation(_ values: [Float]) -> Double {
    let finite = values.filter(\.isFinite).map(Double.init)
    return ImageStatistics.meanAndDeviation(finite).deviation
  }

  static func fmt(_ value: Double) -> String { String(format: "%.3g", value) }
}
