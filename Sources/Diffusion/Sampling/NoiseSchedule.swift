import Foundation

/// Where zero-terminal-SNR puts the last step's ᾱ (Lin et al. 2024, Alg. 1, with the clamp each
/// implementation needs to keep σ finite).
public enum ZeroTerminalSNR: String, Sendable, CaseIterable {
  /// ComfyUI / A1111 / Forge: ᾱ_T = 4.8973451890853435e-08, σ_max ≈ 4518.76.
  case comfyUI
  /// diffusers `rescale_betas_zero_snr`: ᾱ_T = 2⁻²⁴, σ_max ≈ 4096.
  case diffusers

  /// The terminal ᾱ.
  public var terminalAlphaCumprod: Double {
    switch self {
    case .comfyUI: return 4.8973451890853435e-08
    case .diffusers: return 1.0 / 16_777_216.0
    }
  }
}

/// A discrete DDPM noise schedule as ComfyUI's `ModelSamplingDiscrete` holds it: σ for each of the
/// training timesteps (ascending), computed in float64 and stored as float32 together with
/// float32 log σ (`set_sigmas`).
public struct DiscreteNoiseSchedule: Sendable, Equatable {
  /// σ_t for t = 0 … count−1 (float32, ascending).
  public let sigmas: [Float]
  /// log σ_t, computed in float64 before rounding (ComfyUI `sigmas.log().float()`).
  public let logSigmas: [Float]

  /// A schedule from float64 σ values (ascending).
  public init(sigmas: [Double]) throws {
    guard sigmas.count >= 2, sigmas.allSatisfy({ $0 > 0 && $0.isFinite }) else {
      throw DiffusionError.invalidSchedule(reason: "need at least 2 positive finite sigmas")
    }
    self.sigmas = sigmas.map { Float($0) }
    self.logSigmas = sigmas.map { Float(Foundation.log($0)) }
  }

  /// SDXL's schedule: betas = linspace(√0.00085, √0.012, 1000)² in float64 (sgm / ComfyUI
  /// "linear", diffusers "scaled_linear"), ᾱ = cumprod(1 − β), σ = √((1 − ᾱ)/ᾱ); optionally
  /// rescaled to zero terminal SNR.
  public static func sdxl(zeroTerminalSNR: ZeroTerminalSNR? = nil) -> DiscreteNoiseSchedule {
    scaledLinear(betaStart: 0.00085, betaEnd: 0.012, count: 1000, zeroTerminalSNR: zeroTerminalSNR)
  }

  /// A scaled-linear beta schedule (see `sdxl`) with other parameters.
  public static func scaledLinear(
    betaStart: Double, betaEnd: Double, count: Int, zeroTerminalSNR: ZeroTerminalSNR? = nil
  ) -> DiscreteNoiseSchedule {
    let count = max(count, 2)
    let roots = torchLinspace(betaStart.squareRoot(), betaEnd.squareRoot(), count)
    var product = 1.0
    var sigmas = [Double]()
    sigmas.reserveCapacity(count)
    for root in roots {
      product *= 1 - root * root
      sigmas.append(((1 - product) / product).squareRoot())
    }
    if let zeroTerminalSNR {
      sigmas = rescaledToZeroTerminalSNR(sigmas, terminal: zeroTerminalSNR.terminalAlphaCumprod)
    }
    // Positive and finite for any betas in (0, 1); guarded so odd parameters cannot trap.
    return DiscreteNoiseSchedule(
      unchecked: sigmas.map { $0.isFinite && $0 > 0 ? $0 : Double.leastNormalMagnitude })
  }

  private init(unchecked sigmas: [Double]) {
    self.sigmas = sigmas.map { Float($0) }
    self.logSigmas = sigmas.map { Float(Foundation.log($0)) }
  }

