import Checkpoint
import Diffusion
import Foundation
import Tensors

/// A behavioural test of the prediction type: the UNet is run on a known clean latent x₀ noised
/// with two seeded noise draws ε₁, ε₂ at a few noise levels, and its outputs F₁, F₂ are read both
/// ways.
///
/// With x = x₀ + σ·ε fed as x/√(σ²+1) at the timestep of σ, an epsilon model answers F ≈ ε and a
/// v model F ≈ α·ε − σ_vp·x̂₀, where α = 1/√(σ²+1), σ_vp = σ·α and x̂₀ is the model's guess of the
/// clean latent. So:
/// - epsilon: F follows the noise: cos(F, ε) ≈ 1, and F₁ − F₂ follows ε₁ − ε₂;
/// - v: F barely contains ε at high noise (cos(F, ε) ≈ α), it points along −x₀, and the clean
///   latent it implies, D = x/(σ²+1) − σ_vp·F, is nearly the same for both draws (cos(D₁, D₂) high).
/// A model with random or broken weights does neither. Each level votes; a behaviour needs a
/// two-thirds majority, so random weights come out `undetermined` rather than as a wrong answer.
public enum PredictionProbe {
  /// The probe's settings; limits measured on the trained tiny fixtures and a random-weight model
  /// (`Fixtures/verify/calibration.json`, `probe`).
  public struct Configuration: Codable, Sendable, Equatable {
    /// Timesteps to probe (indices into the 1000-step SDXL schedule).
    public var timesteps: [Int]
    /// Whether σ(t) comes from the zero-terminal-SNR schedule. The levels are chosen where the two
    /// schedules are close, so the probe does not depend much on it.
    public var zeroTerminalSNR: Bool
    /// Seed of the two noise draws (torch CPU `randn` of shape `[2, C, H, W]`).
    public var seed: UInt64
    /// Epsilon vote: cos(F, ε) and cos(F₁ − F₂, ε₁ − ε₂) at least this (epsilon model ≥ 0.92,
    /// v model ≤ 0.31, random ≤ 0.09).
    public var minimumNoiseCosine: Double
    /// v vote: cos(F, ε) at most this. An ideal v model has cos(F, ε) ≈ α·‖ε‖/‖F‖, 0.53 at
    /// t = 500; the trained one 0.13–0.31.
    public var maximumNoiseCosineForV: Double
    /// v vote: cos(D₁, D₂) of the v reading at least this (v model ≥ 0.81, epsilon ≤ 0.02, random ≤ 0.09).
    public var minimumAgreement: Double
    /// v vote: cos(F, −x₀) at least this (v model ≥ 0.47, random ≤ 0, epsilon < 0): the output must
    /// point along −x₀, so an input-independent output is not taken for v.
    public var minimumRecovery: Double

    /// Four levels from t = 500 to 950 on the ordinary schedule, seed 0.
    public static let standard = Configuration(
      timesteps: [500, 650, 800, 950], zeroTerminalSNR: false, seed: 0, minimumNoiseCosine: 0.8,
      maximumNoiseCosineForV: 0.7, minimumAgreement: 0.5, minimumRecovery: 0.2)

