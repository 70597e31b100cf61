import Checkpoint
import Foundation
import Tensors

/// Everything one txt2img generation needs besides the model. Defaults follow ComfyUI's KSampler.
public struct GenerationSettings: Sendable {
  /// The prompt, in `promptStyle`'s syntax.
  public var prompt: String
  /// The negative prompt ("" is encoded as the empty prompt, as ComfyUI does).
  public var negative: String = ""
  /// Sampling steps.
  public var steps: Int = 20
  /// Classifier-free guidance scale (1 disables the negative pass).
  public var cfg: Float = 5
  /// CFG-rescale φ (0 = off); ComfyUI's RescaleCFG, applied in v space.
  public var cfgRescale: Float = 0
  /// The sampler.
  public var sampler: SamplerKind = .eulerAncestral
  /// The sigma spacing.
  public var scheduler: SigmaScheduler = .normal
  /// The seed: initial noise is `torch.randn` from `manual_seed(seed)`, ancestral noise from
  /// `seed + 1` (ComfyUI on the CPU).
  public var seed: UInt64 = 0
  /// Image size in pixels; multiples of the model's latent granularity (32 for SDXL).
  public var width: Int = 1024
  public var height: Int = 1024
  /// Prompt syntax and weighting: ComfyUI's (default) or A1111's.
  public var promptStyle: PromptStyle = .comfyUI
  /// Initial noise to use instead of the seed's (`[1, 4, h, w]` values, unscaled).
  public var initialNoise: [Float]? = nil

  public init(prompt: String) { self.prompt = prompt }
}

/// What a generation produced, with the trail verification needs.
public struct GenerationResult {
  /// The final latent `[1, 4, h, w]` (scaled, as the sampler sees it).
  public let latent: Tensor
  /// The decoded image `[1, 3, H, W]` in [0, 1] (clamped).
  public let image: Tensor
  /// The initial noise before scaling by the first σ.
  public let initialNoise: [Float]
  /// The latent after each step.
  public let stepLatents: [[Float]]
  /// The guided denoised prediction at each step.
  public let stepDenoised: [[Float]]
  /// The σ list (steps + 1, ending in 0) and the UNet timestep at each call.
  public let sigmas: [Float]
  public let timesteps: [Float]
  /// Wall time of the phases, in seconds.
  public let textSeconds: Double, samplingSeconds: Double, decodeSeconds: Double
}

/// The encoded prompt pair of one generation.
public struct EncodedPrompts {
  public let positive: SDXLConditioning
  public let negative: SDXLConditioning
}

/// txt2img with an SDXL checkpoint: both text encoders, the UNet and the VAE built from one
/// weight source, sampled on the CPU as ComfyUI would.
///
/// Memory: every matrix stays as stored in the map and is widened per layer into a scratch (see
/// `StoredWeight`); the text encoders exist only while prompts are encoded and their mapped pages
/// leave the resident set before the UNet runs, whose pages leave it before the VAE decodes.
/// Activations are reused from step to step and image to image, so the peak does not grow with
/// the number of steps or images.
public final class SDXLPipeline {
  /// The checkpoint's weights.
  public let weights: ModelWeights
  public let unet: UNet
  public let vae: AutoencoderKL
  public let behaviour: ModelBehaviour
  public let compute: ComputeContext