  /// ComfyUI `rescale_zero_terminal_snr_sigmas` in float64.
  static func rescaledToZeroTerminalSNR(_ sigmas: [Double], terminal: Double) -> [Double] {
    var roots = sigmas.map { (1 / ($0 * $0 + 1)).squareRoot() }
    guard let first = roots.first, let last = roots.last, first != last else { return sigmas }
    let scale = first / (first - last)
    for index in roots.indices { roots[index] = (roots[index] - last) * scale }
    var alphas = roots.map { $0 * $0 }
    alphas[alphas.count - 1] = terminal
    return alphas.map { ((1 - $0) / $0).squareRoot() }
  }

  /// The number of training timesteps.
  public var count: Int { sigmas.count }
  /// σ at t = 0.
  public var sigmaMin: Float { sigmas[0] }
  /// σ at the last timestep.
  public var sigmaMax: Float { sigmas[sigmas.count - 1] }

  /// σ(t) by linear interpolation of log σ between ⌊t⌋ and ⌈t⌉, t clamped to the table, in
  /// float32 (ComfyUI `ModelSamplingDiscrete.sigma`, k-diffusion `t_to_sigma`).
  public func sigma(timestep: Float) -> Float {
    let t = timestep.isNaN ? 0 : min(max(timestep, 0), Float(count - 1))
    let low = Int(t.rounded(.down))
    let high = Int(t.rounded(.up))
    let w = t - t.rounded(.down)
    let logSigma = (1 - w) * logSigmas[low] + w * logSigmas[high]
    return Foundation.exp(logSigma)
  }

  /// The timestep whose log σ is nearest to log `sigma` (ComfyUI `ModelSamplingDiscrete.timestep`,
  /// first index on ties).
  public func nearestTimestep(sigma: Float) -> Int {
    let logSigma = Foundation.log(sigma)
    var best = 0
    var bestDistance = Float.infinity
    for (index, value) in logSigmas.enumerated() {
      let distance = abs(logSigma - value)
      if distance < bestDistance {
        best = index
        bestDistance = distance
      }
    }
    return best
  }

  /// The fractional timestep that `sigma(timestep:)` maps to `sigma` (k-diffusion
  /// `DiscreteSchedule.sigma_to_t`, used by A1111), clamped to the table.
  public func interpolatedTimestep(sigma: Float) -> Float {
    let logSigma = Foundation.log(sigma)
    // low_idx = number of log σ ≤ log sigma, minus one, clamped to [0, count − 2].
    var low = 0
    for (index, value) in logSigmas.enumerated() where logSigma - value >= 0 { low = index }
    low = min(max(low, 0), count - 2)
    let high = low + 1
    let lowValue = logSigmas[low]
    let highValue = logSigmas[high]
    var w = (lowValue - logSigma) / (lowValue - highValue)
    w = min(max(w, 0), 1)
    return (1 - w) * Float(low) + w * Float(high)
  }
}

/// `torch.linspace(start, end, count)` in float64, bit for bit: the first half counts up from
/// `start`, the second half down from `end`, each value one fused multiply-add (PyTorch's kernel
/// `start + step * idx` as GCC contracts it).
func torchLinspace(_ start: Double, _ end: Double, _ count: Int) -> [Double] {
  guard count > 1 else { return count == 1 ? [start] : [] }
  let step = (end - start) / Double(count - 1)
  let halfway = count / 2
  return (0..<count).map { index in
    index < halfway
      ? start.addingProduct(step, Double(index))
      : end.addingProduct(-step, Double(count - index - 1))
  }
}

/// `torch.linspace(start, end, count)` in float32 (the default dtype), as above.
func torchLinspace(_ start: Float, _ end: Float, _ count: Int) -> [Float] {
  guard count > 1 else { return count == 1 ? [start] : [] }
  let step = (end - start) / Float(count - 1)
  let halfway = count / 2
  return (0..<count).map { index in
    index < halfway
      ? start.addingProduct(step, Float(index))
      : end.addingProduct(-step, Float(count - index - 1))
  }
}
