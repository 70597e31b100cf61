import ArgumentParser
import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors
import Verification

/// Loading a checkpoint into the sampling pipeline and running generations with progress, for
/// `sample` and `verify`.
struct Render {
  let pipeline: SDXLPipeline
  let behaviour: ModelBehaviour
  let behaviourSource: String
  let modelHash: String
  let modelName: String
  let loadSeconds: Double
  var settings: [GenerationSettings] = []
  var results: [GenerationResult] = []

  /// 1024×1024 for full-size SDXL, 64×64 for the tiny test models (which draw at that size).
  static func defaultSize(_ pipeline: SDXLPipeline) -> (Int, Int) {
    pipeline.unet.modelChannels >= 320 ? (1024, 1024) : (64, 64)
  }

  /// Loads `model` and runs every generation `settings` returns, with one progress bar over
  /// all their steps.
  static func load(model: String, modelOptions: ModelOptions) throws -> Render {
    let clock = Date()
    let weights = try ModelWeights(path: model)
    let (behaviour, source) = modelOptions.behaviour(of: weights)
    let pipeline = try SDXLPipeline(
      weights: weights, behaviour: behaviour, headDimension: modelOptions.headDimension(of: weights), compute: modelOptions.computeContext())
    let hash = ModelHasher.hashes(
      of: weights.file.mapping, dataOffset: nil, cache: modelOptions.hashCacheOptions.cache()
    ).hashes.autoV2
    let name = URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
    return Render(
      pipeline: pipeline, behaviour: behaviour, behaviourSource: source, modelHash: hash, modelName: name,
      loadSeconds: Date().timeIntervalSince(clock))
  }

  /// Runs `settings` in order with one progress bar over all their steps.
  mutating func generate(_ settings: [GenerationSettings], label: String = "sampling", quiet: Bool) throws {
    let total = settings.reduce(0) { $0 + $1.steps }
    let bar = ProgressBar(label, total: Double(total), unit: .items("steps"), quiet: quiet)
    var done = 0
    for setting in settings {
      let result = try pipeline.generate(setting) { _, _ in
        done += 1
        bar.update(Double(done))
      }
      self.settings.append(setting)
      results.append(result)
    }
    bar.finish()
  }

  static func run(
    model: String, modelOptions: ModelOptions, quiet: Bool, settings: (SDXLPipeline) throws -> [GenerationSettings]
  ) throws -> Render {
    var render = try load(model: model, modelOptions: modelOptions)
    try render.generate(try settings(render.pipeline), quiet: quiet)
    return render
  }

  /// A1111's `parameters` text for a generation.
  func parameters(_ settings: GenerationSettings) -> GenerationParameters {
    GenerationParameters(
      prompt: settings.prompt, negativePrompt: settings.negative, steps: settings.steps,
      sampler: settings.sampler.a1111Name, scheduleType: settings.scheduler.a1111Name, cfgScale: Double(settings.cfg),
      seed: settings.seed, width: settings.width, height: settings.height, modelHash: modelHash, modelName: modelName,
      extra: settings.cfgRescale > 0 ? [.init("CFG Rescale phi", String(format: "%g", settings.cfgRescale))] : [],
      version: "rouwei-ckpt \(ToolVersion.string)")
  }

  /// Writes the result's image as an 8-bit PNG with the `parameters` chunk.
  static func writePNG(_ result: GenerationResult, settings: GenerationSettings, render: Render, to path: String) throws {
    let image = RGBImage.images(unitRange: result.image)[0]
    try PNGWriter.write(image, text: [render.parameters(settings).pngText], to: path)
  }

  /// Writes the initial noise, every step's latent and the final latent as F32 tensors.
  static func writeLatents(_ result: GenerationResult, to path: String) throws {
    let shape = Array(result.latent.shape.dimensions)
    var entries: [TensorEntry] = []
    func add(_ name: String, _ values: [Float]) {
      entries.append(TensorEntry(spec: TensorSpec(name: name, dtype: .f32, shape: shape)) { sink in
        try sink.write(contentsOf: values)
      })
    }
    add("noise", result.initialNoise)
    for (index, latent) in result.stepLatents.enumerated() { add("step\(index).x", latent) }
    add("final", result.latent.scalars)
    let sigmas = result.sigmas
    entries.append(TensorEntry(spec: TensorSpec(name: "sigmas", dtype: .f32, shape: [sigmas.count])) { sink in
      try sink.write(contentsOf: sigmas)
    })
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: ["rouwei.latents": "noise, step<i>.x, final, sigmas"])
  }
}
