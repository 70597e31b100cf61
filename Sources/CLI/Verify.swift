import ArgumentParser
import Checkpoint
import Diffusion
import Foundation
import Verification
import Weights

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

  @Argument(
    help:
      "The artifact to verify: a single-file .safetensors of any dtype, a GGUF, a diffusers folder, or a UNet-only file with --text-encoders/--vae."
  )
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

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  func validate() throws {
    if let size, ImageSize(parsing: size) == nil {
      throw ValidationError("--size must look like 1024x1024")
    }
    if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    if negative != nil && prompt.isEmpty { throw ValidationError("--negative needs --prompt") }
  }

  /// The library request these options describe.
  var request: VerifyRequest {
    var request = VerifyRequest(model: model, load: modelOptions.loadOptions)
    request.reference = reference
    // Adapters change the model on purpose: the reference comparison is reported, never failed.
    request.change = change ?? (modelOptions.loras.isEmpty ? nil : .merge)
    request.preset = preset
    request.prompts = prompt
    request.negative = negative
    request.seed = seed
    request.steps = steps
    request.size = size.flatMap(ImageSize.init(parsing:))
    request.promptStyle = promptStyle
    request.outputFolder = out
    request.probe = !noProbe
    return request
  }

  func run() throws {
    try InputCheck.require(model, for: .render)
    if let reference { try InputCheck.require(reference, for: .render) }
    let report = try withProgress(quiet: json) { try request.run(progress: $0) }
    if json {
      try printJSON(report)
    } else {
      print(report.text)
    }
    try requirePassed(report)
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
