import ArgumentParser
import Extraction
import Foundation
import SafeTensors

/// `rouwei-ckpt extract-lora TUNED BASE -o L.safetensors`: a LoRA from a fine-tune by SVD.
struct ExtractLoRA: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "extract-lora",
    abstract: "Extract a LoRA (LoCon on convolutions) from a fine-tune: truncated SVD of TUNED − BASE.",
    discussion: """
      Layer by layer, both weights are read, ΔW = TUNED − BASE is decomposed with LAPACK (sgesdd) and
      the first singular vectors kept: lora_up = U·S, lora_down = Vᵀ, alpha = rank (scale 1, no clamping).
      Matrices much larger than the rank use a randomized range finder (--exact: always the full SVD).
      The modules are kohya's (attention, ResNet and resampler convolutions, text-encoder attention and
      MLP), named as kohya names SDXL LoRAs, with ss_* and modelspec metadata so A1111, Forge and
      ComfyUI load it. The text encoders are included only if a weight moved by more than 0.01
      (kohya's rule) unless --text-encoders always|never. Each layer's retained energy (the fraction
      of ‖ΔW‖² kept) is reported.

      Examples:
        rouwei-ckpt extract-lora tuned.safetensors base.safetensors -o style.safetensors --rank 64
        rouwei-ckpt extract-lora tuned.safetensors base.safetensors -o style.safetensors --rank 128 --energy 0.9
      """)

  @Argument(help: "The fine-tuned model.")
  var tuned: String

  @Argument(help: "The model it was tuned from.")
  var base: String

  @Option(name: .shortAndLong, help: "The LoRA file to write.")
  var output: String

  @Option(help: "Rank of Linear layers; the cap with --energy/--rank-ratio (default 64).")
  var rank = 64

  @Option(help: "Rank of convolution layers (LoCon); 0 leaves the ResNet blocks out (default: --rank).")
  var convRank: Int?

  @Option(help: "Per layer, the smallest rank that keeps this fraction of ‖ΔW‖² (0 < E ≤ 1).")
  var energy: Double?

  @Option(help: "Per layer, keep singular values ≥ the largest / R (kohya's sv_ratio).")
  var rankRatio: Double?

  @Option(help: "Text encoders: auto (if any weight moved by more than 0.01), always, never.")
  var textEncoders: ExtractionRequest.TextEncoders = .auto

  @Flag(
    help:
      "Always LAPACK's full SVD (default: a randomized range finder, two power iterations, for matrices ≥ 4× larger than the rank + 10)."
  )
  var exact = false

  @Option(help: "Factor dtype: fp16 (default), bf16, fp32.")
  var dtype: TargetDType = .fp16

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  @OptionGroup var threadsOption: ThreadsOption

  func run() throws {
    threadsOption.apply()
    for input in [tuned, base] { try InputCheck.require(input, for: .merge) }
    var request = ExtractionRequest(tuned: tuned, base: base)
    request.rank = rank
    request.convRank = convRank
    request.energy = energy
    request.rankRatio = rankRatio
    request.textEncoders = textEncoders
    request.exact = exact
    guard [.fp16, .bf16, .fp32].contains(dtype) else { throw ValidationError("--dtype: fp16, bf16 or fp32") }
    request.dtype = dtype.dtype
    let bar = ProgressBar("decomposing", total: 1, quiet: json)
    let report = try LoRAExtractor.extract(request, output: output) { done, total in
      bar.update(Double(done) / Double(max(total, 1)))
    }
    bar.finish()
    if json { return try printJSON(report) }
    print(
      "\(report.output): \(report.layers.count) modules, total retained energy \(String(format: "%.4f", report.totalRetainedEnergy)); \(report.unchanged) unchanged modules left out; text encoders \(report.textEncoders); \(String(format: "%.1f", report.seconds)) s"
    )
    let worst = report.layers.sorted { $0.retainedEnergy < $1.retainedEnergy }.prefix(5)
    print("lowest retained energy:")
    for layer in worst {
      print("  \(String(format: "%.4f", layer.retainedEnergy))  rank \(layer.rank)  \(layer.module) \(layer.shape)")
    }
  }
}

extension ExtractionRequest.TextEncoders: ExpressibleByArgument {}
