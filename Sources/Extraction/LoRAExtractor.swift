import Adapters
import Checkpoint
import Foundation
import SafeTensors
import Transforms
import Weights

/// `extract-lora TUNED BASE -o L.safetensors`: what to extract and how ranks are chosen.
public struct ExtractionRequest: Sendable {
  public enum TextEncoders: String, Sendable, CaseIterable, Codable {
    /// Only when some text-encoder weight differs by more than `minimumDifference` (kohya's rule).
    case auto
    case always
    case never
  }

  public var tuned: String
  public var base: String
  /// The rank of Linear layers (the cap with `energy`/`rankRatio`).
  public var rank = 64
  /// The rank of convolution layers (LoCon); 0 leaves the ResNet blocks out; nil: `rank`.
  public var convRank: Int?
  /// Per layer, the smallest rank keeping this fraction of ΔW's squared Frobenius norm.
  public var energy: Double?
  /// Per layer, keep singular values ≥ S₀ / rankRatio (kohya resize_lora's sv_ratio).
  public var rankRatio: Double?
  public var textEncoders: TextEncoders = .auto
  public var minimumDifference: Float = 0.01
  /// Stored dtype of the factors.
  public var dtype: DType = .f16
  /// Always LAPACK's full SVD (default: a randomized range finder for matrices much larger than the rank).
  public var exact = false

  public init(tuned: String, base: String) {
    self.tuned = tuned
    self.base = base
  }

  func validate() throws {
    guard rank >= 1, rank <= AdapterFile.maximumRank else {
      throw ExtractionError.invalidRequest("--rank must be in 1…\(AdapterFile.maximumRank)")
    }
    if let convRank, convRank < 0 || convRank > AdapterFile.maximumRank {
      throw ExtractionError.invalidRequest("--conv-rank must be in 0…\(AdapterFile.maximumRank)")
    }
    if let energy, !(energy > 0 && energy <= 1) { throw ExtractionError.invalidRequest("--energy must be in (0, 1]") }
    if let rankRatio, !(rankRatio >= 1 && rankRatio.isFinite) {
      throw ExtractionError.invalidRequest("--rank-ratio must be ≥ 1")
    }
    if energy != nil && rankRatio != nil {
      throw ExtractionError.invalidRequest("give --energy or --rank-ratio, not both")
    }
    guard [.f16, .bf16, .f32].contains(dtype) else {
      throw ExtractionError.invalidRequest("factors are stored as fp16, bf16 or fp32")
    }
  }
}

public enum ExtractionError: Error, CustomStringConvertible, Sendable {
  case invalidRequest(String)
  case mismatch(key: String, reason: String)
  case decomposition(key: String)
  case nothingToExtract(String)

  public var description: String {
    switch self {
    case .invalidRequest(let reason): return reason
    case .mismatch(let key, let reason): return "'\(key)': \(reason) — the two models do not share an architecture"
    case .decomposition(let key): return "'\(key)': the SVD did not converge (non-finite differences?)"
    case .nothingToExtract(let reason): return reason
    }
  }
}

/// One extracted module.
public struct ExtractedLayer: Codable, Sendable {
  public var module: String
  public var shape: [Int]
  public var rank: Int
  /// The fraction of ‖ΔW‖²_F the rank keeps.
  public var retainedEnergy: Double
  public var maxDifference: Float

  enum CodingKeys: String, CodingKey {
    case module, shape, rank
    case retainedEnergy = "retained_energy"
    case maxDifference = "max_difference"
  }
}

public struct ExtractionReport: Codable, Sendable {
  public var output: String
  public var layers: [ExtractedLayer]
  /// Modules whose weights are identical in both models (nothing written for them).
  public var unchanged: Int
  /// Whether the text encoders were extracted, and why.
  public var textEncoders: String
  /// Energy kept over all layers: Σ kept / Σ total (squared singular values).
  public var totalRetainedEnergy: Double
  public var seconds: Double

  enum CodingKeys: String, CodingKey {
    case output, layers, unchanged
    case textEncoders = "text_encoders"
    case totalRetainedEnergy = "total_retained_energy"
    case seconds
  }
}

