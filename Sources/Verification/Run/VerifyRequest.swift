import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Weights

/// The whole verify run as a library call: render a prompt set, check every image, probe the
/// prediction type, compare with a reference; what `rouwei-ckpt verify` (and `convert`/`merge
/// --verify`) do. See `Manuals/verify.md` for an example.
public struct VerifyRequest {
  /// The checkpoint to verify.
  public var model: String
  /// A reference checkpoint rendered with the same seeds (the fp32 source of a conversion…).
  public var reference: String?
  /// The kind of change from the reference (nil: guessed from the UNet dtypes).
  public var change: ChangeKind?
  public var preset: VerifyPreset = .quick
  /// Prompts to render instead of the preset's set.
  public var prompts: [String] = []
  /// The negative prompt for `prompts` (nil: the model card's; empty for the tiny test models).
  public var negative: String?
  /// Seed of the first image; image i uses seed + i.
  public var seed: UInt64 = 1000
  /// Override the preset's steps.
  public var steps: Int?
  /// Override the preset's image size.
  public var size: ImageSize?
  /// Prompt syntax (nil: the preset's: a1111, or comfyUI for the tiny test models).
  public var promptStyle: PromptStyle?
  /// Folder for the PNGs and the contact sheet (nil: `verify-<model name>` in the current folder).
  public var outputFolder: String?
  /// Whether to run the behavioural prediction-type probe.
  public var probe = true
  /// How the models are opened and run.
  public var load: ModelLoadOptions

  public init(model: String, load: ModelLoadOptions = ModelLoadOptions()) {
    self.model = model
    self.load = load
  }

  /// The folder the images go to.
  public var folder: String {
    outputFolder ?? "verify-" + URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
  }

  /// The images to render for `model` (the tiny test models get their own prompts and size).
  public func plan(for model: LoadedModel) -> [GenerationSettings] {
    let tiny = model.isTiny
    let items =
      prompts.isEmpty
      ? preset.prompts(tiny: tiny)
      : prompts.map { VerifyPrompt(prompt: $0, negative: negative ?? (tiny ? "" : VerifyPreset.negative)) }
    let (presetWidth, presetHeight) = preset.size(tiny: tiny)
    let size = self.size ?? ImageSize(width: presetWidth, height: presetHeight)
    return items.enumerated().map { index, item in
      var settings = GenerationSettings(prompt: item.prompt)
      settings.negative = item.negative
      settings.steps = steps ?? preset.steps
      settings.cfg = preset.cfg
      settings.sampler = preset.sampler
      settings.seed = seed &+ UInt64(index)
      settings.width = size.width
      settings.height = size.height
      settings.promptStyle = promptStyle ?? preset.promptStyle(tiny: tiny)
      return settings
    }
  }

