import Checkpoint
import Foundation
import SafeTensors
import Weights

/// How tensors are combined. Formulas (per element, in Float32; A, B, C are the inputs in order):
/// - `weighted-sum`: (1 − α)·A + α·B  (A1111's formula, evaluated exactly as written)
/// - `sum`: w₀·A + w₁·B + w₂·C + …  (weights as given, or normalised to sum 1 with `normalize`)
/// - `add-difference`: A + α·(B − C)
/// - `slerp`: spherical interpolation of each tensor as one vector, from A (α = 0) to B (α = 1);
///   falls back to the weighted sum when the vectors are nearly parallel (|cos Ω| > 0.9995)
/// - `train-difference`: A + 1.8·α·s·(B − C) with s = |B − A| / (|B − A| + |B − C|) (0 where both
///   are 0), supermerger's trainDifference
/// - `dare`: A + α·m⊙(B − A)/(1 − p), m a seeded Bernoulli(1 − p) keep-mask per element (DARE)
/// - `ties`: A + α·TIES(Mᵢ − A): each delta trimmed to its top `density` fraction by magnitude,
///   a sign elected per element by the sum of trimmed deltas, agreeing deltas averaged
public enum MergeMethod: String, Codable, Sendable, CaseIterable {
  case weightedSum = "weighted-sum"
  case sum
  case addDifference = "add-difference"
  case slerp
  case trainDifference = "train-difference"
  case dare
  case ties

  /// How many inputs the method takes (nil: two or more).
  public var inputCount: Int? {
    switch self {
    case .weightedSum, .slerp, .dare: return 2
    case .addDifference, .trainDifference: return 3
    case .sum, .ties: return nil
    }
  }
}

/// What to do with keys that not every input has.
public enum MissingKeyPolicy: String, Codable, Sendable, CaseIterable {
  /// Stop and list them (the default).
  case error
  /// Take A's tensor unmerged (keys only in other inputs are dropped).
  case takeA = "take-a"
}

/// A complete, repeatable description of a merge: what `--recipe` reads and what the output's
/// `rouwei.merge.recipe` metadata records.
public struct MergeRequest: Codable, Sendable, Equatable {
  public var inputs: [String]
  public var method: MergeMethod = .weightedSum
  /// α of weighted-sum, add-difference and slerp.
  public var alpha: Double = 0.5
  /// Per-input weights of `sum`.
  public var weights: [Double]?
  /// Scale `weights` to sum to 1.
  public var normalize: Bool = false
  /// 20 α values (BASE, IN00–IN08, M00, OUT00–OUT08) replacing `alpha` block by block.
  public var blocks: [Double]?
  public var blockConvention: BlockConvention = .supermerger
  /// α for CLIP-L and OpenCLIP-G (default: the BASE block, or `alpha`).
  public var textEncoderAlpha: Double?
  /// α for the VAE (default: as the convention says, or `alpha`).
  public var vaeAlpha: Double?
  /// Copy the text encoders whole from this input (0 = A).
  public var textEncodersFrom: Int?
  /// Copy the VAE whole from this input (0 = A).
  public var vaeFrom: Int?
  /// Output dtype name (`F16`, `BF16`, `F32`, …); default: A's dtype per tensor.
  public var dtype: DType?
  /// The result's prediction type when the inputs disagree (or to override).
  public var prediction: PredictionType?
  /// With `prediction` v: zero-terminal SNR.
  public var zeroTerminalSNR: Bool = false
  public var missing: MissingKeyPolicy = .error
  /// Saturate values outside the output dtype instead of failing.
  public var clamp: Bool = false
  /// TIES: the fraction of each delta kept (by magnitude).
  public var density: Double = 0.2
  /// DARE: the probability of dropping each delta element.
  public var dropRate: Double = 0.5
  /// DARE: the seed of the drop mask (with the key name, it fixes every element's draw).
  public var seed: UInt64 = 0
  /// The inputs' SHA-256 in `inputs` order, as recorded in a merged file's recipe (whose `inputs`
  /// are bare file names, never paths): how `RecipeInputs` finds them on another machine.
  public var inputHashes: [String]?

  public init(inputs: [String], method: MergeMethod = .weightedSum, alpha: Double = 0.5) {
    self.inputs = inputs
    self.method = method
    self.alpha = alpha
  }