/// Extracts a kohya-format LoRA (LoCon on convolutions) from the difference of two SDXL models by
/// truncated SVD (LAPACK `sgesdd`), layer by layer: both weights are decoded, ΔW = tuned − base is
/// decomposed, lora_up = U·diag(S)[:, :r], lora_down = Vᵀ[:r], alpha = r (scale 1; no clamping).
public enum LoRAExtractor {
  /// The modules kohya's LoRA/LoCon networks target: attention blocks' Linear layers (and
  /// proj_in/out), ResNet and resampler layers as convolutions, the text encoders' attention and MLP.
  static func group(of key: String) -> Group? {
    if key.hasPrefix(SingleFilePrefix.unet) {
      let local = key.dropFirst(SingleFilePrefix.unet.count)
      guard local.hasPrefix("input_blocks.") || local.hasPrefix("middle_block.") || local.hasPrefix("output_blocks."),
        !local.hasPrefix("input_blocks.0.")
      else { return nil }
      if local.contains(".transformer_blocks.") || local.contains(".proj_in.") || local.contains(".proj_out.") {
        return .linear
      }
      for part in [".in_layers.2.", ".out_layers.3.", ".skip_connection.", ".emb_layers.1.", ".op.", ".conv."]
      where local.contains(part) {
        return .convolution
      }
      return nil
    }
    if key.hasPrefix(SingleFilePrefix.clipL) || key.hasPrefix(SingleFilePrefix.clipG) {
      for part in ["self_attn.", ".mlp.", ".attn.in_proj_weight", ".attn.out_proj."] where key.contains(part) {
        return .textEncoder
      }
    }
    return nil
  }

  enum Group { case linear, convolution, textEncoder }

  public static func extract(
    _ request: ExtractionRequest, output: String, progress: ((Int, Int) -> Void)? = nil
  ) throws -> ExtractionReport {
    let start = Date()
    try request.validate()
    let tuned = try WeightSource(path: request.tuned), base = try WeightSource(path: request.base)
    let convRank = request.convRank ?? request.rank
    var keys: [(String, Group)] = []
    for key in base.names {
      guard let group = group(of: key), let shape = base.shape(key), shape.count >= 2,
        !AdapterKeyMap.kohyaModules(of: key).isEmpty
      else { continue }
      if group == .convolution && convRank == 0 { continue }
      if group == .textEncoder && request.textEncoders == .never { continue }
      guard let other = tuned.shape(key) else {
        throw ExtractionError.mismatch(key: key, reason: "missing from \(request.tuned)")
      }
      guard other == shape else { throw ExtractionError.mismatch(key: key, reason: "shape \(other) vs \(shape)") }
      keys.append((key, group))
    }
    // kohya: the text encoders are left out unless one of their weights moved by more than 0.01.
    var textEncoderNote = request.textEncoders == .never ? "left out (--text-encoders never)" : "extracted"
    if request.textEncoders == .auto {
      var largest: Float = 0
      for (key, group) in keys where group == .textEncoder {
        largest = max(largest, try difference(key, tuned: tuned, base: base).reduce(0) { max($0, abs($1)) })
      }
      if largest <= request.minimumDifference {
        keys.removeAll { $0.1 == .textEncoder }
        textEncoderNote =
          "left out: no weight differs by more than \(request.minimumDifference) (max \(largest); --text-encoders always to force)"
      }
    }
    var layers: [ExtractedLayer] = []
    var stored: [(TensorSpec, [UInt8])] = []
    var unchanged = 0
    var kept = 0.0, total = 0.0
    for (index, (key, group)) in keys.enumerated() {
      progress?(index, keys.count)
      let shape = base.shape(key)!
      let delta = try difference(key, tuned: tuned, base: base)
      for (module, target) in AdapterKeyMap.kohyaModules(of: key) {
        var rows = shape[0]
        var values = delta
        if let slice = target.sliceIndex, let count = target.sliceCount {
          rows /= count
          let width = delta.count / shape[0]
          values = Array(delta[(slice * rows * width)..<((slice + 1) * rows * width)])
        }
        let columns = values.count / rows
        let largest = values.reduce(0) { max($0, abs($1)) }
        guard largest > 0 else {
          unchanged += 1
          continue
        }
        let wanted = group == .convolution ? convRank : request.rank
        // Large matrices and small ranks: the leading triplets by a randomized range finder;
        // otherwise (and with --exact) LAPACK's full thin SVD.
        let randomized = !request.exact && min(rows, columns) >= 4 * (wanted + 10)
        let decomposition =
          randomized
          ? SVD.leading(values, rows: rows, columns: columns, rank: wanted) : SVD(values, rows: rows, columns: columns)
        guard let svd = decomposition else { throw ExtractionError.decomposition(key: key) }
        let cap = min(wanted, svd.k)
        let rank = chooseRank(
          svd.singularValues, cap: cap, energy: request.energy, ratio: request.rankRatio, total: svd.totalEnergy)
        let energy = svd.retainedEnergy(rank: rank)
        let sum = svd.totalEnergy
        total += sum
        kept += sum * energy
        var up = [Float](repeating: 0, count: rows * rank)
        for o in 0..<rows { for i in 0..<rank { up[o * rank + i] = svd.u[o * svd.k + i] * svd.singularValues[i] } }
        let down = Array(svd.vt[0..<(rank * columns)])
        let isConvolution = shape.count == 4
        let downShape = isConvolution ? [rank] + shape.dropFirst() : [rank, columns]
        let upShape = isConvolution ? [rows, rank, 1, 1] : [rows, rank]
        stored.append(
          (
            TensorSpec(name: module + ".lora_down.weight", dtype: request.dtype, shape: downShape),
            encode(down, request.dtype)
          ))
        stored.append(
          (
            TensorSpec(name: module + ".lora_up.weight", dtype: request.dtype, shape: upShape),
            encode(up, request.dtype)
          ))
        stored.append(
          (TensorSpec(name: module + ".alpha", dtype: request.dtype, shape: []), encode([Float(rank)], request.dtype)))
        layers.append(
          ExtractedLayer(
            module: module, shape: [rows] + shape.dropFirst(), rank: rank, retainedEnergy: energy,
            maxDifference: largest))
      }
    }
    progress?(keys.count, keys.count)
    guard !layers.isEmpty else {
      throw ExtractionError.nothingToExtract("the two models have identical weights in every layer a LoRA targets")
    }
    let metadata = Self.metadata(request: request, output: output, layers: layers, tuned: tuned, convRank: convRank)
    try SafeTensorsWriter.write(
      to: output,
      entries: stored.map { spec, bytes in
        TensorEntry(spec: spec) { sink in try bytes.withUnsafeBytes { try sink.write($0) } }
      },
      metadata: metadata, inputs: [request.tuned, request.base])
    return ExtractionReport(
      output: output, layers: layers, unchanged: unchanged, textEncoders: textEncoderNote,
      totalRetainedEnergy: total > 0 ? kept / total : 1, seconds: Date().timeIntervalSince(start))
  }

