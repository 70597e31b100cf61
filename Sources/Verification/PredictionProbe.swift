import Checkpoint
import Diffusion
import Foundation
import Tensors

/// How a UNet behaves when asked to denoise: like an epsilon model, like a v model, or neither.
public enum ProbeBehaviour: String, Codable, Sendable {
  /// The output is the noise ε.
  case epsilon
  /// The output is v = α·ε − σ_vp·x̂₀ (mostly the −x₀ direction at high noise).
  case v
  /// Neither fits (random or broken weights, or a model the probe cannot read).
  case undetermined
}

/// A behavioural test of the prediction type: the UNet is run on a known clean latent x₀ noised
/// with seeded ε at a few noise levels, and its output F is regressed on ε and x₀.
///
/// With x = x₀ + σ·ε fed as x/√(σ²+1) at the timestep of σ, an epsilon model answers F ≈ ε and a
/// v model F ≈ α·ε − σ_vp·x̂₀, where α = 1/√(σ²+1), σ_vp = σ·α and x̂₀ is the model's guess of the
/// clean latent. The least-squares fit F ≈ a·ε + b·x₀ therefore gives a ≈ 1 for epsilon and
/// a ≈ α, b < 0 for v, and the fit explains most of F in both cases; for random weights it
/// explains almost nothing. Each level votes; the behaviour needs a two-thirds majority.
public enum PredictionProbe {
  /// The probe's settings; thresholds measured on the trained tiny fixtures and a random-weight
  /// model (`Fixtures/verify/calibration.json`).
  public struct Configuration: Codable, Sendable, Equatable {
    /// Timesteps to probe (indices into the 1000-step SDXL schedule).
    public var timesteps: [Int]
    /// Whether σ(t) comes from the zero-terminal-SNR schedule. The levels are chosen where the two
    /// schedules are close, so the probe does not depend much on it.
    public var zeroTerminalSNR: Bool
    /// Seed of ε (torch CPU `randn` of the latent's shape).
    public var seed: UInt64
    /// A level votes only when the fit explains at least this fraction of F's variance.
    public var minimumExplainedVariance: Double
    /// Largest distance of the normalised noise coefficient u = (a − α)/(1 − α) from 1 (epsilon)
    /// or from 0 (v) for the level to vote.
    public var coefficientTolerance: Double

    /// Four levels from t = 500 to 950 on the ordinary schedule, seed 0.
    public static let standard = Configuration(
      timesteps: [500, 650, 800, 950], zeroTerminalSNR: false, seed: 0,
      minimumExplainedVariance: 0.5, coefficientTolerance: 0.3)

    /// Settings with every value given.
    public init(
      timesteps: [Int], zeroTerminalSNR: Bool, seed: UInt64, minimumExplainedVariance: Double,
      coefficientTolerance: Double
    ) {
      self.timesteps = timesteps
      self.zeroTerminalSNR = zeroTerminalSNR
      self.seed = seed
      self.minimumExplainedVariance = minimumExplainedVariance
      self.coefficientTolerance = coefficientTolerance
    }
  }

  /// The measurements at one noise level.
  public struct Level: Codable, Sendable, Equatable {
    /// The timestep fed to the UNet.
    public var timestep: Int
    /// σ at that timestep.
    public var sigma: Double
    /// α = 1/√(σ²+1): the noise coefficient a v model's output has.
    public var alpha: Double
    /// cos(F, ε): ≈ 1 for an epsilon model.
    public var cosineWithNoise: Double
    /// cos(F, −x₀): the clean-latent direction a v model's output mostly points in.
    public var cosineWithNegativeClean: Double
    /// a in F ≈ a·ε + b·x₀.
    public var noiseCoefficient: Double
    /// b in F ≈ a·ε + b·x₀.
    public var cleanCoefficient: Double
    /// (a − α)/(1 − α): 1 for epsilon, 0 for v.
    public var normalisedNoiseCoefficient: Double
    /// R² of the fit (1 − residual / total variance of F).
    public var explainedVariance: Double
    /// ‖F‖/‖ε‖.
    public var outputNorm: Double
    /// What this level says.
    public var vote: ProbeBehaviour
  }

