import Foundation

/// A source of fresh standard-normal noise for ancestral samplers.
public protocol NoiseSource: AnyObject {
  /// `count` standard-normal values (one latent's worth).
  func next(count: Int) -> [Float]
}

/// Noise from a `TorchGenerator`, continuing one stream across calls like k-diffusion's
/// `default_noise_sampler`. ComfyUI seeds it with `seed + 1` when sampling on the CPU.
public final class TorchNoiseSource: NoiseSource {
  /// The generator the noise comes from.
  public var generator: TorchGenerator

  /// Noise from `torch.Generator().manual_seed(seed)`.
  public init(seed: UInt64, normalPath: TorchNormalPath = .vectorized) {
    generator = TorchGenerator(seed: seed, normalPath: normalPath)
  }

  /// `torch.randn(count, generator=g)`.
  public func next(count: Int) -> [Float] { generator.randn(count: count) }
}

/// Called after every step with the step index, the step count, the new sample and the
/// denoised prediction of that step.
public typealias SamplerStepCallback = (
  _ step: Int, _ steps: Int, _ x: [Float], _ denoised: [Float]
) -> Void

/// A denoiser for several samples at the same σ: D(xᵢ, σ) for each xᵢ, in order. A batched render
/// runs them as one network call; each result must be what the sample would get alone.
public typealias BatchDenoiser = (_ xs: [[Float]], _ sigma: Float) throws -> [[Float]]

/// Called after every step for each sample of a batch, in sample order.
public typealias BatchStepCallback = (
  _ sample: Int, _ step: Int, _ steps: Int, _ x: [Float], _ denoised: [Float]
) -> Void

/// A sampler: integrates from `sigmas[0]` down to `sigmas.last` (usually 0) with a denoiser.
///
/// Samplers run a batch of samples in lockstep (one denoiser call per step for all of them); each
/// sample's arithmetic is the same code a batch of one runs, so its result does not depend on
/// the batch it ran in.
public protocol Sampler: Sendable {
  /// The name ComfyUI uses (`euler`, `euler_ancestral`, `dpmpp_2m`).
  var name: String { get }
  /// Whether each step draws fresh noise.
  var isAncestral: Bool { get }
  /// Runs the sampler from each of `xs` (already scaled to the first σ; all the same length),
  /// `noise[i]` feeding sample i (one per sample, or empty for none).
  func sample(
    batch xs: [[Float]], sigmas: [Float], denoiser: BatchDenoiser, noise: [NoiseSource?],
    onStep: BatchStepCallback?
  ) throws -> [[Float]]
}

extension Sampler {
  /// Runs the sampler from `x` (already scaled to the first σ): a batch of one.
  public func sample(
    _ x: [Float], sigmas: [Float], denoiser: Denoiser, noise: NoiseSource?,
    onStep: SamplerStepCallback?
  ) throws -> [Float] {
    let results = try sample(
      batch: [x], sigmas: sigmas, denoiser: { xs, sigma in try xs.map { try denoiser($0, sigma) } },
      noise: [noise],
      onStep: onStep.map { callback in { _, step, steps, x, denoised in callback(step, steps, x, denoised) } })
    return results[0]
  }

  /// Runs the sampler without noise source or callback (deterministic samplers).
  public func sample(_ x: [Float], sigmas: [Float], denoiser: Denoiser) throws -> [Float] {
    try sample(x, sigmas: sigmas, denoiser: denoiser, noise: nil, onStep: nil)
  }

