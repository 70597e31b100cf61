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
  /// Its share of the wall time of the phases, in seconds (a batch's sampling time is divided
  /// equally among its images).
  public let textSeconds: Double, samplingSeconds: Double, decodeSeconds: Double
  /// How many images shared its UNet batch (1: rendered alone).
  public let batchImages: Int
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
    var result: GenerationResult?
    try generate(batch: [settings], prompts: prompts.map { [$0] }, onStep: onStep) { result = $1 }
    guard let result else { throw ModelError.invalidInput(reason: "no image was generated") }
    return result
  }

  /// Whether `a` and `b` can be sampled in one batch: the same latent size, σ list and sampler
  /// (prompts, seeds, CFG and initial noise may differ).
  public static func canBatch(_ a: GenerationSettings, _ b: GenerationSettings) -> Bool {
    a.width == b.width && a.height == b.height && a.steps == b.steps && a.sampler == b.sampler
      && a.scheduler == b.scheduler
  }

  /// The latent shape `[1, C, h, w]` of one image of `settings`.
  public func latentShape(_ settings: GenerationSettings) -> Shape {
    let factor = vae.configuration.downsampleFactor
    return Shape(1, vae.configuration.latentChannels, settings.height / factor, settings.width / factor)
  }

  /// Bytes the UNet needs besides its weights to sample `settings` with their encoded `prompts`
  /// in one batch: activations and latents for 1 or 2 rows per image (2 with CFG), and the
  /// cross-attention keys and values of each distinct context.
  public func batchBytes(_ settings: [GenerationSettings], prompts: [EncodedPrompts]) -> Int {
    guard let first = settings.first else { return 0 }
    var contexts: [Tensor] = []
    var rows = 0
    for (settings, prompts) in zip(settings, prompts) {
      let guidance = ClassifierFreeGuidance(scale: settings.cfg, rescale: settings.cfgRescale)
      rows += guidance.needsUnconditional ? 2 : 1
      for context in guidance.needsUnconditional
        ? [prompts.positive.context, prompts.negative.context]
        : [prompts.positive.context]
      where !contexts.contains(where: { UNet.sameValues($0, context) }) {
        contexts.append(context)
      }
    }
    return GuidedUNet.workingBytes(unet: unet, rows: rows, latentShape: latentShape(first))
      + contexts.reduce(0) { $0 + unet.crossAttentionBytes(tokens: $1.shape[1]) }
  }

  /// Runs `settings` in order, in batches (`generate(batch:)`) of consecutive images that
  /// `canBatch` and whose `batchBytes` stay within `batchBytes` (one image at a time at least):
  /// memory is bounded by the budget whatever the number of images, and each image's result is
  /// the one it gets alone. A batch's prompts are encoded together before its first step (the
  /// text encoders then dropped). `onSteps(images)` after every sampler step with the number of
  /// images it advanced; `each(index, result)` as each image is decoded.
  public func generate(
    _ settings: [GenerationSettings], batchBytes budget: Int, onSteps: ((Int) -> Void)? = nil,
    each body: (Int, GenerationResult) throws -> Void
  ) throws {
    var start = 0
    var carried: (prompts: EncodedPrompts, seconds: Double)?
    while start < settings.count {
      var prompts: [EncodedPrompts] = [], seconds: [Double] = []
      var end = start
      do {
        defer { releaseTextEncoders() }
        let text = try self.text
        func encode(_ index: Int) throws -> (prompts: EncodedPrompts, seconds: Double) {
          let clock = Date()
          let item = settings[index]
          let (positive, negative) = try text.encode(
            prompt: item.prompt, negative: item.negative, style: item.promptStyle)
          return (EncodedPrompts(positive: positive, negative: negative), Date().timeIntervalSince(clock))
        }
        let head = try carried ?? encode(start)
        prompts.append(head.prompts)
        seconds.append(head.seconds)
        carried = nil
        end = start + 1
        while end < settings.count, Self.canBatch(settings[start], settings[end]) {
          let next = try encode(end)
          guard self.batchBytes(Array(settings[start...end]), prompts: prompts + [next.prompts]) <= budget else {
            carried = next
            break
          }
          prompts.append(next.prompts)
          seconds.append(next.seconds)
          end += 1
        }
      }
      let batch = Array(settings[start..<end])
      try validate(batch)
      let count = batch.count
      try sample(
        batch, prompts: prompts, textSeconds: seconds, onStep: { _, _ in onSteps?(count) },
        each: { try body(start + $0, $1) })
      start = end
    }
  }

  /// Runs `settings` (which must agree as `canBatch` says) in lockstep as one UNet batch: every
  /// sampler step is one UNet call for all images, conditional and unconditional rows together.
  /// Each image's result is bit for bit the one `generate(_:)` gives it alone. `onStep(step,
  /// steps)` once per step of the batch; `each(index, result)` as each image is decoded, one at a
  /// time after the last step (the VAE runs per image, the UNet's memory released first).
  /// Memory grows with the batch: choose its size with `batchBytes`.
  public func generate(
    batch settings: [GenerationSettings], prompts: [EncodedPrompts]? = nil, onStep: ((Int, Int) -> Void)? = nil,
    each body: (Int, GenerationResult) throws -> Void
  ) throws {
    guard !settings.isEmpty else { return }
    try validate(settings)
    if let prompts, prompts.count != settings.count {
      throw ModelError.invalidInput(reason: "\(prompts.count) encoded prompt pairs for \(settings.count) images")
    }
    // Each image's prompts, timed one by one.
    var textSeconds = [Double](repeating: 0, count: settings.count)
    let encoded: [EncodedPrompts]
    if let prompts {
      encoded = prompts
    } else {
      defer { releaseTextEncoders() }
      let text = try self.text
      encoded = try settings.enumerated().map { index, item in
        let clock = Date()
        let (positive, negative) = try text.encode(
          prompt: item.prompt, negative: item.negative, style: item.promptStyle)
        textSeconds[index] = Date().timeIntervalSince(clock)
        return EncodedPrompts(positive: positive, negative: negative)
      }
    }
    try sample(settings, prompts: encoded, textSeconds: textSeconds, onStep: onStep, each: body)
  }

  /// `generate(batch:)` once the prompts are encoded (`textSeconds[i]`: image i's encoding time).
  private func sample(
    _ settings: [GenerationSettings], prompts encoded: [EncodedPrompts], textSeconds: [Double],
    onStep: ((Int, Int) -> Void)?, each body: (Int, GenerationResult) throws -> Void
  ) throws {
    guard let first = settings.first else { return }
    let latentShape = self.latentShape(first)
    var textSeconds = textSeconds
    var images: [GuidedUNet.Image] = []
    for (index, (settings, prompts)) in zip(settings, encoded).enumerated() {
      let clock = Date()
      let size = (height: settings.height, width: settings.width)
      let positiveY = prompts.positive.admVector(originalSize: size, crop: (0, 0), targetSize: size)
      let negativeY = prompts.negative.admVector(originalSize: size, crop: (0, 0), targetSize: size)
      images.append(
        GuidedUNet.Image(
          guidance: ClassifierFreeGuidance(scale: settings.cfg, rescale: settings.cfgRescale),
          conditional: prompts.positive.context, unconditional: prompts.negative.context,
          conditionalY: unet.admChannels == nil ? nil : positiveY,
          unconditionalY: unet.admChannels == nil ? nil : negativeY))
      textSeconds[index] += Date().timeIntervalSince(clock)
    }

    var clock = Date()
    let schedule = self.schedule
    let network = NetworkDenoiser(prediction: behaviour.prediction, schedule: schedule)
    let model = try GuidedUNet(unet: unet, network: network, latentShape: latentShape, images: images)
    let sigmas = try schedule.sigmas(steps: first.steps, scheduler: first.scheduler)
    let scale = network.initialNoiseScale(firstSigma: sigmas[0])
    var noises: [[Float]] = []
    for settings in settings {
      if let given = settings.initialNoise {
        guard given.count == latentShape.count else {
          throw ModelError.invalidInput(
            reason: "initial noise has \(given.count) values, the latent \(latentShape) needs \(latentShape.count)")
        }
        noises.append(given)
      } else {
        var generator = TorchGenerator(seed: settings.seed)
        noises.append(generator.randn(count: latentShape.count))
      }
    }
    var stepLatents = [[[Float]]](repeating: [], count: settings.count)
    var stepDenoised = stepLatents
    let finals = try first.sampler.sampler.sample(
      batch: noises.map { $0.map { $0 * scale } }, sigmas: sigmas, denoiser: model.batchDenoiser,
      noise: settings.map { TorchNoiseSource(seed: $0.seed &+ 1) },
      onStep: { image, step, steps, x, denoised in
        stepLatents[image].append(x)
        stepDenoised[image].append(denoised)
        if image == settings.count - 1 { onStep?(step + 1, steps) }
      })
    // A batch's sampling time is shared equally by its images.
    let samplingSeconds = Date().timeIntervalSince(clock) / Double(settings.count)
    // The UNet is done: its activations and mapped pages need not stay resident beside the VAE's.
    unet.releaseWorkingMemory()
    weights.scoped("model.diffusion_model.").releasePages()

    for index in settings.indices {
      clock = Date()
      let latent = Tensor(shape: latentShape, values: finals[index])
      let decoded = try vae.decode(latent)
      vae.releaseWorkingMemory()
      let image = RGBImage.unitRange(decoded: decoded)
      let decodeSeconds = Date().timeIntervalSince(clock)
      let result = GenerationResult(
        latent: latent, image: image, initialNoise: noises[index], stepLatents: stepLatents[index],
        stepDenoised: stepDenoised[index], sigmas: sigmas, timesteps: model.timesteps,
        textSeconds: textSeconds[index], samplingSeconds: samplingSeconds, decodeSeconds: decodeSeconds,
        batchImages: settings.count)
      stepLatents[index] = []
      stepDenoised[index] = []
      try body(index, result)
    }
  }

  /// Checks sizes, steps and guidance of every image, and that they can share a batch.
  private func validate(_ settings: [GenerationSettings]) throws {
    guard let first = settings.first else { return }
    let granularity = sizeGranularity
    for settings in settings {
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
      guard Self.canBatch(first, settings) else {
        throw ModelError.invalidInput(
          reason: "images of one batch must share size, steps, sampler and scheduler")
      }
    }
  }
}