  /// The probe's finding.
  public struct Result: Codable, Sendable, Equatable {
    /// The behaviour the levels agree on, or `undetermined`.
    public var behaviour: ProbeBehaviour
    /// 0…1: the share of levels voting for `behaviour` times their mean explained variance
    /// (0 when undetermined).
    public var confidence: Double
    /// Each level's measurements.
    public var levels: [Level]
    /// The settings used.
    public var configuration: Configuration
    /// One sentence.
    public var summary: String
  }

  /// The probe's test image: colour gradients with a red disc, smooth and in the range real images
  /// use, so its VAE latent is a plausible x₀ for any SDXL model (the same picture as
  /// `probe_image` in `Scripts/fixtures/make_verify_calibration.py`).
  public static func testImage(width: Int, height: Int) throws -> FloatImage {
    let plane = width * height
    var values = [Float](repeating: 0, count: 3 * max(plane, 0))
    for row in 0..<max(height, 0) {
      for column in 0..<max(width, 0) {
        let u = (Double(column) + 0.5) / Double(width), v = (Double(row) + 0.5) / Double(height)
        var rgb = [0.15 + 0.7 * u, 0.2 + 0.6 * v, 0.85 - 0.7 * u]
        if (u - 0.55) * (u - 0.55) + (v - 0.45) * (v - 0.45) < 0.22 * 0.22 { rgb = [0.9, 0.15, 0.12] }
        for channel in 0..<3 { values[channel * plane + row * width + column] = Float(rgb[channel]) }
      }
    }
    return try FloatImage(width: width, height: height, values: values)
  }

