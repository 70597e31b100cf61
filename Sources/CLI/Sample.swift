import ArgumentParser
import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors

/// Sampler names as ComfyUI and A1111 spell them.
extension SamplerKind: ExpressibleByArgument {
  public init?(argument: String) {
    switch argument.lowercased().replacingOccurrences(of: " ", with: "_") {
    case "euler": self = .euler
    case "euler_a", "euler_ancestral", "eulera": self = .eulerAncestral
    case "dpmpp_2m", "dpm++_2m", "dpm++2m", "dpmpp2m": self = .dpmpp2m
    default: return nil
    }
  }

  /// The name A1111 writes in its `parameters` text.
  var a1111Name: String {
    switch self {
    case .euler: return "Euler"
    case .eulerAncestral: return "Euler a"
    case .dpmpp2m: return "DPM++ 2M"
    }
  }
}

extension SigmaScheduler: ExpressibleByArgument {
  /// A1111's "Schedule type" label.
  var a1111Name: String {
    switch self {
    case .normal: return "Automatic"
    case .karras: return "Karras"
    case .exponential: return "Exponential"
    case .sgmUniform: return "SGM Uniform"
    case .simple: return "Simple"
    }
  }
}

extension PromptStyle: ExpressibleByArgument {
  public init?(argument: String) {
    switch argument.lowercased() {
    case "comfyui", "comfy": self = .comfyUI
    case "a1111", "auto1111", "forge": self = .a1111
    default: return nil
    }
  }
}

/// Options shared by `sample` and `verify`: how the model is read and run.
struct ModelOptions: ParsableArguments {
  @Option(help: "Sample as this prediction type instead of what the file's markers and metadata say (eps or v).")
  var prediction: PredictionChoice?

  @Flag(help: "With --prediction v: the model was trained with zero-terminal SNR.")
  var ztsnr = false

  @Option(help: "Channels per UNet attention head (default: the file's 'rouwei.unet_head_dim' metadata, else SDXL's 64; only tiny test models differ).")
  var headDim: Int?

  @Option(help: "Threads for gemm and element-wise work (default: all cores).")
  var threads: Int?

  @OptionGroup var hashCacheOptions: HashCacheOptions

  func validate() throws {
    if ztsnr && prediction != .v { throw ValidationError("--ztsnr needs --prediction v") }
    if let headDim, headDim < 1 { throw ValidationError("--head-dim must be positive") }
    if let threads, threads < 1 { throw ValidationError("--threads must be positive") }
  }

  /// The UNet head size: the option, else the file's `rouwei.unet_head_dim`, else 64.
  func headDimension(of weights: ModelWeights) -> Int {
    headDim ?? weights.file.metadata["rouwei.unet_head_dim"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil } ?? 64
  }

  /// The compute context with the thread count applied.
  func computeContext() -> ComputeContext {
    let count = threads ?? ProcessInfo.processInfo.activeProcessorCount
    ComputeContext.setBLASThreadCount(count)
    return ComputeContext(pool: ThreadPool(threadCount: count))
  }

  /// The prediction type and zsnr the model will be sampled with, and where that came from.
  func behaviour(of weights: ModelWeights) -> (ModelBehaviour, String) {
    if let prediction {
      return (ModelBehaviour(prediction: prediction == .v ? .vPrediction : .epsilon, zeroTerminalSNR: ztsnr), "--prediction")
    }
    let report = PredictionDetector.detect(keys: Set(weights.file.tensors.map(\.name)), metadata: weights.file.metadata)
    let prediction: Diffusion.PredictionType = report.prediction == .v ? .vPrediction : .epsilon
    let source = report.evidence.isEmpty ? "no markers (epsilon assumed)" : report.evidence.map { "\($0.source) \($0.key)" }.joined(separator: ", ")
    return (ModelBehaviour(prediction: prediction, zeroTerminalSNR: report.zeroTerminalSNR), source)
  }
}