    /// Settings with every value given.
    public init(
      timesteps: [Int], zeroTerminalSNR: Bool, seed: UInt64, minimumNoiseCosine: Double,
      maximumNoiseCosineForV: Double, minimumAgreement: Double, minimumRecovery: Double
    ) {
      self.timesteps = timesteps
      self.zeroTerminalSNR = zeroTerminalSNR
      self.seed = seed
      self.minimumNoiseCosine = minimumNoiseCosine
      self.maximumNoiseCosineForV = maximumNoiseCosineForV
      self.minimumAgreement = minimumAgreement
      self.minimumRecovery = minimumRecovery
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
    /// cos(F, ε), mean of the two draws: ≈ 1 for an epsilon model, ≈ α for a v model.
    public var noiseCosine: Double
    /// cos(F₁ − F₂, ε₁ − ε₂): whether the output follows the noise.
    public var noiseTracking: Double
    /// cos(D₁, D₂) with D = x/(σ²+1) − σ_vp·F (the v reading): ≈ 1 for a v model.
    public var vAgreement: Double
    /// cos(F, −x₀), mean of the two draws: a v model's output points along −x̂₀ ≈ −x₀.
    public var vRecovery: Double
    /// a in the least-squares fit F₁ ≈ a·ε₁ + b·x₀ (1 for epsilon, ≲ α for v).
    public var noiseCoefficient: Double
    /// b in that fit (≈ 0 for epsilon, negative for v).
    public var cleanCoefficient: Double
    /// ‖F‖/‖ε‖, first draw.
    public var outputNorm: Double
    /// What this level says: `.epsilon` (the output is the noise ε), `.v` (the output is
    /// α·ε − σ_vp·x̂₀), or nil when neither fits. Never `.edmV`: the probe cannot tell v from EDM v.
    public var vote: PredictionType?
  }