  func validate(_ xs: [[Float]], _ sigmas: [Float], _ noise: [NoiseSource?]) throws {
    guard sigmas.count >= 2 else {
      throw DiffusionError.invalidSamplerInput(
        reason: "need at least 2 sigmas, got \(sigmas.count)")
    }
    guard sigmas.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
      throw DiffusionError.invalidSamplerInput(reason: "sigmas must be finite and non-negative")
    }
    guard sigmas.dropLast().allSatisfy({ $0 > 0 }) else {
      throw DiffusionError.invalidSamplerInput(reason: "only the last sigma may be 0")
    }
    guard !xs.isEmpty, xs.allSatisfy({ !$0.isEmpty }) else {
      throw DiffusionError.invalidSamplerInput(reason: "empty sample")
    }
    guard noise.isEmpty || noise.count == xs.count else {
      throw DiffusionError.invalidSamplerInput(reason: "\(noise.count) noise sources for \(xs.count) samples")
    }
  }

  func denoise(_ denoiser: BatchDenoiser, _ xs: [[Float]], _ sigma: Float) throws -> [[Float]] {
    let denoised = try denoiser(xs, sigma)
    guard denoised.count == xs.count else {
      throw DiffusionError.invalidSamplerInput(
        reason: "denoiser returned \(denoised.count) samples for a batch of \(xs.count)")
    }
    for (x, d) in zip(xs, denoised) where d.count != x.count {
      throw DiffusionError.invalidSamplerInput(
        reason: "denoiser returned \(d.count) values for a sample of \(x.count)")
    }
    return denoised
  }
}

/// The samplers by ComfyUI name.
public enum SamplerKind: String, Sendable, CaseIterable {
  /// Euler.
  case euler
  /// Euler ancestral (η = 1).
  case eulerAncestral = "euler_ancestral"
  /// DPM-Solver++(2M).
  case dpmpp2m = "dpmpp_2m"

  /// The sampler with default parameters.
  public var sampler: any Sampler {
    switch self {
    case .euler: return EulerSampler()
    case .eulerAncestral: return EulerAncestralSampler()
    case .dpmpp2m: return DPMPP2MSampler()
    }
  }
}

/// k-diffusion `sample_euler` (no churn): d = (x − D)/σ, x ← x + d·(σ' − σ).
public struct EulerSampler: Sampler {
  /// `euler`.
  public let name = "euler"
  /// False.
  public let isAncestral = false

  /// Euler.
  public init() {}

  /// Runs Euler over `sigmas`.
  public func sample(
    batch xs: [[Float]], sigmas: [Float], denoiser: BatchDenoiser, noise: [NoiseSource?],
    onStep: BatchStepCallback?
  ) throws -> [[Float]] {
    try validate(xs, sigmas, noise)
    var xs = xs
    let steps = sigmas.count - 1
    for step in 0..<steps {
      let sigma = sigmas[step]
      let denoised = try denoise(denoiser, xs, sigma)
      let dt = sigmas[step + 1] - sigma
      for sample in xs.indices {
        for index in xs[sample].indices {
          let derivative = (xs[sample][index] - denoised[sample][index]) / sigma
          xs[sample][index] = xs[sample][index] + derivative * dt
        }
        onStep?(sample, step, steps, xs[sample], denoised[sample])
      }
    }
    return xs
  }
}

/// k-diffusion `sample_euler_ancestral` (`get_ancestral_step`): σ_up = min(σ', η·√(σ'²(σ²−σ'²)/σ²)),
/// σ_down = √(σ'² − σ_up²), x ← x + (x − D)/σ·(σ_down − σ), then + ε·s_noise·σ_up while σ' > 0.
/// One `noise.next` per step with σ' > 0 (none on the last step to 0).
public struct EulerAncestralSampler: Sampler {
  /// `euler_ancestral`.
  public let name = "euler_ancestral"
  /// True unless η = 0.
  public var isAncestral: Bool { eta != 0 }
  /// η: 1 is ancestral sampling, 0 is plain Euler.
  public var eta: Float
  /// s_noise, the noise multiplier.
  public var noiseScale: Float

  /// Euler ancestral with η and s_noise.
  public init(eta: Float = 1, noiseScale: Float = 1) {
    self.eta = eta
    self.noiseScale = noiseScale
  }

