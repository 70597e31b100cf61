import Adapters
import Checkpoint
import Diffusion
import Foundation
import Tensors
import Weights

/// How a model is opened and run: what every render request (sample, verify, the probe) shares.
public struct ModelLoadOptions: Sendable {
  /// Sample as this instead of what the file declares (nil: the file's markers and metadata decide).
  public var behaviour: ModelBehaviour?
  /// Channels per UNet attention head (nil: the file's `rouwei.unet_head_dim`, else SDXL's 64).
  public var headDimension: Int?
  /// Threads for gemm and element-wise work (nil: every core).
  public var threads: Int?
  /// Where whole-file hashes (the PNG's model hash) are remembered; nil hashes every time.
  public var hashCache: HashCache?
  /// Files that lend the text encoders (a CLIP-L/CLIP-G component file or a whole checkpoint), for
  /// UNet-only artifacts or to swap them.
  public var textEncoders: [String]
  /// A file that lends the VAE (a VAE file or a whole checkpoint).
  public var vae: String?
  /// LoRA/LyCORIS adapters applied in memory at load (never to a reference render's model), in
  /// order: the weights a bake writes, without writing a file.
  public var adapters: [AdapterSpec]
  /// Apply what maps onto SDXL and skip an adapter's other keys (default: refuse the adapter).
  public var skipUnmappedAdapterKeys: Bool
  /// Memory a render may give the UNet's batch besides the weights (activations, latents,
  /// cross-attention keys and values): images that share size, steps and sampler are sampled
  /// together up to this (`SDXLPipeline.batchBytes`), and so are the probe's noise draws and
  /// levels. 0 renders one image (and probes one level) at a time; results are the same.
  public var batchBytes: Int

  /// 1.5 GiB: a `verify --preset quick` on full-size SDXL (three 512² images, six UNet rows:
  /// 1.1 GB of activations and four distinct contexts' keys and values) runs as one batch, and
  /// its probe (eight rows of one context) as another; at 1024² one image at a time, as before.
  public static let defaultBatchBytes = 3 << 29

  public init(
    behaviour: ModelBehaviour? = nil, headDimension: Int? = nil, threads: Int? = nil, hashCache: HashCache? = nil,
    textEncoders: [String] = [], vae: String? = nil, adapters: [AdapterSpec] = [],
    skipUnmappedAdapterKeys: Bool = false,
    batchBytes: Int = ModelLoadOptions.defaultBatchBytes
  ) {
    self.batchBytes = batchBytes
    self.adapters = adapters
    self.skipUnmappedAdapterKeys = skipUnmappedAdapterKeys
    self.behaviour = behaviour
    self.headDimension = headDimension
    self.threads = threads
    self.hashCache = hashCache
    self.textEncoders = textEncoders
    self.vae = vae
  }

  /// The compute context with the thread count applied to the shared pool, process-wide (gemms
  /// split over it, and the weights' decoding in Transforms uses it too).
  public func computeContext() -> ComputeContext {
    let count = threads ?? ProcessInfo.processInfo.activeProcessorCount
    ThreadPool.useShared(threadCount: count)
    return ComputeContext(pool: ThreadPool.shared)
  }
}

/// A checkpoint opened into the sampling pipeline, with what it declares (detected once) and how
/// it will be sampled.
public struct LoadedModel {
  /// The path it was opened from.
  public let path: String
  public let pipeline: SDXLPipeline
  /// What the file declares (markers, metadata), detected once for sampling and the probe's verdict.
  public let declaration: PredictionReport
  /// How it is sampled: the override or the declaration.
  public var behaviour: ModelBehaviour { pipeline.behaviour }
  /// Where `behaviour` comes from, in a few words (`--prediction`, or the evidence).
  public let behaviourSource: String
  /// The file name without extension (A1111's `Model`).
  public let name: String
  /// Seconds spent opening and building the pipeline.
  public let loadSeconds: Double
  /// The adapters applied in memory (names, hashes, strengths).
  public let adapters: [AppliedAdapter]
  let hashCache: HashCache?
  /// The memory budget of a UNet batch (`ModelLoadOptions.batchBytes`).
  public let batchBytes: Int

  /// Opens the model artifact at `path` (any layout the weight source reads) with the parts
  /// `options` lend: the one place a model is opened for rendering. With `partsOnlyWhereMissing`
  /// (a reference render) they fill only components the artifact lacks, so its own text encoders
  /// and VAE are compared as shipped.
  public static func openWeights(
    _ path: String, options: ModelLoadOptions = ModelLoadOptions(), partsOnlyWhereMissing: Bool = false
  ) throws -> ModelWeights {
    guard partsOnlyWhereMissing else {
      let weights = try ModelWeights(artifact: path, textEncoders: options.textEncoders, vae: options.vae)
      if !options.adapters.isEmpty {
        try AdapterStack.open(options.adapters, skipUnmapped: options.skipUnmappedAdapterKeys).apply(to: weights.source)
      }
      return weights
    }
    let source = try WeightSource(path: path)
    let present = Set(source.names.map { component(ofSingleFileKey: $0) })
    if !present.contains(.clipL) || !present.contains(.clipG) {
      for part in options.textEncoders { try source.add(part: part, components: [.clipL, .clipG]) }
    }
    if !present.contains(.vae), let vae = options.vae { try source.add(part: vae, components: [.vae]) }
    return ModelWeights(source: source)
  }