  /// Renders, checks and probes: the whole report. Progress goes to `progress` (labels
  /// `reference` and `verify`); nothing is printed.
  public func run(progress: ProgressHandler? = nil) throws -> VerifyReport {
    let started = Date()
    let directory = folder
    try Self.createFolder(directory)
    // The reference first, and released (its maps closed) before the model is loaded.
    let references = try reference.map { try renderReference($0, progress: progress) }
    let referenceSeconds = Date().timeIntervalSince(started)

    let model = try LoadedModel(path: self.model, options: load)
    let settings = plan(for: model)
    let changeKind = references.map {
      change ?? ChangeKind.inferred(model: model.pipeline.weights.source, reference: $0.source)
    }
    // Hashed once the first image is made: the file's SHA-256 need not delay the first UNet step.
    var hash: String?
    var images: [VerifyReport.Image] = []
    var sheet: [RGBImage] = []
    var text = 0.0, steps = 0.0, decode = 0.0
    var batches: [Int] = []
    // Each image is checked and written as it is made: only its report and 8-bit copy are kept.
    try model.generate(settings, label: "verify", progress: progress) { index, result in
      let setting = settings[index]
      text += result.textSeconds
      steps += result.samplingSeconds
      decode += result.decodeSeconds
      // Results come in order, a batch's images one after another.
      if batches.isEmpty || batches.reduce(0, +) == images.count { batches.append(result.batchImages) }
      let image = try FloatImage(tensor: result.image)
      let file = "\(directory)/\(String(format: "%02d", index + 1))-seed\(setting.seed).png"
      let bytes = image.rgbImage()
      let modelHash = hash ?? model.modelHash()
      hash = modelHash
      try PNGWriter.write(bytes, text: [model.parameters(setting, modelHash: modelHash).pngText], to: file)
      sheet.append(bytes)
      let reference = references.flatMap { references in
        index < references.images.count
          ? (references.images[index], ReferenceThresholds.default(for: changeKind ?? .lossless)) : nil
      }
      images.append(
        try VerifyReport.Image(
          prompt: setting.prompt, negative: setting.negative, seed: setting.seed, image: image,
          stepLatents: result.stepLatents, sigmas: result.sigmas,
          expectation: RangeExpectation.implied(by: setting.prompt, zeroTerminalSNR: model.behaviour.zeroTerminalSNR),
          file: file, reference: reference))
    }
    let contactSheet = try writeContactSheet(sheet, in: directory)

    var outcome: PredictionProbe.Outcome?
    let probeStarted = Date()
    if probe {
      outcome = try PredictionProbe.run(
        on: model, size: settings.first.map { ImageSize(width: $0.width, height: $0.height) } ?? model.defaultSize)
    }
    let probeSeconds = Date().timeIntervalSince(probeStarted)
    var report = VerifyReport(
      model: self.model, reference: reference, change: changeKind, settings: describe(settings.first, model: model),
      images: images, probe: outcome?.result, prediction: outcome?.verdict, contactSheet: contactSheet,
      warnings: outcome?.note.map { [$0] } ?? [])
    report.timings = VerifyReport.Timings(
      load: model.loadSeconds, reference: reference == nil ? 0 : referenceSeconds, text: text, steps: steps,
      probe: probeSeconds, decode: decode, total: Date().timeIntervalSince(started), batches: batches,
      gemmOperations: model.pipeline.compute.gemmOperations)
    return report
  }

  /// Creates `path` (and its parents) unless it is a folder already.
  static func createFolder(_ path: String) throws {
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue { return }
    do {
      try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
      let underlying = (error as? CocoaError)?.underlying.map { "\($0.localizedDescription)" }
      throw VerificationError.cannotCreateFolder(path: path, reason: underlying ?? error.localizedDescription)
    }
  }

  /// The reference's images (and its weights, to guess the kind of change); the pipeline is
  /// released on return.
  func renderReference(_ path: String, progress: ProgressHandler?) throws -> (
    images: [FloatImage], source: WeightSource
  ) {
    let model = try LoadedModel(path: path, options: load, partsOnlyWhereMissing: true)
    let results = try model.generate(plan(for: model), label: "reference", progress: progress)
    return (try results.map { try FloatImage(tensor: $0.image) }, model.pipeline.weights.source)
  }

  /// Writes the contact sheet of `images` (when there are any): its path.
  func writeContactSheet(_ images: [RGBImage], in directory: String) throws -> String? {
    guard let grid = ContactSheet.make(images) else { return nil }
    let path = directory + "/contact-sheet.png"
    try PNGWriter.write(grid, to: path)
    return path
  }

  /// The report's settings line.
  func describe(_ first: GenerationSettings?, model: LoadedModel) -> String {
    String(
      format: "%@ preset, %d steps %@, CFG %g, %d×%d, %@ prompts, sampled as %@%@ (%@)",
      preset.rawValue, first?.steps ?? 0, first?.sampler.rawValue ?? "", first?.cfg ?? 0, first?.width ?? 0,
      first?.height ?? 0, (first?.promptStyle ?? .comfyUI).rawValue, model.behaviour.prediction.rawValue,
      model.behaviour.zeroTerminalSNR ? " + zsnr" : "", model.behaviourSource)
  }
}