  /// Probes a network given as a closure: `network(scaledInput, timestep)` → F, both `[1, C, H, W]`.
  /// - Parameter cleanLatent: x₀ `[1, C, H, W]`, e.g. a VAE-encoded test image (scaled latents).
  /// - Throws: `VerificationError.invalidInput` for a bad latent or output shape, and whatever
  ///   `network` throws.
  public static func run(
    cleanLatent: Tensor, configuration: Configuration = .standard,
    network: (_ scaledInput: Tensor, _ timestep: Float) throws -> Tensor
  ) throws -> Result {
    let shape = cleanLatent.shape
    guard shape.rank == 4, shape[0] == 1, shape.count > 1 else {
      throw VerificationError.invalidInput(reason: "probe latent \(shape) must be [1, C, H, W]")
    }
    guard !configuration.timesteps.isEmpty, configuration.timesteps.allSatisfy({ (0..<1000).contains($0) })
    else {
      throw VerificationError.invalidInput(
        reason: "probe timesteps \(configuration.timesteps) must be in 0…999 and not empty")
    }
    let clean = cleanLatent.scalars.map(Double.init)
    guard clean.allSatisfy(\.isFinite), clean.contains(where: { $0 != 0 }) else {
      throw VerificationError.invalidInput(reason: "probe latent must be finite and not all zero")
    }
    var generator = TorchGenerator(seed: configuration.seed)
    let noise = generator.randn(count: shape.count).map(Double.init)
    let schedule = DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: configuration.zeroTerminalSNR ? .comfyUI : nil)
    var levels: [Level] = []
    for timestep in configuration.timesteps {
      let sigma = Double(schedule.sigmas[timestep])
      let scale = (sigma * sigma + 1).squareRoot()
      let input = Tensor(shape: shape, values: zip(clean, noise).map { Float(($0 + sigma * $1) / scale) })
      let output = try network(input, Float(timestep))
      guard output.shape == shape else {
        throw VerificationError.invalidInput(reason: "network returned \(output.shape) for input \(shape)")
      }
      levels.append(
        measure(
          output: output.scalars.map(Double.init), noise: noise, clean: clean, timestep: timestep,
          sigma: sigma, configuration: configuration))
    }
    return decide(levels, configuration: configuration)
  }

  /// Probes `unet` with the conditioning `context` `[1, tokens, contextDimension]` and `y`
  /// `[1, admChannels]` (an encoded empty prompt, or zeros of the right shapes).
  /// - Throws: `VerificationError.invalidInput`, or the UNet's `ModelError` for mismatched shapes.
  public static func run(
    unet: UNet, context: Tensor, y: Tensor?, cleanLatent: Tensor,
    configuration: Configuration = .standard
  ) throws -> Result {
    let cache = try unet.crossAttention(for: [context])
    return try run(cleanLatent: cleanLatent, configuration: configuration) { input, timestep in
      try unet(input, timesteps: [timestep], crossAttention: cache, y: y)
    }
  }

  /// The regression and the vote at one level.
  static func measure(
    output: [Double], noise: [Double], clean: [Double], timestep: Int, sigma: Double,
    configuration: Configuration
  ) -> Level {
    let alpha = 1 / (sigma * sigma + 1).squareRoot()
    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
    let ff = dot(output, output), ee = dot(noise, noise), cc = dot(clean, clean)
    let fe = dot(output, noise), fc = dot(output, clean), ec = dot(noise, clean)
    func cosine(_ ab: Double, _ aa: Double, _ bb: Double) -> Double {
      aa > 0 && bb > 0 ? ab / (aa * bb).squareRoot() : 0
    }
    // Normal equations of F ≈ a·ε + b·x₀ (no intercept, as the v and ε targets have none).
    let determinant = ee * cc - ec * ec
    var a = 0.0, b = 0.0
    if determinant > 1e-12 * ee * cc {
      a = (fe * cc - fc * ec) / determinant
      b = (fc * ee - fe * ec) / determinant
    }
    let count = Double(output.count)
    let mean = output.reduce(0, +) / count
    let total = ff - count * mean * mean
    let residual = ff - 2 * (a * fe + b * fc) + a * a * ee + 2 * a * b * ec + b * b * cc
    let explained = total > 1e-12 * max(ff, 1e-30) && ff.isFinite ? max(0, 1 - residual / total) : 0
    let normalised = (a - alpha) / (1 - alpha)
    var vote = ProbeBehaviour.undetermined
    if explained >= configuration.minimumExplainedVariance && explained.isFinite {
      if abs(normalised - 1) <= configuration.coefficientTolerance {
        vote = .epsilon
      } else if abs(normalised) <= configuration.coefficientTolerance && b < 0 {
        vote = .v
      }
    }
    return Level(
      timestep: timestep, sigma: sigma, alpha: alpha, cosineWithNoise: cosine(fe, ff, ee),
      cosineWithNegativeClean: -cosine(fc, ff, cc), noiseCoefficient: a, cleanCoefficient: b,
      normalisedNoiseCoefficient: normalised, explainedVariance: explained,
      outputNorm: ee > 0 ? (ff / ee).squareRoot() : 0, vote: vote)
  }

  /// Two-thirds majority of the levels; confidence = share × mean explained variance.
  static func decide(_ levels: [Level], configuration: Configuration) -> Result {
    let needed = (2 * levels.count + 2) / 3
    for behaviour in [ProbeBehaviour.epsilon, .v] {
      let voting = levels.filter { $0.vote == behaviour }
      guard voting.count >= needed, !voting.isEmpty else { continue }
      let share = Double(voting.count) / Double(levels.count)
      let quality = voting.reduce(0) { $0 + $1.explainedVariance } / Double(voting.count)
      let confidence = share * quality
      let summary =
        behaviour == .epsilon
        ? "behaves like an epsilon model: its output is the noise (\(voting.count) of \(levels.count) "
          + "levels, mean cos(F, ε) \(format(mean(voting.map(\.cosineWithNoise)))))"
        : "behaves like a v-prediction model: its output is α·ε − σ·x̂₀ (\(voting.count) of "
          + "\(levels.count) levels, mean cos(F, ε) \(format(mean(voting.map(\.cosineWithNoise)))))"
      return Result(
        behaviour: behaviour, confidence: confidence, levels: levels, configuration: configuration,
        summary: summary)
    }
    let explained = mean(levels.map(\.explainedVariance))
    return Result(
      behaviour: .undetermined, confidence: 0, levels: levels, configuration: configuration,
      summary: "undetermined: the output is neither the noise nor v (mean explained variance "
        + "\(format(explained))); random or damaged weights, or too little training")
  }

  static func mean(_ values: [Double]) -> Double {
    values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
  }

  static func format(_ value: Double) -> String { String(format: "%.3f", value) }
}
