import Adapters
import ArgumentParser
import Checkpoint
import Foundation
import SafeTensors
import Transforms
import Weights

/// `rouwei-ckpt merge`: weighted sums, add difference, SLERP, per-block α — streamed and recorded.
struct Merge: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Merge checkpoints: weighted sum, sums, add/train difference, SLERP, DARE, TIES, per-block weights.",
    discussion: """
      Every input is mapped and each output tensor is computed in float32 and written before the
      next, so two 7 GB models merge in a few hundred MB of memory. position_ids and scalars are
      copied from A, never blended. Prediction markers are decided: agreeing inputs keep theirs,
      disagreeing inputs need --prediction. The output records the recipe and every input's hashes.

      α runs as in A1111: 0 is A, 1 is B. ComfyUI's ratio runs the other way: --comfy-ratio R is α = 1 − R.

      Examples:
        rouwei-ckpt merge a.safetensors b.safetensors -o ab.safetensors --alpha 0.3
        rouwei-ckpt merge a.safetensors b.safetensors c.safetensors -o d.safetensors --method add-difference --alpha 1
        rouwei-ckpt merge a.safetensors b.safetensors c.safetensors -o s.safetensors --method sum --weights 0.5,0.3,0.2
        rouwei-ckpt merge a.safetensors b.safetensors -o mbw.safetensors --blocks 0,1,1,1,1,1,1,1,1,1,0.5,0,0,0,0,0,0,0,0,0
        rouwei-ckpt merge --recipe merge.json -o out.safetensors
        rouwei-ckpt merge base.safetensors --lora style.safetensors:0.8 --lora detail.safetensors:0.5 -o baked.safetensors
        rouwei-ckpt merge a.safetensors b.safetensors -o ab.safetensors --alpha 0.3 --verify --verify-reference a.safetensors

      With --lora, the one input is a base model and each adapter (kohya, diffusers/PEFT, LoCon, LoHa,
      LoKr, DoRA) is baked in: W' = W + strength·ΔW, in float32, rounded once to the base's dtype.
      FILE:S sets the strength on the UNet and the text encoders, FILE:S:T the text encoders apart;
      --lora-unet-strength/--lora-te-strength and --blocks (per-block multipliers) apply on top.

      --verify renders the result with `verify` once it is written and exits 1 if a check fails
      (the output is kept, so it can be inspected); a merge's reference comparison is reported, never failed.
      """)

  @Argument(help: "Inputs A, B, C… (.safetensors); optional with --recipe.")
  var inputs: [String] = []

  @Option(name: .shortAndLong, help: "The output file.")
  var output: String

  @Option(help: "Merge method: weighted-sum, sum, add-difference, slerp, train-difference, dare, ties.")
  var method: MergeMethod?

  @Option(help: "α: 0 keeps A, 1 takes B (weighted-sum, slerp) or adds all of B − C (add-difference).")
  var alpha: Double?

  @Option(help: "ComfyUI-style ratio (weight of A): α = 1 − ratio.")
  var comfyRatio: Double?

  @Option(help: "TIES: fraction of each delta kept, by magnitude (default 0.2).")
  var density: Double?

  @Option(help: "DARE: probability of dropping each delta element (default 0.5).")
  var dropRate: Double?

  @Option(help: "DARE: seed of the drop mask (default 0).")
  var seed: UInt64?

  @Option(help: "Weights of the sum method, one per input, comma-separated.")
  var weights: String?

  @Flag(help: "Scale --weights to sum to 1.")
  var normalize = false

  @Option(help: "20 per-block α values: BASE, IN00–IN08, M00, OUT00–OUT08 (comma-separated).")
  var blocks: String?

  @Option(help: "Block table: supermerger (default) or sd-mecha.")
  var blockConvention: BlockConvention?

  @Option(help: "α for the text encoders.")
  var textEncoderAlpha: Double?

  @Option(help: "α for the VAE.")
  var vaeAlpha: Double?

  @Option(help: "Take the VAE whole from this input: A, B, C… or 0, 1, 2…")
  var vaeFrom: String?

  @Option(help: "Take both text encoders whole from this input: A, B, C… or 0, 1, 2…")
  var textEncodersFrom: String?

  @Option(help: "Output dtype: fp32, fp16, bf16, fp8-e4m3fn, fp8-e5m2 (default: A's).")
  var dtype: TargetDType?

  @OptionGroup var predictionOptions: PredictionOptions

  @Option(help: "Keys not in every input: error (default) or take-a.")
  var missing: MissingKeyPolicy?

  @Flag(help: "Saturate merged values outside the output dtype instead of failing.")
  var clamp = false

  @Option(
    name: .customLong("lora"), parsing: .singleValue,
    help: ArgumentHelp(
      "Bake an adapter into the one input: FILE[:STRENGTH[:TE_STRENGTH]] (repeatable, applied in order).",
      valueName: "file[:s]"))
  var loras: [String] = []

  @Option(help: "With --lora: multiplies every adapter's strength on the UNet.")
  var loraUnetStrength: Double?

  @Option(help: "With --lora: multiplies every adapter's strength on the text encoders.")
  var loraTeStrength: Double?

  @Flag(
    help: "With --lora: apply what maps onto SDXL and list the adapter keys that do not (default: refuse the adapter).")
  var loraSkipUnmapped = false

  @Option(
    help:
      "A JSON recipe describing the whole merge (flags given as well override it); a merged file's `rouwei.merge.recipe` names inputs by file name and SHA-256, found next to the recipe or in --search folders."
  )
  var recipe: String?

  @Option(
    parsing: .singleValue,
    help:
      "With --recipe: a folder to look for its inputs in, by name or SHA-256 (repeatable; the recipe's own folder comes first)."
  )
  var search: [String] = []

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  @OptionGroup var hashCacheOptions: HashCacheOptions

  @OptionGroup var threadsOption: ThreadsOption

  @OptionGroup var verification: VerifyAfterWriting

  func validate() throws {
    if !search.isEmpty && recipe == nil { throw ValidationError("--search needs --recipe") }
    if !loras.isEmpty {
      guard inputs.count == 1, recipe == nil else {
        throw ValidationError("--lora bakes adapters into one base model: give exactly one input")
      }
      let mergeOnly: [(String, Bool)] = [
        ("--method", method != nil), ("--alpha", alpha != nil), ("--weights", weights != nil),
        ("--vae-from", vaeFrom != nil),
        ("--text-encoders-from", textEncodersFrom != nil), ("--missing", missing != nil),
        ("--comfy-ratio", comfyRatio != nil),
      ]
      if let flag = mergeOnly.first(where: { $0.1 }) {
        throw ValidationError("\(flag.0) is for merging models, not with --lora")
      }
    } else if loraUnetStrength != nil || loraTeStrength != nil || loraSkipUnmapped {
      throw ValidationError("--lora-unet-strength, --lora-te-strength and --lora-skip-unmapped need --lora")
    }
    if recipe == nil && loras.isEmpty && inputs.count < 2 {
      throw ValidationError("merge needs at least two inputs (or --recipe, or one base and --lora)")
    }
    if let dtype, dtype == .int8 || dtype == .fp8Scaled || dtype.ggmlType?.isQuantized == true {
      throw ValidationError("merge writes float dtypes; quantize the result with `convert --dtype int8`")
    }
    if recipe == nil && method == .sum && weights == nil { throw ValidationError("--method sum needs --weights") }
  }

  func run() throws {
    threadsOption.apply()
    if !loras.isEmpty { return try bake() }
    let request = try buildRequest()
    for input in request.inputs { try InputCheck.require(input, for: .merge) }
    let bar = ProgressBar("merging", total: 1, quiet: json)
    let report = try Merger.merge(request, output: output, hashCache: hashCacheOptions.cache()) { done, total in
      bar.update(Double(done) / Double(max(total, 1)))
    }
    bar.finish()
    if json {
      try verification.printJSON(report, output: output, change: .merge)
    } else {
      print(
        "\(report.output): \(report.tensorsMerged) tensors merged, \(report.tensorsCopied) copied; prediction \(report.prediction); \(String(format: "%.1f", report.seconds)) s"
      )
      if !report.clamped.isEmpty { print("clamped values in \(report.clamped.count) tensors") }
      if report.hashesFromCache > 0 {
        print("input hashes: \(report.hashesFromCache) of \(request.inputs.count) from the hash cache")
      }
      try verification.printText(output: output, change: .merge)
    }
  }

  /// `merge BASE --lora …`: adapters baked into the base.
  func bake() throws {
    try InputCheck.require(inputs[0], for: .merge)
    var request = LoRABakeRequest(base: inputs[0], adapters: try loras.map(AdapterSpec.parse))
    if let loraUnetStrength { request.unetStrength = loraUnetStrength }
    if let loraTeStrength { request.textEncoderStrength = loraTeStrength }
    if let blocks { request.blocks = try Merge.numbers(blocks, "--blocks") }
    if let blockConvention { request.blockConvention = blockConvention }
    if let dtype { request.dtype = dtype.dtype }
    request.skipUnmapped = loraSkipUnmapped
    request.clamp = clamp
    request.hashCache = hashCacheOptions.cache()
    let bar = ProgressBar("baking", total: 1, quiet: json)
    let report = try LoRABaker.bake(request, output: output) { done, total in
      bar.update(Double(done) / Double(max(total, 1)))
    }
    bar.finish()
    if json {
      try verification.printJSON(report, output: output, change: .merge)
      return
    }
    print(
      "\(report.output): \(report.tensorsChanged) tensors changed by \(report.adapters.count) adapter\(report.adapters.count == 1 ? "" : "s"), \(report.tensorsCopied) copied; \(String(format: "%.1f", report.seconds)) s"
    )
    for adapter in report.adapters {
      print(
        "  \(adapter.name) (AutoV3 \(adapter.autoV3)): strength \(adapter.strength), text encoders \(adapter.textEncoderStrength), \(adapter.modules) modules"
      )
    }
    for (name, keys) in report.skippedKeys.sorted(by: { $0.key < $1.key }) {
      print(
        "  \(name): skipped \(keys.count) unmapped keys: \(keys.prefix(5).joined(separator: ", "))\(keys.count > 5 ? ", …" : "")"
      )
    }
    if !report.clamped.isEmpty { print("clamped values in \(report.clamped.count) tensors") }
    try verification.printText(output: output, change: .merge)
  }

  func buildRequest() throws -> MergeRequest {
    var request: MergeRequest
    if let recipe {
      guard let data = FileManager.default.contents(atPath: recipe) else {
        throw MergeError.unreadable(path: recipe)
      }
      do {
        request = try JSONDecoder().decode(MergeRequest.self, from: data)
      } catch {
        throw MergeError.recipe(path: recipe, reason: "not a merge recipe: \(error)")
      }
      if inputs.isEmpty {
        let folders = [(recipe as NSString).deletingLastPathComponent].map { $0.isEmpty ? "." : $0 } + search
        request.inputs = try RecipeInputs.resolve(request, folders: folders, hashCache: hashCacheOptions.cache())
      } else {
        request.inputs = inputs
      }
      request.inputHashes = nil
    } else {
      request = MergeRequest(inputs: inputs)
    }
    if let method { request.method = method }
    if let alpha { request.alpha = alpha }
    if let comfyRatio { request.alpha = 1 - comfyRatio }
    if let weights { request.weights = try Merge.numbers(weights, "--weights") }
    if normalize { request.normalize = true }
    if let density { request.density = density }
    if let dropRate { request.dropRate = dropRate }
    if let seed { request.seed = seed }
    if let blocks { request.blocks = try Merge.numbers(blocks, "--blocks") }
    if let blockConvention { request.blockConvention = blockConvention }
    if let textEncoderAlpha { request.textEncoderAlpha = textEncoderAlpha }
    if let vaeAlpha { request.vaeAlpha = vaeAlpha }
    if let vaeFrom { request.vaeFrom = try Merge.inputIndex(vaeFrom) }
    if let textEncodersFrom { request.textEncodersFrom = try Merge.inputIndex(textEncodersFrom) }
    if let dtype { request.dtype = dtype.dtype }
    if let prediction = predictionOptions.prediction { request.prediction = prediction }
    if predictionOptions.ztsnr { request.zeroTerminalSNR = true }
    if let missing { request.missing = missing }
    if clamp { request.clamp = true }
    if request.method == .sum && request.weights == nil && weights == nil {
      throw ValidationError("--method sum needs --weights")
    }
    return request
  }

  static func numbers(_ text: String, _ flag: String) throws -> [Double] {
    try text.split(separator: ",").map {
      guard let value = Double($0.trimmingCharacters(in: .whitespaces)), value.isFinite else {
        throw ValidationError("\(flag): '\($0)' is not a number")
      }
      return value
    }
  }

  static func inputIndex(_ text: String) throws -> Int {
    if let number = Int(text) { return number }
    let letters = Array("ABCDEFGHIJ")
    if text.count == 1, let index = letters.firstIndex(of: Character(text.uppercased())) { return index }
    throw ValidationError("'\(text)' names no input (use A, B, C… or 0, 1, 2…)")
  }
}

extension MergeMethod: ExpressibleByArgument {}
extension BlockConvention: ExpressibleByArgument {}
extension MissingKeyPolicy: ExpressibleByArgument {}
