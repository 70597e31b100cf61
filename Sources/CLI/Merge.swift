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
        rouwei-ckpt merge a.safetensors b.safetensors -o ab.safetensors --alpha 0.3 --verify --verify-reference a.safetensors

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

  @Option(help: "A JSON recipe describing the whole merge (flags given as well override it); a merged file's `rouwei.merge.recipe` names inputs by file name and SHA-256, found next to the recipe or in --search folders.")
  var recipe: String?

  @Option(parsing: .singleValue, help: "With --recipe: a folder to look for its inputs in, by name or SHA-256 (repeatable; the recipe's own folder comes first).")
  var search: [String] = []

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  @OptionGroup var hashCacheOptions: HashCacheOptions

  @OptionGroup var threadsOption: ThreadsOption

  @OptionGroup var verification: VerifyAfterWriting

  func validate() throws {
    if !search.isEmpty && recipe == nil { throw ValidationError("--search needs --recipe") }
    if recipe == nil && inputs.count < 2 { throw ValidationError("merge needs at least two inputs (or --recipe)") }
    if let dtype, dtype == .int8 || dtype == .fp8Scaled || dtype.ggmlType?.isQuantized == true {
      throw ValidationError("merge writes float dtypes; quantize the result with `convert --dtype int8`")
    }
    if recipe == nil && method == .sum && weights == nil { throw ValidationError("--method sum needs --weights") }
  }

  func run() throws {
    threadsOption.apply()
    let request = try buildRequest()
    for input in request.inputs { try InputCheck.require(input, for: .merge) }
    let bar = ProgressBar("merging", total: 1, quiet: json)
    let report = try Merger.merge(request, output: output, hashCache: hashCacheOptions.cache()) { done, total in bar.update(Double(done) / Double(max(total, 1))) }
    bar.finish()
    if json {
      try verification.printJSON(report, output: output, change: .merge)
    } else {
      print("\(report.output): \(report.tensorsMerged) tensors merged, \(report.tensorsCopied) copied; prediction \(report.prediction); \(String(format: "%.1f", report.seconds)) s")
      if !report.clamped.isEmpty { print("clamped values in \(report.clamped.count) tensors") }
      if report.hashesFromCache > 0 {
        print("input hashes: \(report.hashesFromCache) of \(request.inputs.count) from the hash cache")
      }
      try verification.printText(output: output, change: .merge)
    }
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
