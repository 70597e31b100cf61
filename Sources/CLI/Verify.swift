import ArgumentParser
import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors
import Verification

extension VerifyPreset: ExpressibleByArgument {}
extension ChangeKind: ExpressibleByArgument {}

/// `rouwei-ckpt verify`: render a checkpoint, check the images and the prediction type, compare
/// with a reference, and fail loudly when the artifact is broken.
struct Verify: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Render a checkpoint on the CPU and check that it works (images, prediction type, reference).",
    discussion: """
      Renders a prompt set (a portrait, a scene, black and white backgrounds, a long BREAK prompt; \
      coloured shapes for the tiny test models) with the RouWei model card's settings, writes each PNG \
      with its parameters and a contact sheet, and checks every image: finite latents at every step, \
      not blank, not noise, not washed out, not burned, full range where a black background is asked \
      of a zero-terminal-SNR model. A behavioural probe runs the UNet at high noise and says whether \
      it predicts epsilon or v; a file marked one way that behaves the other fails. With --reference \
      both checkpoints render the same seeds and each pair must reach the PSNR/SSIM minimum of the \
      kind of change (--change, else guessed from the UNet dtypes).

      Exit codes: 0 passed, 1 a check failed (the report says which and why), 2 bad input, 3 I/O failure.
      """)

  @Argument(help: "The checkpoint to verify (single-file SDXL .safetensors).")
  var model: String

  @Option(
    help:
      "A reference checkpoint (the fp32 source of a conversion, a merge input) rendered with the same seeds."
  )
  var reference: String?

  @Option(
    help:
      "The kind of change from the reference: lossless, fp16, bf16, fp8, merge (default: from the UNet dtypes)."
  )
  var change: ChangeKind?

  @Option(
    help:
      "quick (512², 10 steps, 3 prompts), standard (768², 20 steps), full (1024², 28 steps, CFG 6)."
  )
  var preset: VerifyPreset = .quick

  @Option(
    name: .shortAndLong, parsing: .singleValue,
    help: "A prompt to render instead of the default set (repeatable).")
  var prompt: [String] = []

  @Option(
    name: .shortAndLong, help: "The negative prompt for --prompt (default: the model card's).")
  var negative: String?

  @Option(help: "Seed of the first image; image i uses seed + i.")
  var seed: UInt64 = 1000

  @Option(help: "Override the preset's steps.")
  var steps: Int?

  @Option(help: "Override the preset's image size WxH.")
  var size: String?

  @Option(
    help: "Prompt syntax and weighting (default: a1111, or comfyUI for the tiny test models).")
  var promptStyle: PromptStyle?

  @Option(help: "Folder for the PNGs and the contact sheet (default: ./verify-<model name>).")
  var out: String?

  @Flag(help: "Skip the prediction-type probe.")
  var noProbe = false

  @OptionGroup var modelOptions: ModelOptions

  @Flag(help: "Print the report as JSON.")
  var json = false

  func validate() throws {
    if let size, Sample.parseSize(size) == nil {
      throw ValidationError("--size must look like 1024x1024")
    }
    if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    if negative != nil && prompt.isEmpty { throw ValidationError("--negative needs --prompt") }
  }

  /// The images to render, with the model's size granularity applied.
  func plan(_ pipeline: SDXLPipeline) -> [GenerationSettings] {
    let tiny = pipeline.unet.modelChannels < 320
    let prompts =
      prompt.isEmpty
      ? preset.prompts(tiny: tiny)
      : prompt.map {
        VerifyPrompt(prompt: $0, negative: negative ?? (tiny ? "" : VerifyPreset.negative))
      }
    let (width, height) = size.flatMap(Sample.parseSize) ?? preset.size(tiny: tiny)
    return prompts.enumerated().map { index, item in
      var settings = GenerationSettings(prompt: item.prompt)
      settings.negative = item.negative
      settings.steps = steps ?? preset.steps
      settings.cfg = preset.cfg
      settings.sampler = preset.sampler
      settings.seed = seed &+ UInt64(index)
      settings.width = width
      settings.height = height
      settings.promptStyle = promptStyle ?? preset.promptStyle(tiny: tiny)
      return settings
    }
  }

  func run() throws {
    try InputCheck.require(model, for: .render)
    if let reference { try InputCheck.require(reference, for: .render) }
    let report = try makeReport()
    if json {
      try printJSON(report)
    } else {
      print(report.text)
    }
    if !report.passed { throw VerificationFailure(failures: report.failures.count) }
  }

  /// Renders, checks and probes: the whole report (printing only progress).
  func makeReport() throws -> VerifyReport {
    let directory =
      out ?? "verify-" + URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

    // The reference first, and released before the model is loaded: two SDXL pipelines at once
    // would need about 28 GB.
    var referenceImages: [FloatImage] = []
    var changeKind: ChangeKind?
    if let reference {
      var referenceRender = try Render.load(model: reference, modelOptions: modelOptions)
      try referenceRender.generate(plan(referenceRender.pipeline), label: "reference", quiet: json)
      referenceImages = try referenceRender.results.map { try FloatImage(tensor: $0.image) }
      changeKind =
        try change
        ?? ChangeKind.inferred(
          model: SafeTensorsFile(path: model), reference: SafeTensorsFile(path: reference))
    }

    var render = try Render.load(model: model, modelOptions: modelOptions)
    let settings = plan(render.pipeline)
    try render.generate(settings, label: "verify", quiet: json)
    let zeroTerminalSNR = render.behaviour.zeroTerminalSNR
    var images: [VerifyReport.Image] = []
    var sheet: [RGBImage] = []
    for (index, (setting, result)) in zip(settings, render.results).enumerated() {
      let image = try FloatImage(tensor: result.image)
      let file = "\(directory)/\(String(format: "%02d", index + 1))-seed\(setting.seed).png"
      let bytes = image.rgbImage()
      try PNGWriter.write(bytes, text: [render.parameters(setting).pngText], to: file)
      sheet.append(bytes)
      let reference =
        index < referenceImages.count
        ? (referenceImages[index], ReferenceThresholds.default(for: changeKind ?? .lossless)) : nil
      images.append(
        try VerifyReport.Image(
          prompt: setting.prompt, negative: setting.negative, seed: setting.seed, image: image,
          stepLatents: result.stepLatents, sigmas: result.sigmas,
          expectation: RangeExpectation.implied(
            by: setting.prompt, zeroTerminalSNR: zeroTerminalSNR),
          file: file, reference: reference))
    }
    var contactSheet: String?
    if let grid = ContactSheet.make(sheet) {
      let path = directory + "/contact-sheet.png"
      try PNGWriter.write(grid, to: path)
      contactSheet = path
    }

    var probe: PredictionProbe.Result?
    var verdict: PredictionVerdict?
    var warnings: [String] = []
    if !noProbe {
      let outcome = try PredictionProbeRun.run(
        render.pipeline, size: (settings.first?.width ?? 64, settings.first?.height ?? 64))
      if let note = outcome.note { warnings.append(note) }
      probe = outcome.result
      verdict = outcome.verdict
    }

    let first = settings.first
    let description = String(
      format: "%@ preset, %d steps %@, CFG %g, %d×%d, %@ prompts, sampled as %@%@ (%@)",
      preset.rawValue, first?.steps ?? 0, first?.sampler.rawValue ?? "", first?.cfg ?? 0,
      first?.width ?? 0,
      first?.height ?? 0, (first?.promptStyle ?? .comfyUI).rawValue,
      render.behaviour.prediction.rawValue,
      zeroTerminalSNR ? " + zsnr" : "", render.behaviourSource)
    let report = VerifyReport(
      model: model, reference: reference, change: changeKind, settings: description, images: images,
      probe: probe, prediction: verdict, contactSheet: contactSheet, warnings: warnings)
    return report
  }
}

/// Thrown after the report is printed when a check failed: exit code 1.
struct VerificationFailure: Error, ExitStatusProviding, CustomStringConvertible {
  let failures: Int
  var exitStatus: ExitStatus { .verificationFailed }
  var description: String {
    "verification failed (\(failures) problem\(failures == 1 ? "" : "s"); see the report)"
  }
}

extension VerificationError: ExitStatusProviding {
  /// Bad input (exit 2); the module does no I/O.
  public var exitStatus: ExitStatus { isIOFailure ? .ioFailure : .badInput }
}
