import Foundation

/// Where CFG-rescale measures and rescales the standard deviation.
public enum RescaleSpace: String, Sendable, CaseIterable {
  /// ComfyUI `RescaleCFG` (and the paper, Lin et al. 2024 Alg. 2): convert the denoised
  /// predictions to v = (x/(σ²+1) − D)·√(σ²+1)/σ, rescale there, convert back.
  case v
  /// diffusers `rescale_noise_cfg` on an ε model: rescale ε = (x − D)/σ.
  case epsilon
}

/// Classifier-free guidance on denoised predictions (ComfyUI `cfg_function`), with optional
/// CFG-rescale: x_cfg = u + s(c − u), then φ·x_cfg·std(c)/std(x_cfg) + (1−φ)·x_cfg in the chosen
/// space, with `torch.std`'s unbiased (N−1) estimate over the whole sample.
public struct ClassifierFreeGuidance: Sendable, Equatable {
  /// The guidance scale s.
  public var scale: Float
  /// The rescale factor φ (0: plain CFG; 0.7 is the paper's recommendation).
  public var rescale: Float
  /// The space the rescale works in.
  public var rescaleSpace: RescaleSpace

  /// Guidance with scale `scale` and optional rescale φ.
  public init(scale: Float, rescale: Float = 0, rescaleSpace: RescaleSpace = .v) {
    self.scale = scale
    self.rescale = rescale
    self.rescaleSpace = rescaleSpace
  }

  /// Whether the unconditional pass is needed at all (ComfyUI skips it at scale 1 without
  /// rescale).
  public var needsUnconditional: Bool { !(scale == 1 && rescale == 0) }

  /// The guided denoised prediction for one sample, from the conditional and unconditional
  /// predictions `conditional`, `unconditional` at input `x` and noise level `sigma`.
  public func combine(conditional: [Float], unconditional: [Float], x: [Float], sigma: Float)
    -> [Float]
  {
    precondition(
      conditional.count == x.count && unconditional.count == x.count, "prediction sizes differ")
    if rescale == 0 {
      return zip(conditional, unconditional).map { c, u in u + (c - u) * scale }
    }
    switch rescaleSpace {
    case .v: return rescaledInV(conditional, unconditional, x, sigma)
    case .epsilon: return rescaledInEpsilon(conditional, unconditional, x, sigma)
    }
  }

  /// ComfyUI `RescaleCFG.patch.rescale_cfg`, operation for operation, and the `x − f(args)` that
  /// `cfg_function` wraps around it.
  private func rescaledInV(_ c: [Float], _ u: [Float], _ xOriginal: [Float], _ sigma: Float)
    -> [Float]
  {
    let variance = sigma * sigma + 1
    let root = variance.squareRoot()
    let x = xOriginal.map { $0 / variance }
    // args["cond"] = x − D_c; cond = (x̃ − (x − (x − D_c)))·√(σ²+1)/σ.
    let vc = (0..<x.count).map { i in (x[i] - (xOriginal[i] - (xOriginal[i] - c[i]))) * root / sigma
    }
    let vu = (0..<x.count).map { i in (x[i] - (xOriginal[i] - (xOriginal[i] - u[i]))) * root / sigma
    }
    let final = rescaled(vc, vu)
    return (0..<x.count).map { i in
      let returned = xOriginal[i] - (x[i] - final[i] * sigma / root)
      return xOriginal[i] - returned
    }
  }

  /// diffusers `rescale_noise_cfg` applied to ε = (x − D)/σ.
  private func rescaledInEpsilon(_ c: [Float], _ u: [Float], _ x: [Float], _ sigma: Float)
    -> [Float]
  {
    let ec = (0..<x.count).map { i in (x[i] - c[i]) / sigma }
    let eu = (0..<x.count).map { i in (x[i] - u[i]) / sigma }
    let final = rescaled(ec, eu)
    return (0..<x.count).map { i in x[i] - final[i] * sigma }
  }

  /// φ·x_cfg·(std(c)/std(x_cfg)) + (1 − φ)·x_cfg with x_cfg = u + s·(c − u).
  private func rescaled(_ c: [Float], _ u: [Float]) -> [Float] {
    let guided = zip(c, u).map { c, u in u + scale * (c - u) }
    let ratio = Self.standardDeviation(c) / Self.standardDeviation(guided)
    return guided.map { rescale * ($0 * ratio) + (1 - rescale) * $0 }
  }

  /// `torch.std` (unbiased) accumulated in Double.
  static func standardDeviation(_ values: [Float]) -> Float {
    guard values.count > 1 else { return .nan }
    var sum = 0.0
    for value in values { sum += Double(value) }
    let mean = sum / Double(values.count)
    var squares = 0.0
    for value in values {
      let difference = Double(value) - mean
      squares += difference * difference
    }
    return Float((squares / Double(values.count - 1)).squareRoot())
  }

  /// A denoiser applying this guidance to a conditional and an unconditional denoiser.
  public func guided(conditional: @escaping Denoiser, unconditional: @escaping Denoiser)
    -> Denoiser
  {
    let guidance = self
    return { x, sigma in
      let c = try conditional(x, sigma)
      guard guidance.needsUnconditional else { return c }
      let u = try unconditional(x, sigma)
      return guidance.combine(conditional: c, unconditional: u, x: x, sigma: sigma)
    }
  }
}