  enum CodingKeys: String, CodingKey {
    case inputs, method, alpha, weights, normalize, blocks
    case blockConvention = "block_convention"
    case textEncoderAlpha = "text_encoder_alpha"
    case vaeAlpha = "vae_alpha"
    case textEncodersFrom = "text_encoders_from"
    case vaeFrom = "vae_from"
    case dtype, prediction
    case zeroTerminalSNR = "ztsnr"
    case missing, clamp, density
    case dropRate = "drop_rate"
    case seed
    case inputHashes = "input_sha256"
  }

  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    inputs = try c.decode([String].self, forKey: .inputs)
    method = try c.decodeIfPresent(MergeMethod.self, forKey: .method) ?? .weightedSum
    alpha = try c.decodeIfPresent(Double.self, forKey: .alpha) ?? 0.5
    weights = try c.decodeIfPresent([Double].self, forKey: .weights)
    normalize = try c.decodeIfPresent(Bool.self, forKey: .normalize) ?? false
    blocks = try c.decodeIfPresent([Double].self, forKey: .blocks)
    blockConvention = try c.decodeIfPresent(BlockConvention.self, forKey: .blockConvention) ?? .supermerger
    textEncoderAlpha = try c.decodeIfPresent(Double.self, forKey: .textEncoderAlpha)
    vaeAlpha = try c.decodeIfPresent(Double.self, forKey: .vaeAlpha)
    textEncodersFrom = try c.decodeIfPresent(Int.self, forKey: .textEncodersFrom)
    vaeFrom = try c.decodeIfPresent(Int.self, forKey: .vaeFrom)
    dtype = try c.decodeIfPresent(DType.self, forKey: .dtype)
    prediction = try c.decodeIfPresent(PredictionType.self, forKey: .prediction)
    zeroTerminalSNR = try c.decodeIfPresent(Bool.self, forKey: .zeroTerminalSNR) ?? false
    missing = try c.decodeIfPresent(MissingKeyPolicy.self, forKey: .missing) ?? .error
    clamp = try c.decodeIfPresent(Bool.self, forKey: .clamp) ?? false
    density = try c.decodeIfPresent(Double.self, forKey: .density) ?? 0.2
    dropRate = try c.decodeIfPresent(Double.self, forKey: .dropRate) ?? 0.5
    seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 0
    inputHashes = try c.decodeIfPresent([String].self, forKey: .inputHashes)
  }

  /// Checks counts and ranges; throws `MergeError.invalidRequest` with the reason.
  public func validate() throws {
    if let needed = method.inputCount, inputs.count != needed {
      throw MergeError.invalidRequest("\(method.rawValue) takes \(needed) inputs, got \(inputs.count)")
    }
    if method == .sum {
      guard inputs.count >= 2 else { throw MergeError.invalidRequest("sum takes two or more inputs") }
      guard let weights, weights.count == inputs.count else {
        throw MergeError.invalidRequest(
          "sum needs one weight per input (--weights), got \(weights?.count ?? 0) for \(inputs.count)")
      }
      if normalize && abs(weights.reduce(0, +)) < 1e-12 {
        throw MergeError.invalidRequest("weights sum to zero: cannot normalise")
      }
    }
    if method == .ties && inputs.count < 2 {
      throw MergeError.invalidRequest("ties takes a base and one or more models")
    }
    if !(density > 0 && density <= 1) { throw MergeError.invalidRequest("--density must be in (0, 1]") }
    if !(dropRate >= 0 && dropRate < 1) { throw MergeError.invalidRequest("--drop-rate must be in [0, 1)") }
    if let blocks, blocks.count != 20 {
      throw MergeError.invalidRequest(
        "--blocks takes 20 numbers (BASE, IN00–IN08, M00, OUT00–OUT08), got \(blocks.count)")
    }
    if blocks != nil && method == .sum { throw MergeError.invalidRequest("--blocks applies to α methods, not sum") }
    for (name, index) in [("--vae-from", vaeFrom), ("--text-encoders-from", textEncodersFrom)] {
      if let index, !(0..<inputs.count).contains(index) {
        throw MergeError.invalidRequest("\(name) names input \(index), but there are \(inputs.count)")
      }
    }
    if zeroTerminalSNR && prediction != .v { throw MergeError.invalidRequest("--ztsnr needs --prediction v") }
    if let dtype, !FloatCodec.supported.contains(dtype) {
      throw MergeError.invalidRequest("output dtype \(dtype.rawValue) is not supported")
    }
  }
}

/// Errors of the merge layer; each names the files and keys concerned.
public enum MergeError: Error, CustomStringConvertible, Sendable {
  case invalidRequest(String)
  case shapeMismatch(key: String, shapes: [(file: String, shape: [Int])])
  case missingKeys(keys: [String], files: [String])
  case predictionDisagreement(details: [(file: String, prediction: String)])
  case notFloat(key: String, file: String, dtype: DType)
  case overflow(key: String, target: DType, count: Int)
  case recipe(path: String, reason: String)
  /// A recipe's input is in none of the folders searched (by name, or by SHA-256 when recorded).
  case inputNotFound(name: String, sha256: String?, searched: [String], mismatched: [String])
  /// A recipe (or input) that cannot be read: I/O, exit 3 in the CLI.
  case unreadable(path: String)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    if case .unreadable = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .invalidRequest(let reason):
      return reason
    case .shapeMismatch(let key, let shapes):
      let list = shapes.map { "\($0.file) \($0.shape)" }.joined(separator: ", ")
      return "'\(key)' has different shapes: \(list) — these models do not share an architecture"
    case .missingKeys(let keys, let files):
      let list = keys.prefix(10).joined(separator: ", ")
      return
        "\(keys.count) keys are not in every input (\(files.joined(separator: ", "))): \(list)\(keys.count > 10 ? ", …" : ""). Use --missing take-a to keep A's tensors for them"
    case .predictionDisagreement(let details):
      let list = details.map { "\($0.file): \($0.prediction)" }.joined(separator: "; ")
      return
        "the inputs disagree on prediction type (\(list)). A merge of an epsilon and a v-prediction model is neither; say what the result is with --prediction eps|v [--ztsnr]"
    case .notFloat(let key, let file, let dtype):
      return "\(file): '\(key)' is \(dtype.rawValue), which cannot be blended"
    case .overflow(let key, let target, let count):
      return
        "'\(key)': \(count) merged values do not fit \(target.rawValue); nothing was written (use --clamp, or a wider --dtype)"
    case .recipe(let path, let reason):
      return "\(path): \(reason)"
    case .unreadable(let path):
      return "\(path): cannot read the file"
    case .inputNotFound(let name, let sha256, let searched, let mismatched):
      let wanted = sha256.map { "'\(name)' (SHA-256 \($0))" } ?? "'\(name)'"
      let other = mismatched.isEmpty ? "" : "; \(mismatched.joined(separator: ", ")) has that name but another SHA-256"
      return
        "recipe input \(wanted) not found in \(searched.joined(separator: ", "))\(other) (add its folder with --search DIR)"
    }
  }
}