  /// Opens `path` and builds the pipeline.
  public init(
    path: String, options: ModelLoadOptions = ModelLoadOptions(), partsOnlyWhereMissing: Bool = false
  ) throws {
    let clock = Date()
    let weights = try Self.openWeights(path, options: options, partsOnlyWhereMissing: partsOnlyWhereMissing)
    let file = weights.file
    declaration = PredictionDetector.detect(keys: Set(file.tensors.map(\.name)), metadata: file.metadata)
    let behaviour = options.behaviour ?? declaration.behaviour
    behaviourSource = options.behaviour == nil ? declaration.source : "--prediction"
    let headDimension =
      options.headDimension ?? file.metadata["rouwei.unet_head_dim"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil }
      ?? 64
    pipeline = try SDXLPipeline(
      weights: weights, behaviour: behaviour, headDimension: headDimension, compute: options.computeContext())
    self.path = path
    name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    hashCache = options.hashCache
    batchBytes = options.batchBytes
    adapters =
      partsOnlyWhereMissing
      ? [] : try options.adapters.map { AppliedAdapter(adapter: try AdapterFile(path: $0.path), spec: $0) }
    loadSeconds = Date().timeIntervalSince(clock)
  }

  /// 1024×1024 for full-size SDXL, 64×64 for the tiny test models (which draw at that size).
  public var defaultSize: ImageSize {
    pipeline.unet.modelChannels >= 320 ? ImageSize(width: 1024, height: 1024) : ImageSize(width: 64, height: 64)
  }

  /// Whether this is one of the tiny test models (fewer than SDXL's 320 UNet channels).
  public var isTiny: Bool { pipeline.unet.modelChannels < 320 }

  /// The AutoV2 hash A1111 writes as `Model hash` (through the hash cache when there is one).
  public func modelHash() -> String {
    pipeline.weights.source.primaryMapping.map {
      ModelHasher.hashes(of: $0, dataOffset: nil, cache: hashCache).hashes.autoV2
    } ?? ""
  }

  /// Runs `settings` in order, reporting every step of all of them as one `label` task.
  public func generate(
    _ settings: [GenerationSettings], label: String, progress: ProgressHandler?
  ) throws -> [GenerationResult] {
    var results: [GenerationResult] = []
    try generate(settings, label: label, progress: progress) { results.append($1) }
    return results
  }

  /// Runs `settings` in order and hands each result to `body` as it is made (so a caller that
  /// keeps only what it needs holds one image at a time). Images that can share a UNet batch run
  /// together up to `batchBytes` of working memory (`SDXLPipeline.generate(_:batchBytes:)`), each
  /// with the result it gets alone; a batch's prompts are encoded just before its steps and the
  /// text encoders dropped after, so they are never resident beside the UNet.
  public func generate(
    _ settings: [GenerationSettings], label: String, progress: ProgressHandler?,
    each body: (Int, GenerationResult) throws -> Void
  ) throws {
    let total = settings.reduce(0) { $0 + $1.steps }
    var done = 0
    progress?(RenderProgress(label: label, done: 0, total: total))
    try pipeline.generate(
      settings, batchBytes: batchBytes,
      onSteps: { images in
        done += images
        progress?(RenderProgress(label: label, done: done, total: total))
      }, each: body)
  }

  /// A1111's `parameters` text for a generation with this model.
  public func parameters(_ settings: GenerationSettings, modelHash: String) -> GenerationParameters {
    GenerationParameters(
      prompt: settings.prompt, negativePrompt: settings.negative, steps: settings.steps,
      sampler: settings.sampler.a1111Name, scheduleType: settings.scheduler.a1111Name, cfgScale: Double(settings.cfg),
      seed: settings.seed, width: settings.width, height: settings.height, modelHash: modelHash, modelName: name,
      extra: (settings.cfgRescale > 0 ? [.init("CFG Rescale phi", String(format: "%g", settings.cfgRescale))] : [])
        + (adapters.isEmpty
          ? []
          : [
            .init(
              "Lora hashes",
              adapters.map { "\(($0.name as NSString).deletingPathExtension): \($0.autoV3)" }.joined(separator: ", "))
          ]),
      version: "\(ToolInfo.name) \(ToolInfo.version)")
  }
}

/// An image size in pixels.
public struct ImageSize: Codable, Sendable, Equatable {
  public var width: Int
  public var height: Int
  public init(width: Int, height: Int) {
    self.width = width
    self.height = height
  }

  /// Reads `WxH` (`1024x1024`); nil unless both are positive integers.
  public init?(parsing text: String) {
    let parts = text.lowercased().split(separator: "x")
    guard parts.count == 2, let width = Int(parts[0]), let height = Int(parts[1]), width > 0, height > 0 else {
      return nil
    }
    self.init(width: width, height: height)
  }
}

/// Progress of a long task: `done` of `total` units (sampling steps) under `label`. A new label
/// starts a new task.
public struct RenderProgress: Sendable, Equatable {
  public var label: String
  public var done: Int
  public var total: Int
  public init(label: String, done: Int, total: Int) {
    self.label = label
    self.done = done
    self.total = total
  }
}

/// Receives progress; called on the rendering thread.
public typealias ProgressHandler = (RenderProgress) -> Void

extension SamplerKind {
  /// The name A1111 writes in its `parameters` text.
  public var a1111Name: String {
    switch self {
    case .euler: return "Euler"
    case .eulerAncestral: return "Euler a"
    case .dpmpp2m: return "DPM++ 2M"
    }
  }
}

extension SigmaScheduler {
  /// A1111's "Schedule type" label.
  public var a1111Name: String {
    switch self {
    case .normal: return "Automatic"
    case .karras: return "Karras"
    case .exponential: return "Exponential"
    case .sgmUniform: return "SGM Uniform"
    case .simple: return "Simple"
    }
  }
}