  /// The rank for singular values `s`: `cap`, or fewer by the energy or ratio rule (at least 1).
  /// `total`: ‖ΔW‖²_F (default: Σ s², for a full decomposition).
  public static func chooseRank(_ s: [Float], cap: Int, energy: Double?, ratio: Double?, total: Double? = nil) -> Int {
    guard cap > 1, let first = s.first, first > 0 else { return 1 }
    if let energy {
      let total = total ?? s.reduce(0.0) { $0 + Double($1) * Double($1) }
      var running = 0.0
      for (index, value) in s.enumerated() {
        running += Double(value) * Double(value)
        if running >= energy * total * (1 - 1e-12) { return min(cap, index + 1) }
      }
      return cap
    }
    if let ratio {
      let threshold = first / Float(ratio)
      return max(1, min(cap, s.prefix { $0 >= threshold }.count))
    }
    return cap
  }

  static func difference(_ key: String, tuned: WeightSource, base: WeightSource) throws -> [Float] {
    let a = try tuned.decoder(key).decodeAll(), b = try base.decoder(key).decodeAll()
    return zip(a, b).map { $0 - $1 }
  }

  static func encode(_ values: [Float], _ dtype: DType) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: values.count * dtype.bitWidth / 8)
    values.withUnsafeBufferPointer { input in
      bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(input, to: dtype, into: $0, policy: .clamp) }
    }
    return bytes
  }

  /// kohya's `ss_*` identity keys and the SAI model spec, so A1111 files it under SDXL.
  static func metadata(
    request: ExtractionRequest, output: String, layers: [ExtractedLayer], tuned: WeightSource, convRank: Int
  ) -> [String: String] {
    let dynamic = request.energy != nil || request.rankRatio != nil
    let title = ((output as NSString).lastPathComponent as NSString).deletingPathExtension
    var args: [String: Any] = [:]
    if convRank > 0 {
      args["conv_dim"] = dynamic ? "Dynamic" : String(convRank);
      args["conv_alpha"] = dynamic ? "Dynamic" : String(convRank)
    }
    let argsText =
      (try? JSONSerialization.data(withJSONObject: args, options: [.sortedKeys])).map {
        String(decoding: $0, as: UTF8.self)
      } ?? "{}"
    let prediction =
      tuned.contains(MarkerKey.vPrediction) || tuned.metadata["modelspec.prediction_type"] == "v" ? "v" : "epsilon"
    return [
      "ss_network_module": "networks.lora",
      "ss_network_dim": dynamic ? "Dynamic" : String(request.rank),
      "ss_network_alpha": dynamic ? "Dynamic" : String(Double(request.rank)),
      "ss_network_args": argsText,
      "ss_base_model_version": "sdxl_base_v1-0",
      "ss_v2": "False",
      "ss_output_name": title,
      "ss_sd_model_name": (request.base as NSString).lastPathComponent,
      "ss_training_comment":
        "extracted by \(ToolInfo.name) extract-lora from \((request.tuned as NSString).lastPathComponent) − \((request.base as NSString).lastPathComponent)",
      "modelspec.sai_model_spec": "1.0.1",
      "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
      "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
      "modelspec.title": title,
      "modelspec.resolution": "1024x1024",
      "modelspec.prediction_type": prediction,
      "rouwei.tool": ToolInfo.name,
      "rouwei.version": ToolInfo.version,
    ]
  }
}