/// `rouwei-ckpt sample`: one txt2img pass on the CPU to a PNG.
struct Sample: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Render one image from a checkpoint on the CPU (text encoders, UNet, sampler, VAE).",
    discussion: """
      Samples like ComfyUI's KSampler: the seed gives torch's CPU noise (ancestral noise from \
      seed + 1), the UNet sees the nearest integer timestep, an empty negative prompt is encoded \
      (with --prompt-style a1111: A1111's syntax, BREAK, emphasis, and zeros for an empty negative). The prediction type and \
      zero-terminal SNR come from the file's markers unless --prediction says otherwise. The PNG \
      carries A1111's `parameters` text (prompt, negative, steps, sampler, CFG, seed, size, model hash).

      Full-size SDXL needs about 15 GB of memory and minutes per step at 1024×1024 on a laptop \
      CPU; use --size 512x512 and fewer steps for a quick look.
      """)

  @Argument(help: "The checkpoint (single-file SDXL .safetensors).")
  var model: String

  @Option(name: .shortAndLong, help: "The prompt (ComfyUI syntax by default; see --prompt-style).")
  var prompt: String

  @Option(name: .shortAndLong, help: "The negative prompt.")
  var negative = ""

  @Option(help: "Sampling steps.")
  var steps = 20

  @Option(help: "Classifier-free guidance scale.")
  var cfg: Float = 5

  @Option(help: "CFG rescale φ in [0, 1] (ComfyUI RescaleCFG); 0.7 is common for v-prediction models.")
  var cfgRescale: Float = 0

  @Option(help: "Sampler: euler, euler_a (euler_ancestral), dpmpp_2m.")
  var sampler: SamplerKind = .eulerAncestral

  @Option(help: "Sigma spacing: normal, karras, exponential, sgm_uniform, simple.")
  var scheduler: SigmaScheduler = .normal

  @Option(help: "The seed (ComfyUI's initial noise on the CPU).")
  var seed: UInt64 = 0

  @Option(help: "Image size WxH (default 1024x1024; 64x64 for tiny test models).")
  var size: String?

  @Option(help: "Prompt syntax and weighting: comfyUI (default) or a1111.")
  var promptStyle: PromptStyle = .comfyUI

  @Option(name: .shortAndLong, help: "The PNG to write.")
  var output: String

  @Option(help: "Also write the initial noise, every step's latent and the final latent to this safetensors file.")
  var saveLatents: String?

  @Option(help: "Take the initial noise from this safetensors file (tensor 'noise', [1, 4, h, w]) instead of the seed.")
  var noiseFrom: String?

  @OptionGroup var modelOptions: ModelOptions

  @Flag(help: "Print the report as JSON.")
  var json = false

  func validate() throws {
    if let size, Sample.parseSize(size) == nil { throw ValidationError("--size must look like 1024x1024") }
    if steps < 1 { throw ValidationError("--steps must be at least 1") }
  }

  static func parseSize(_ text: String) -> (width: Int, height: Int)? {
    let parts = text.lowercased().split(separator: "x")
    guard parts.count == 2, let width = Int(parts[0]), let height = Int(parts[1]), width > 0, height > 0 else { return nil }
    return (width, height)
  }

  func run() throws {
    try InputCheck.require(model, for: .render)
    let render = try Render.run(
      model: model, modelOptions: modelOptions, quiet: json,
      settings: { pipeline in
        var settings = GenerationSettings(prompt: prompt)
        settings.negative = negative
        settings.steps = steps
        settings.cfg = cfg
        settings.cfgRescale = cfgRescale
        settings.sampler = sampler
        settings.scheduler = scheduler
        settings.seed = seed
        settings.promptStyle = promptStyle
        let (width, height) = size.flatMap(Sample.parseSize) ?? Render.defaultSize(pipeline)
        settings.width = width
        settings.height = height
        if let noiseFrom {
          let noise = try ModelWeights(path: noiseFrom)
          settings.initialNoise = try noise.tensor("noise").scalars
        }
        return [settings]
      })
    guard let result = render.results.first, let settings = render.settings.first else { return }
    try Render.writePNG(result, settings: settings, render: render, to: output)
    if let saveLatents { try Render.writeLatents(result, to: saveLatents) }
    let report = SampleReport(
      output: output, model: model, modelHash: render.modelHash, prediction: render.behaviour.prediction.rawValue,
      zeroTerminalSNR: render.behaviour.zeroTerminalSNR, predictionSource: render.behaviourSource,
      prompt: settings.prompt, negative: settings.negative, steps: settings.steps, cfg: settings.cfg,
      sampler: settings.sampler.rawValue, scheduler: settings.scheduler.rawValue, seed: settings.seed,
      width: settings.width, height: settings.height, loadSeconds: render.loadSeconds,
      textSeconds: result.textSeconds, samplingSeconds: result.samplingSeconds, decodeSeconds: result.decodeSeconds,
      finite: result.latent.scalars.allSatisfy(\.isFinite))
    if json {
      try printJSON(report)
    } else {
      print(String(format: "%@: %d×%d, %d steps %@ (%@), CFG %g, seed %llu, %@%@ from %@; load %.1f s, text %.1f s, sampling %.1f s, decode %.1f s",
        output, settings.width, settings.height, settings.steps, settings.sampler.rawValue, settings.scheduler.rawValue,
        settings.cfg, settings.seed, report.prediction, report.zeroTerminalSNR ? " + zsnr" : "", report.predictionSource,
        report.loadSeconds, report.textSeconds, report.samplingSeconds, report.decodeSeconds))
    }
  }
}

/// What `sample --json` prints.
struct SampleReport: Encodable {
  let output, model, modelHash, prediction: String
  let zeroTerminalSNR: Bool
  let predictionSource, prompt, negative: String
  let steps: Int
  let cfg: Float
  let sampler, scheduler: String
  let seed: UInt64
  let width, height: Int
  let loadSeconds, textSeconds, samplingSeconds, decodeSeconds: Double
  let finite: Bool
}