  /// Builds every component (checking every weight's presence and shape; the matrices stay mapped).
  /// - Parameter headDimension: the UNet's attention head size (64 in SDXL; only tiny test models differ).
  public init(
    weights: ModelWeights, behaviour: ModelBehaviour, headDimension: Int = 64,
    compute: ComputeContext = ComputeContext()
  ) throws {
    self.weights = weights
    self.behaviour = behaviour
    self.compute = compute
    // Built to check the text encoders now; built again (cheaply) when prompts are encoded.
    let text = try SDXLTextConditioner(weights: weights, context: compute)
    unet = try UNet(weights: weights.scoped("model.diffusion_model."), headDimension: headDimension, compute: compute)
    vae = try AutoencoderKL(checkpoint: weights, loadEncoder: false, compute: compute)
    guard unet.contextDimension == nil || unet.contextDimension == text.contextWidth else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason:
          "the text encoders give \(text.contextWidth)-wide contexts, the UNet expects \(unet.contextDimension ?? 0)")
    }
    guard unet.admChannels == nil || unet.admChannels == text.admWidth else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason: "the adm vector is \(text.admWidth) wide, the UNet's label_emb takes \(unet.admChannels ?? 0)")
    }
    guard unet.inChannels == vae.configuration.latentChannels else {
      throw ModelError.unsupportedModel(
        file: weights.file.path,
        reason: "the UNet takes \(unet.inChannels) latent channels, the VAE makes \(vae.configuration.latentChannels)")
    }
  }

  /// A text conditioner over the weights (cheap: the towers' matrices stay mapped). Drop it after
  /// encoding and call `releaseTextEncoders()`, as `encodePrompts` does.
  public var text: SDXLTextConditioner {
    get throws { try SDXLTextConditioner(weights: weights, context: compute) }
  }

  /// Encodes the prompts of `settings` (in order) with one conditioner, then drops the text
  /// encoders and their mapped pages, so they are not resident while the UNet runs.
  public func encodePrompts(_ settings: [GenerationSettings]) throws -> [EncodedPrompts] {
    defer { releaseTextEncoders() }
    let text = try self.text
    // An empty negative is encoded in ComfyUI's style and zeros in A1111's, as each front end does.
    return try settings.map {
      let (positive, negative) = try text.encode(prompt: $0.prompt, negative: $0.negative, style: $0.promptStyle)
      return EncodedPrompts(positive: positive, negative: negative)
    }
  }

  /// Drops the text encoders' mapped pages from the resident set (they stay in the page cache).
  public func releaseTextEncoders() {
    weights.scoped("conditioner.").releasePages()
  }

  /// Pixels per latent step times the UNet's own halvings: sizes must be multiples of this.
  public var sizeGranularity: Int { vae.configuration.downsampleFactor << unet.downsampleCount }

  /// The noise schedule the model was trained on.
  public var schedule: DiscreteNoiseSchedule {
    DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: behaviour.zeroTerminalSNR ? .comfyUI : nil)
  }

  /// Runs one generation; `onStep(step, steps)` after every sampler step. `prompts`: the
  /// settings' prompts encoded already (`encodePrompts`), else they are encoded here.
  public func generate(
    _ settings: GenerationSettings, prompts: EncodedPrompts? = nil, onStep: ((Int, Int) -> Void)? = nil
  ) throws -> GenerationResult {
    let granularity = sizeGranularity
    guard settings.width > 0, settings.height > 0, settings.width % granularity == 0,
      settings.height % granularity == 0
    else {
      throw ModelError.invalidInput(
        reason:
          "size \(settings.width)×\(settings.height) must be positive multiples of \(granularity) for this model")
    }
    guard settings.steps >= 1, settings.steps <= 10_000 else {
      throw ModelError.invalidInput(reason: "steps must be between 1 and 10000, got \(settings.steps)")
    }
    guard settings.cfg.isFinite, settings.cfgRescale.isFinite, (0...1).contains(settings.cfgRescale) else {
      throw ModelError.invalidInput(
        reason: "CFG \(settings.cfg) and rescale \(settings.cfgRescale) must be finite, rescale in [0, 1]")
    }
    let factor = vae.configuration.downsampleFactor
    let latentShape = Shape(1, vae.configuration.latentChannels, settings.height / factor, settings.width / factor)

    var clock = Date()
    guard let encoded = try prompts ?? encodePrompts([settings]).first else {
      throw ModelError.invalidInput(reason: "no prompts were encoded")
    }
    let (positive, negative) = (encoded.positive, encoded.negative)
    let size = (height: settings.height, width: settings.width)
    let positiveY = positive.admVector(originalSize: size, crop: (0, 0), targetSize: size)
    let negativeY = negative.admVector(originalSize: size, crop: (0, 0), targetSize: size)
    let textSeconds = Date().timeIntervalSince(clock)

    clock = Date()
    let schedule = self.schedule
    let network = NetworkDenoiser(prediction: behaviour.prediction, schedule: schedule)
    let guidance = ClassifierFreeGuidance(scale: settings.cfg, rescale: settings.cfgRescale)
    let model = try GuidedUNet(
      unet: unet, network: network, guidance: guidance, latentShape: latentShape,
      conditional: positive.context, unconditional: negative.context,
      conditionalY: unet.admChannels == nil ? nil : positiveY, unconditionalY: unet.admChannels == nil ? nil : negativeY
    )
    let sigmas = try schedule.sigmas(steps: settings.steps, scheduler: settings.scheduler)
    let noise: [Float]
    if let given = settings.initialNoise {
      guard given.count == latentShape.count else {
        throw ModelError.invalidInput(
          reason: "initial noise has \(given.count) values, the latent \(latentShape) needs \(latentShape.count)")
      }
      noise = given
    } else {
      var generator = TorchGenerator(seed: settings.seed)
      noise = generator.randn(count: latentShape.count)
    }
    let scale = network.initialNoiseScale(firstSigma: sigmas[0])
    let start = noise.map { $0 * scale }
    var stepLatents: [[Float]] = [], stepDenoised: [[Float]] = []
    let final = try settings.sampler.sampler.sample(
      start, sigmas: sigmas, denoiser: model.denoiser,
      noise: TorchNoiseSource(seed: settings.seed &+ 1),
      onStep: { step, steps, x, denoised in
        stepLatents.append(x)
        stepDenoised.append(denoised)
        onStep?(step + 1, steps)
      })
    let samplingSeconds = Date().timeIntervalSince(clock)
    // The UNet is done for this image: its activations and mapped pages need not stay resident
    // beside the VAE's.
    unet.releaseWorkingMemory()
    weights.scoped("model.diffusion_model.").releasePages()

    clock = Date()
    let latent = Tensor(shape: latentShape, values: final)
    let decoded = try vae.decode(latent)
    vae.releaseWorkingMemory()
    let image = RGBImage.unitRange(decoded: decoded)
    let decodeSeconds = Date().timeIntervalSince(clock)
    return GenerationResult(
      latent: latent, image: image, initialNoise: noise, stepLatents: stepLatents, stepDenoised: stepDenoised,
      sigmas: sigmas, timesteps: model.timesteps, textSeconds: textSeconds, samplingSeconds: samplingSeconds,
      decodeSeconds: decodeSeconds)
  }
}
