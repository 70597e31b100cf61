import Checkpoint
import Foundation

/// How σ becomes the timestep fed to the network.
public enum TimestepMode: String, Sendable, CaseIterable {
  /// The nearest table index (ComfyUI `ModelSamplingDiscrete.timestep`).
  case nearest
  /// The fractional index that inverts the log-σ interpolation (k-diffusion / A1111).
  case interpolated
}

/// A denoiser D(x, σ): the current sample and noise level in, the predicted clean sample out.
public typealias Denoiser = (_ x: [Float], _ sigma: Float) throws -> [Float]

/// A network call F(c_in·x, t) → ε or v, with t the timestep (an index into the schedule).
public typealias NetworkFunction = (_ scaledInput: [Float], _ timestep: Float) throws -> [Float]

/// Wraps a network into a denoiser the k-diffusion way (k-diffusion `external.py`, ComfyUI
/// `model_sampling.py`, σ_data = 1): D = c_skip·x + c_out·F(c_in·x, t(σ)) with
/// c_in = 1/√(σ²+1) and c_skip, c_out from the prediction type. The arithmetic follows ComfyUI's
/// float32 operation order (`EPS.calculate_input`, `EPS/V_PREDICTION.calculate_denoised`).
public struct NetworkDenoiser: Sendable {
  /// ε (D = x − σ·F) or v (D = x/(σ²+1) − σ·F/√(σ²+1); EDM v uses the same formula).
  public var prediction: PredictionType
  /// The training schedule, for σ → t.
  public var schedule: DiscreteNoiseSchedule
  /// Nearest or interpolated timesteps.
  public var timestepMode: TimestepMode

  /// A denoiser for a network of the given prediction type on `schedule`.
  public init(
    prediction: PredictionType, schedule: DiscreteNoiseSchedule,
    timestepMode: TimestepMode = .nearest
  ) {
    self.prediction = prediction
    self.schedule = schedule
    self.timestepMode = timestepMode
  }

  /// The timestep the network sees at noise level `sigma`.
  public func timestep(sigma: Float) -> Float {
    switch timestepMode {
    case .nearest: return Float(schedule.nearestTimestep(sigma: sigma))
    case .interpolated: return schedule.interpolatedTimestep(sigma: sigma)
    }
  }

  /// The network input x/√(σ²+1).
  public func scaledInput(_ x: [Float], sigma: Float) -> [Float] {
    let scale = (sigma * sigma + 1).squareRoot()
    return x.map { $0 / scale }
  }

  /// D from the network output `output` at input `x` and noise level `sigma`.
  public func denoised(output: [Float], x: [Float], sigma: Float) -> [Float] {
    precondition(output.count == x.count, "network output and input differ in size")
    switch prediction {
    case .epsilon:
      return zip(x, output).map { input, epsilon in input - epsilon * sigma }
    case .v, .edmV:
      let variance = sigma * sigma + 1
      let root = variance.squareRoot()
      return zip(x, output).map { input, v in input * 1 / variance - v * sigma * 1 / root }
    }
  }

  /// D(x, σ) through `network`.
  public func denoise(_ x: [Float], sigma: Float, network: NetworkFunction) throws -> [Float] {
    let output = try network(scaledInput(x, sigma: sigma), timestep(sigma: sigma))
    guard output.count == x.count else {
      throw DiffusionError.invalidSamplerInput(
        reason: "network returned \(output.count) values for an input of \(x.count)")
    }
    return denoised(output: output, x: x, sigma: sigma)
  }

  /// The scaling of the initial noise for txt2img: ComfyUI multiplies by √(1+σ²) when the first
  /// σ is the schedule's σ_max (`noise_scaling` with `max_denoise`), by σ otherwise; k-diffusion
  /// and A1111 always by σ.
  public func initialNoiseScale(firstSigma: Float, comfyUI: Bool = true) -> Float {
    // ComfyUI `KSampler.max_denoise`: isclose(σ_max, σ₀, rel_tol=1e-5) or σ₀ > σ_max (the
    // normal schedule's first σ comes back through σ → t → σ and is not bit-equal to σ_max).
    let sigmaMax = Double(schedule.sigmaMax), first = Double(firstSigma)
    let maxDenoise = abs(sigmaMax - first) <= 1e-5 * max(abs(sigmaMax), abs(first)) || first > sigmaMax
    if comfyUI && maxDenoise {
      return (1 + firstSigma * firstSigma).squareRoot()
    }
    return firstSigma
  }
}