  /// The probe's finding.
  public struct Result: Codable, Sendable, Equatable {
    /// The prediction type the levels agree on (`.epsilon` or `.v`), or nil when undetermined
    /// (random or broken weights, or a model the probe cannot read).
    public var behaviour: PredictionType?
    /// 0…1: the share of levels voting for `behaviour` times their mean deciding cosine
    /// (cos(F, ε) for epsilon, cos(D₁, D₂) for v); 0 when undetermined.
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
        let u = (Double(column) + 0.5) / Double(width)
        let v = (Double(row) + 0.5) / Double(height)
        var rgb = [0.15 + 0.7 * u, 0.2 + 0.6 * v, 0.85 - 0.7 * u]
        if (u - 0.55) * (u - 0.55) + (v - 0.45) * (v - 0.45) < 0.22 * 0.22 {
          rgb = [0.9, 0.15, 0.12]
        }
        for channel in 0..<3 {
          values[channel * plane + row * width + column] = Float(rgb[channel])
        }
      }
    }
    return try FloatImage(width: width, height: height, values: values)
  }

  /// A smooth clean latent `[1, channels, height, width]` with unit standard deviation (gradients,
  /// their product and a bowl, one per channel), for models whose file has no VAE encoder. Less
  /// like a real image latent than the test image's, so a v model may come out `undetermined`.
  public static func smoothLatent(channels: Int, height: Int, width: Int) throws -> Tensor {
    guard channels > 0, height > 0, width > 0 else {
      throw VerificationError.invalidInput(
        reason: "probe latent size \(channels)×\(height)×\(width) is empty")
    }
    var values: [Float] = []
    values.reserveCapacity(channels * height * width)
    for channel in 0..<channels {
      for row in 0..<height {
        for column in 0..<width {
          let x = width > 1 ? 2 * Float(column) / Float(width - 1) - 1 : 0
          let y = height > 1 ? 2 * Float(row) / Float(height - 1) - 1 : 0
          let patterns = [x, y, x * y, x * x + y * y - 0.6]
          values.append(patterns[channel % 4] * (channel >= 4 ? -1 : 1))
        }
      }
    }
    let mean = values.reduce(0, +) / Float(values.count)
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(values.count)
    let deviation = variance > 0 ? variance.squareRoot() : 1
    return Tensor(
      shape: [1, channels, height, width], values: values.map { ($0 - mean) / deviation })
  }

  /// Probes a network given as a closure: `network(scaledInputs, timestep)` → F for a batch of two
  /// `[2, C, H, W]` (the two noise draws).
  /// - Parameter cleanLatent: x₀ `[1, C, H, W]`, e.g. the VAE latent of `testImage` (scaled).
  /// - Throws: `VerificationError.invalidInput` for a bad latent or output shape, and whatever
  ///   `network` throws.
  public static func run(
    cleanLatent: Tensor, configuration: Configuration = .standard,
    network: (_ scaledInputs: Tensor, _ timestep: Float) throws -> Tensor
  ) throws -> Result {
    try run(cleanLatent: cleanLatent, configuration: configuration, levelsPerCall: 1) { inputs, timesteps in
      try network(inputs, timesteps[0])
    }
  }

  /// Probes a network that takes several levels per call: `batchedNetwork(scaledInputs,
  /// timesteps)` → F for `[2·L, C, H, W]` (both draws of each of L levels, in order) at
  /// `timesteps` (2·L values). The levels are sent `levelsPerCall` at a time; each level's
  /// measurements are those a call of one level gives when the network treats samples apart.
  public static func run(
    cleanLatent: Tensor, configuration: Configuration = .standard, levelsPerCall: Int,
    batchedNetwork network: (_ scaledInputs: Tensor, _ timesteps: [Float]) throws -> Tensor
  ) throws -> Result {
    let shape = cleanLatent.shape
    guard shape.rank == 4, shape[0] == 1, shape.count > 1 else {
      throw VerificationError.invalidInput(reason: "probe latent \(shape) must be [1, C, H, W]")
    }
    guard !configuration.timesteps.isEmpty,
      configuration.timesteps.allSatisfy({ (0..<1000).contains($0) })
    else {
      throw VerificationError.invalidInput(
        reason: "probe timesteps \(configuration.timesteps) must be in 0…999 and not empty")
    }
    let clean = cleanLatent.scalars.map(Double.init)
    guard clean.allSatisfy(\.isFinite), clean.contains(where: { $0 != 0 }) else {
      throw VerificationError.invalidInput(reason: "probe latent must be finite and not all zero")
    }
    let count = shape.count
    var generator = TorchGenerator(seed: configuration.seed)
    let draws = generator.randn(count: 2 * count).map(Double.init)
    let noise = [Array(draws[0..<count]), Array(draws[count...])]
    let schedule = DiscreteNoiseSchedule.sdxl(
      zeroTerminalSNR: configuration.zeroTerminalSNR ? .comfyUI : nil)
    var levels: [Level] = []
    let perCall = Swift.max(1, levelsPerCall)
    var first = 0
    while first < configuration.timesteps.count {
      let timesteps = Array(configuration.timesteps[first..<Swift.min(first + perCall, configuration.timesteps.count)])
      let batchShape = Shape(2 * timesteps.count, shape[1], shape[2], shape[3])
      var inputs: [Float] = []
      inputs.reserveCapacity(batchShape.count)
      var noisyLevels: [[[Double]]] = []
      for timestep in timesteps {
        let sigma = Double(schedule.sigmas[timestep])
        let scale = (sigma * sigma + 1).squareRoot()
        let noisy = noise.map { draw in zip(clean, draw).map { $0 + sigma * $1 } }
        noisyLevels.append(noisy)
        inputs += noisy.flatMap { $0.map { Float($0 / scale) } }
      }
      let output = try network(
        Tensor(shape: batchShape, values: inputs), timesteps.flatMap { [Float($0), Float($0)] })
      guard output.shape == batchShape else {
        throw VerificationError.invalidInput(
          reason: "network returned \(output.shape) for input \(batchShape)")
      }
      let values = output.scalars.map(Double.init)
      for (index, timestep) in timesteps.enumerated() {
        let base = 2 * index * count
        let outputs = [Array(values[base..<base + count]), Array(values[base + count..<base + 2 * count])]
        levels.append(
          measure(
            outputs: outputs, noise: noise, noisy: noisyLevels[index], clean: clean, timestep: timestep,
            sigma: Double(schedule.sigmas[timestep]), configuration: configuration))
      }
      first += timesteps.count
    }
    return decide(levels, configuration: configuration)
  }

  /// Probes `unet` with the conditioning `context` `[1, tokens, contextDimension]` and `y`
  /// `[1, admChannels]` (an encoded empty prompt, or zeros of the right shapes). Both draws of as
  /// many levels as `batchBytes` of UNet working memory allows run as one batch (one level, two
  /// rows, at least); the numbers are the same whatever the batch.
  /// - Throws: `VerificationError.invalidInput`, or the UNet's `ModelError` for mismatched shapes.
  public static func run(
    unet: UNet, context: Tensor, y: Tensor?, cleanLatent: Tensor,
    configuration: Configuration = .standard, batchBytes: Int = 0
  ) throws -> Result {
    let levelsPerCall = levelsPerBatch(
      unet: unet, latentShape: cleanLatent.shape, contextTokens: context.shape.rank == 3 ? context.shape[1] : 0,
      levels: configuration.timesteps.count, batchBytes: batchBytes)
    let rows = 2 * levelsPerCall
    // One context for every row: the cache computes its keys and values once.
    let cache = try unet.crossAttention(for: [Tensor](repeating: context, count: rows))
    let stacked = try y.map { y -> Tensor in
      guard y.shape.rank == 2, y.shape[0] == 1 else {
        throw VerificationError.invalidInput(reason: "adm vector \(y.shape) must be [1, width]")
      }
      return Tensor(shape: [rows, y.shape[1]], values: Array([[Float]](repeating: y.scalars, count: rows).joined()))
    }
    return try run(cleanLatent: cleanLatent, configuration: configuration, levelsPerCall: levelsPerCall) {
      input, timesteps in
      let batch = input.shape[0]
      guard batch < rows else {
        return try unet(input, timesteps: timesteps, crossAttention: cache, y: stacked)
      }
      // The last call may hold fewer levels: a cache and adm rows of its size.
      let partial = try unet.crossAttention(for: [Tensor](repeating: context, count: batch))
      return try unet(input, timesteps: timesteps, crossAttention: partial, y: stacked.map { $0.slice(0..<batch) })
    }
  }

  /// How many levels (two UNet rows each) fit in `batchBytes` of UNet working memory; 1 at least.
  static func levelsPerBatch(unet: UNet, latentShape: Shape, contextTokens: Int, levels: Int, batchBytes: Int) -> Int {
    guard latentShape.rank == 4 else { return 1 }
    var count = 1
    while count < levels,
      GuidedUNet.workingBytes(unet: unet, rows: 2 * (count + 1), latentShape: latentShape)
        + unet.crossAttentionBytes(tokens: contextTokens) <= batchBytes
    {
      count += 1
    }
    return count
  }

  static func dot(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
  }

  static func cosine(_ a: [Double], _ b: [Double]) -> Double {
    let aa = dot(a, a)
    let bb = dot(b, b)
    guard aa > 0, bb > 0, aa.isFinite, bb.isFinite else { return 0 }
    let value = dot(a, b) / (aa * bb).squareRoot()
    return value.isFinite ? value : 0
  }

  /// The measurements and the vote at one level.
  static func measure(
    outputs: [[Double]], noise: [[Double]], noisy: [[Double]], clean: [Double], timestep: Int,
    sigma: Double, configuration c: Configuration
  ) -> Level {
    let alpha = 1 / (sigma * sigma + 1).squareRoot()
    let noiseCosine = (cosine(outputs[0], noise[0]) + cosine(outputs[1], noise[1])) / 2
    let tracking = cosine(
      zip(outputs[0], outputs[1]).map { $0 - $1 }, zip(noise[0], noise[1]).map { $0 - $1 })
    // The v reading: D = x/(σ²+1) − σ/√(σ²+1)·F (k-diffusion / ComfyUI V_PREDICTION).
    let readings = (0..<2).map { k in
      zip(noisy[k], outputs[k]).map { $0 * alpha * alpha - sigma * alpha * $1 }
    }
    let agreement = cosine(readings[0], readings[1])
    // −F against x₀ rather than D against x₀: D's α²·x part holds x₀ whatever the network does.
    let negativeClean = clean.map { -$0 }
    let recovery = (cosine(outputs[0], negativeClean) + cosine(outputs[1], negativeClean)) / 2
    // Normal equations of F₁ ≈ a·ε₁ + b·x₀ (no intercept, as the ε and v targets have none).
    let (f, e) = (outputs[0], noise[0])
    let ee = dot(e, e)
    let cc = dot(clean, clean)
    let ec = dot(e, clean)
    let fe = dot(f, e)
    let fc = dot(f, clean)
    let determinant = ee * cc - ec * ec
    var a = 0.0
    var b = 0.0
    if determinant > 1e-12 * ee * cc, determinant.isFinite {
      a = (fe * cc - fc * ec) / determinant
      b = (fc * ee - fe * ec) / determinant
    }
    var vote: PredictionType? = nil
    if noiseCosine >= c.minimumNoiseCosine && tracking >= c.minimumNoiseCosine {
      vote = .epsilon
    } else if noiseCosine <= c.maximumNoiseCosineForV && agreement >= c.minimumAgreement
      && recovery >= c.minimumRecovery
    {
      vote = .v
    }
    let norm = ee > 0 ? (dot(f, f) / ee).squareRoot() : 0
    return Level(
      timestep: timestep, sigma: sigma, alpha: alpha, noiseCosine: noiseCosine,
      noiseTracking: tracking,
      vAgreement: agreement, vRecovery: recovery, noiseCoefficient: a.isFinite ? a : 0,
      cleanCoefficient: b.isFinite ? b : 0, outputNorm: norm.isFinite ? norm : 0, vote: vote)
  }

  /// Two-thirds majority of the levels; confidence = share × mean deciding cosine.
  static func decide(_ levels: [Level], configuration: Configuration) -> Result {
    let needed = (2 * levels.count + 2) / 3
    for behaviour in [PredictionType.epsilon, .v] {
      let voting = levels.filter { $0.vote == behaviour }
      guard voting.count >= needed, !voting.isEmpty else { continue }
      let share = Double(voting.count) / Double(levels.count)
      let summary: String
      let confidence: Double
      if behaviour == .epsilon {
        confidence = share * mean(voting.map(\.noiseCosine))
        summary =
          "behaves like an epsilon model: its output is the noise (\(voting.count) of \(levels.count) "
          + "levels, mean cos(F, ε) \(format(mean(voting.map(\.noiseCosine)))))"
      } else {
        confidence = share * mean(voting.map(\.vAgreement))
        summary =
          "behaves like a v-prediction model: its output is α·ε − σ·x̂₀, the same clean latent "
          + "whatever the noise (\(voting.count) of \(levels.count) levels, mean cos(F, ε) "
          + "\(format(mean(voting.map(\.noiseCosine)))), agreement \(format(mean(voting.map(\.vAgreement)))))"
      }
      return Result(
        behaviour: behaviour, confidence: min(max(confidence, 0), 1), levels: levels,
        configuration: configuration, summary: summary)
    }
    return Result(
      behaviour: nil, confidence: 0, levels: levels, configuration: configuration,
      summary: "undetermined: the output neither follows the noise (mean cos(F, ε) "
        + "\(format(mean(levels.map(\.noiseCosine))))) nor points along −x₀ with a noise-independent clean "
        + "reading (mean cos(F, −x₀) \(format(mean(levels.map(\.vRecovery)))), agreement "
        + "\(format(mean(levels.map(\.vAgreement))))); random or damaged weights, too little training, or "
        + "a clean latent unlike the model's images"
    )
  }

  static func mean(_ values: [Double]) -> Double {
    values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
  }

  static func format(_ value: Double) -> String { String(format: "%.3f", value) }
}
