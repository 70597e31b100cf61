/// The parts of a Stable Diffusion checkpoint.
public enum Component: String, CaseIterable, Codable, Sendable, Comparable {
  /// The denoising UNet (`model.diffusion_model.`).
  case unet
  /// CLIP ViT-L/14 text encoder (`conditioner.embedders.0.transformer.` in SDXL).
  case clipL = "clip_l"
  /// OpenCLIP ViT-bigG/14 text encoder (`conditioner.embedders.1.model.` in SDXL).
  case clipG = "clip_g"
  /// The autoencoder (`first_stage_model.`).
  case vae
  /// Zero-size marker tensors and scalars that describe the model (`v_pred`, `ztsnr`, `edm_*`).
  case markers
  /// An EMA copy of the UNet (`model_ema.`), dropped by most tools.
  case ema
  /// Training-time schedule buffers (`betas`, `alphas_cumprod`, …).
  case trainingBuffers = "training_buffers"
  /// Anything else.
  case other

  public static func < (lhs: Component, rhs: Component) -> Bool {
    (allCases.firstIndex(of: lhs) ?? 0) < (allCases.firstIndex(of: rhs) ?? 0)
  }

  /// Human name.
  public var title: String {
    switch self {
    case .unet: return "UNet"
    case .clipL: return "CLIP-L"
    case .clipG: return "OpenCLIP-G"
    case .vae: return "VAE"
    case .markers: return "markers"
    case .ema: return "EMA"
    case .trainingBuffers: return "training buffers"
    case .other: return "other"
    }
  }
}

/// Key prefixes of the single-file (SGM/LDM) layout.
public enum SingleFilePrefix {
  public static let unet = "model.diffusion_model."
  public static let clipL = "conditioner.embedders.0.transformer."
  public static let clipG = "conditioner.embedders.1.model."
  /// The refiner has only bigG, as embedder 0.
  public static let refinerClipG = "conditioner.embedders.0.model."
  /// SD1.x/SD2.x text encoder.
  public static let sd1TextEncoder = "cond_stage_model."
  public static let vae = "first_stage_model."
  public static let ema = "model_ema."
}

/// Marker and buffer key names.
public enum MarkerKey {
  public static let vPrediction = "v_pred"
  public static let zeroTerminalSNR = "ztsnr"
  public static let edmVPredSigmaMax = "edm_vpred.sigma_max"
  public static let edmVPredSigmaMin = "edm_vpred.sigma_min"
  public static let scaledFP8 = "model.diffusion_model.scaled_fp8"
  /// LDM training buffers (`[1000]` schedules) some checkpoints still carry.
  public static let trainingBuffers: Set<String> = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "denoiser.sigmas",
  ]
}

/// Which component a single-file key belongs to.
public func component(ofSingleFileKey key: String) -> Component {
  if key.hasPrefix(SingleFilePrefix.unet) { return .unet }
  if key.hasPrefix(SingleFilePrefix.clipL) || key.hasPrefix(SingleFilePrefix.sd1TextEncoder) { return .clipL }
  if key.hasPrefix(SingleFilePrefix.clipG) || key.hasPrefix(SingleFilePrefix.refinerClipG) { return .clipG }
  if key.hasPrefix(SingleFilePrefix.vae) { return .vae }
  if key.hasPrefix(SingleFilePrefix.ema) { return .ema }
  if key == MarkerKey.vPrediction || key == MarkerKey.zeroTerminalSNR || key.hasPrefix("edm_")
    || key == "edm_mean" || key == "edm_std"
  {
    return .markers
  }
  if MarkerKey.trainingBuffers.contains(key) { return .trainingBuffers }
  return .other
}
