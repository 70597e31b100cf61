import Foundation

/// How `steps` sigmas are chosen from a discrete schedule. Each list ends with an appended 0.
public enum SigmaScheduler: String, Sendable, CaseIterable {
  /// σ(linspace(t_max, t_min, steps)), log-σ interpolated (ComfyUI `normal`, k-diffusion
  /// `get_sigmas`, A1111 "Automatic" for Euler a).
  case normal
  /// Karras et al. (2022), ρ = 7 between the table's σ_min and σ_max.
  case karras
  /// exp(linspace(ln σ_max, ln σ_min, steps)).
  case exponential
  /// σ(linspace(t_max, t_min, steps + 1)[:-1]) (ComfyUI `sgm_uniform`).
  case sgmUniform = "sgm_uniform"
  /// `sigmas[-(1 + int(i·count/steps))]` (ComfyUI `simple`).
  case simple
}

extension DiscreteNoiseSchedule {
  /// `steps + 1` sigmas, descending, the last one 0, as ComfyUI's scheduler of that name gives.
  public func sigmas(steps: Int, scheduler: SigmaScheduler) throws -> [Float] {
    guard steps >= 1 else {
      throw DiffusionError.invalidSchedule(reason: "steps must be at least 1, got \(steps)")
    }
    switch scheduler {
    case .normal: return uniformTimesteps(steps: steps, sgm: false)
    case .sgmUniform: return uniformTimesteps(steps: steps, sgm: true)
    case .karras:
      return SigmaSchedules.karras(
        steps: steps, sigmaMin: Double(sigmaMin), sigmaMax: Double(sigmaMax))
    case .exponential:
      return SigmaSchedules.exponential(
        steps: steps, sigmaMin: Double(sigmaMin), sigmaMax: Double(sigmaMax))
    case .simple:
      let stride = Double(count) / Double(steps)
      var result = (0..<steps).map { sigmas[count - 1 - Int(Double($0) * stride)] }
      result.append(0)
      return result
    }
  }

  /// ComfyUI `normal_scheduler`: timesteps from `timestep(σ_max)` to `timestep(σ_min)`.
  func uniformTimesteps(steps: Int, sgm: Bool) -> [Float] {
    let start = Float(nearestTimestep(sigma: sigmaMax))
    let end = Float(nearestTimestep(sigma: sigmaMin))
    var result: [Float]
    if sgm {
      result = torchLinspace(start, end, steps + 1).dropLast().map { sigma(timestep: $0) }
      result.append(0)
    } else if abs(sigma(timestep: end)) <= 0.00001 {
      // A schedule reaching σ = 0 already ends at 0: use steps + 1 points and append nothing.
      result = torchLinspace(start, end, steps + 1).map { sigma(timestep: $0) }
    } else {
      result = torchLinspace(start, end, steps).map { sigma(timestep: $0) }
      result.append(0)
    }
    return result
  }
}

/// Sigma lists that depend only on σ_min and σ_max (k-diffusion `sampling.py`).
public enum SigmaSchedules {
  /// `get_sigmas_karras`: (σ_max^(1/ρ) + ramp·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ over
  /// ramp = linspace(0, 1, steps), float32 tensor arithmetic on float64 endpoints, then 0.
  public static func karras(steps: Int, sigmaMin: Double, sigmaMax: Double, rho: Double = 7)
    -> [Float]
  {
    let minInverse = Foundation.pow(sigmaMin, 1 / rho)
    let maxInverse = Foundation.pow(sigmaMax, 1 / rho)
    let span = Float(minInverse - maxInverse)
    var result = torchLinspace(Float(0), Float(1), steps).map { ramp in
      Foundation.pow(Float(maxInverse) + ramp * span, Float(rho))
    }
    result.append(0)
    return result
  }

  /// `get_sigmas_exponential`: exp(linspace(ln σ_max, ln σ_min, steps)), then 0.
  public static func exponential(steps: Int, sigmaMin: Double, sigmaMax: Double) -> [Float] {
    var result = torchLinspace(
      Float(Foundation.log(sigmaMax)), Float(Foundation.log(sigmaMin)), steps
    )
    .map { Foundation.exp($0) }
    result.append(0)
    return result
  }
}
