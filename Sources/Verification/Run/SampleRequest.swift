import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors

/// One txt2img render to a PNG, as a library call: what `rouwei-ckpt sample` does.
///
///     var request = SampleRequest(model: "model.safetensors", prompt: "1girl", output: "out.png")
///     request.settings.steps = 20
///     let report = try request.run()
public struct SampleRequest {
  /// The checkpoint.
  public var model: String
  /// Prompt, sampler, steps, seed…; `width`/`height` are used only when `size` is set.
  public var settings: GenerationSettings
  /// The image size; nil: the model's default (1024² for SDXL, 64² for the tiny test models).
  public var size: ImageSize?
  /// The PNG to write (atomically, with A1111's `parameters` text).
  public var output: String
  /// Also write the initial noise, every step's latent and the final latent to this safetensors file.
  public var saveLatents: String?
  /// Take the initial noise from this safetensors file (tensor `noise`, `[1, 4, h, w]`) instead of the seed.
  public var noiseFrom: String?
  /// How the model is opened and run.
  public var load: ModelLoadOptions

  public init(model: String, prompt: String, output: String, load: ModelLoadOptions = ModelLoadOptions()) {
    self.model = model
    self.settings = GenerationSettings(prompt: prompt)
    self.output = output
    self.load = load
  }

  /// Loads the model, renders, writes the PNG (and latents), and says what it did.
  public func run(progress: ProgressHandler? = nil) throws -> SampleReport {
    let model = try LoadedModel(path: self.model, options: load)
    var settings = self.settings
    let size = self.size ?? model.defaultSize
    settings.width = size.width
    settings.height = size.height
    if let noiseFrom {
      settings.initialNoise = try ModelWeights(path: noiseFrom).tensor("noise").scalars
    }
    guard let result = try model.generate([settings], label: "sampling", progress: progress).first else {
      throw VerificationError.invalidInput(reason: "nothing was rendered")
    }
    let hash = model.modelHash()
    let image = RGBImage.images(unitRange: result.image)[0]
    try PNGWriter.write(image, text: [model.parameters(settings, modelHash: hash).pngText], to: output)
    if let saveLatents { try Self.writeLatents(result, to: saveLatents) }
    return SampleReport(
      output: output, model: self.model, modelHash: hash, prediction: model.behaviour.prediction.rawValue,
      zeroTerminalSNR: model.behaviour.zeroTerminalSNR, predictionSource: model.behaviourSource,
      prompt: settings.prompt, negative: settings.negative, steps: settings.steps, cfg: settings.cfg,
      sampler: settings.sampler.rawValue, scheduler: settings.scheduler.rawValue, seed: settings.seed,
      width: settings.width, height: settings.height, loadSeconds: model.loadSeconds,
      textSeconds: result.textSeconds, samplingSeconds: result.samplingSeconds, decodeSeconds: result.decodeSeconds,
      finite: result.latent.scalars.allSatisfy(\.isFinite))
  }

  /// Writes the initial noise, every step's latent and the final latent as F32 tensors.
  static func writeLatents(_ result: GenerationResult, to path: String) throws {
    let shape = Array(result.latent.shape.dimensions)
    var entries: [TensorEntry] = []
    func add(_ name: String, _ values: [Float]) {
      entries.append(
        TensorEntry(spec: TensorSpec(name: name, dtype: .f32, shape: shape)) { sink in
          try sink.write(contentsOf: values)
        })
    }
    add("noise", result.initialNoise)
    for (index, latent) in result.stepLatents.enumerated() { add("step\(index).x", latent) }
    add("final", result.latent.scalars)
    let sigmas = result.sigmas
    entries.append(
      TensorEntry(spec: TensorSpec(name: "sigmas", dtype: .f32, shape: [sigmas.count])) { sink in
        try sink.write(contentsOf: sigmas)
      })
    try SafeTensorsWriter.write(
      to: path, entries: entries, metadata: ["rouwei.latents": "noise, step<i>.x, final, sigmas"])
  }
}

/// What a sample run did (`sample --json`).
public struct SampleReport: Codable, Sendable {
  public let output, model, modelHash, prediction: String
  public let zeroTerminalSNR: Bool
  public let predictionSource, prompt, negative: String
  public let steps: Int
  public let cfg: Float
  public let sampler, scheduler: String
  public let seed: UInt64
  public let width, height: Int
  public let loadSeconds, textSeconds, samplingSeconds, decodeSeconds: Double
  public let finite: Bool

  /// One line for people.
  public var text: String {
    String(
      format:
        "%@: %d×%d, %d steps %@ (%@), CFG %g, seed %llu, %@%@ from %@; load %.1f s, text %.1f s, sampling %.1f s, decode %.1f s",
      output, width, height, steps, sampler, scheduler, cfg, seed, prediction, zeroTerminalSNR ? " + zsnr" : "",
      predictionSource, loadSeconds, textSeconds, samplingSeconds, decodeSeconds)
  }
}