  /// σ_down and σ_up for a step from `from` to `to` (float32, as k-diffusion's 0-d tensors).
  public func ancestralStep(from: Float, to: Float) -> (down: Float, up: Float) {
    if eta == 0 { return (to, 0) }
    let up = min(to, eta * (to * to * (from * from - to * to) / (from * from)).squareRoot())
    let down = (to * to - up * up).squareRoot()
    return (down, up)
  }

  /// Runs Euler ancestral over `sigmas`; a noise source per sample is required when η ≠ 0.
  public func sample(
    batch xs: [[Float]], sigmas: [Float], denoiser: BatchDenoiser, noise: [NoiseSource?],
    onStep: BatchStepCallback?
  ) throws -> [[Float]] {
    try validate(xs, sigmas, noise)
    if isAncestral && (noise.count != xs.count || noise.contains { $0 == nil }) {
      throw DiffusionError.invalidSamplerInput(reason: "euler_ancestral needs a noise source")
    }
    var xs = xs
    let steps = sigmas.count - 1
    for step in 0..<steps {
      let sigma = sigmas[step]
      let next = sigmas[step + 1]
      let denoised = try denoise(denoiser, xs, sigma)
      let (down, up) = ancestralStep(from: sigma, to: next)
      let dt = down - sigma
      for sample in xs.indices {
        for index in xs[sample].indices {
          let derivative = (xs[sample][index] - denoised[sample][index]) / sigma
          xs[sample][index] = xs[sample][index] + derivative * dt
        }
        if next > 0, isAncestral, let source = noise[sample] {
          let epsilon = source.next(count: xs[sample].count)
          guard epsilon.count == xs[sample].count else {
            throw DiffusionError.invalidSamplerInput(reason: "noise source returned a wrong size")
          }
          for index in xs[sample].indices { xs[sample][index] = xs[sample][index] + epsilon[index] * noiseScale * up }
        }
        onStep?(sample, step, steps, xs[sample], denoised[sample])
      }
    }
    return xs
  }
}

/// k-diffusion `sample_dpmpp_2m` (DPM-Solver++(2M), Lu et al. 2022) with t = −log σ:
/// first step and steps to σ' = 0 are first order, the others use
/// D' = (1 + 1/(2r))·D − 1/(2r)·D_prev with r = h_prev/h.
public struct DPMPP2MSampler: Sampler {
  /// `dpmpp_2m`.
  public let name = "dpmpp_2m"
  /// False.
  public let isAncestral = false

  /// DPM++ 2M.
  public init() {}

  /// Runs DPM++ 2M over `sigmas`.
  public func sample(
    batch xs: [[Float]], sigmas: [Float], denoiser: BatchDenoiser, noise: [NoiseSource?],
    onStep: BatchStepCallback?
  ) throws -> [[Float]] {
    try validate(xs, sigmas, noise)
    var xs = xs
    var previous: [[Float]]?
    let steps = sigmas.count - 1
    let tOf = { (sigma: Float) -> Float in -Foundation.log(sigma) }
    let sigmaOf = { (t: Float) -> Float in Foundation.exp(-t) }
    for step in 0..<steps {
      let sigma = sigmas[step]
      let next = sigmas[step + 1]
      let denoised = try denoise(denoiser, xs, sigma)
      let t = tOf(sigma)
      let tNext = tOf(next)
      let h = tNext - t
      let ratio = sigmaOf(tNext) / sigmaOf(t)
      let weight = Foundation.expm1(-h)
      for sample in xs.indices {
        if let old = previous?[sample], next != 0 {
          let hLast = t - tOf(sigmas[step - 1])
          let r = hLast / h
          let a = 1 + 1 / (2 * r)
          let b = 1 / (2 * r)
          for index in xs[sample].indices {
            let corrected = a * denoised[sample][index] - b * old[index]
            xs[sample][index] = ratio * xs[sample][index] - weight * corrected
          }
        } else {
          for index in xs[sample].indices {
            xs[sample][index] = ratio * xs[sample][index] - weight * denoised[sample][index]
          }
        }
        onStep?(sample, step, steps, xs[sample], denoised[sample])
      }
      previous = denoised
    }
    return xs
  }
}
