import Adapters
import ArgumentParser
import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Verification

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
}

extension SigmaScheduler: ExpressibleByArgument {}

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
  @OptionGroup var predictionOptions: PredictionOptions

  @Option(
    help:
      "Channels per UNet attention head (default: the file's 'rouwei.unet_head_dim' metadata, else SDXL's 64; only tiny test models differ)."
  )
  var headDim: Int?

  @OptionGroup var threadsOption: ThreadsOption

  @Option(
    name: .customLong("text-encoders"),
    help: ArgumentHelp(
      "Take the text encoders from this file: a CLIP-L/CLIP-G component file (single-file, ComfyUI or diffusers names) or a whole checkpoint (repeat for two files).",
      valueName: "file"))
  var textEncoders: [String] = []

  @Option(
    help: ArgumentHelp(
      "Take the VAE from this file: a VAE file or a whole checkpoint (for UNet-only artifacts, or to swap the VAE).",
      valueName: "file"))
  var vae: String?

  @Option(
    name: .customLong("lora"), parsing: .singleValue,
    help: ArgumentHelp(
      "Apply a LoRA/LyCORIS adapter in memory: FILE[:STRENGTH[:TE_STRENGTH]] (repeatable; the same weights `merge --lora` bakes; a --reference renders without it).",
      valueName: "file[:s]"))
  var loras: [String] = []

  @Flag(help: "With --lora: apply what maps onto SDXL and skip the adapter's other keys (default: refuse it).")
  var loraSkipUnmapped = false

  @OptionGroup var hashCacheOptions: HashCacheOptions

  func validate() throws {
    if let headDim, headDim < 1 { throw ValidationError("--head-dim must be positive") }
    for lora in loras {
      do { _ = try AdapterSpec.parse(lora) } catch { throw ValidationError("\(error)") }
    }
    if loraSkipUnmapped && loras.isEmpty { throw ValidationError("--lora-skip-unmapped needs --lora") }
  }

  /// The library's load options these flags describe.
  var loadOptions: ModelLoadOptions {
    ModelLoadOptions(
      behaviour: predictionOptions.behaviour, headDimension: headDim, threads: threadsOption.threads,
      hashCache: hashCacheOptions.cache(), textEncoders: textEncoders, vae: vae,
      adapters: loras.compactMap { try? AdapterSpec.parse($0) }, skipUnmappedAdapterKeys: loraSkipUnmapped)
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

      Weights stay as stored in the mapped file: full-size SDXL fp16 at 1024×1024 peaks at about \
      7 GB resident (4.7 GB of it mapped weight pages) and takes minutes per step on a laptop CPU; \
      use --size 512x512 and fewer steps for a quick look.
      """)

  @Argument(
    help:
      "The model: a single-file .safetensors of any dtype, a GGUF, a diffusers folder, or a UNet-only file with --text-encoders/--vae."
  )
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

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  func validate() throws {
    if let size, ImageSize(parsing: size) == nil { throw ValidationError("--size must look like 1024x1024") }
    if steps < 1 { throw ValidationError("--steps must be at least 1") }
  }

  func run() throws {
    try InputCheck.require(model, for: .render)
    var request = SampleRequest(model: model, prompt: prompt, output: output, load: modelOptions.loadOptions)
    request.settings.negative = negative
    request.settings.steps = steps
    request.settings.cfg = cfg
    request.settings.cfgRescale = cfgRescale
    request.settings.sampler = sampler
    request.settings.scheduler = scheduler
    request.settings.seed = seed
    request.settings.promptStyle = promptStyle
    request.size = size.flatMap(ImageSize.init(parsing:))
    request.saveLatents = saveLatents
    request.noiseFrom = noiseFrom
    let report = try withProgress(quiet: json) { try request.run(progress: $0) }
    if json {
      try printJSON(report)
    } else {
      print(report.text)
    }
  }
}
