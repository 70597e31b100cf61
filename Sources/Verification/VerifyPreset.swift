import Diffusion
import Foundation
import SafeTensors

/// One image `verify` renders.
public struct VerifyPrompt: Codable, Sendable, Equatable {
  /// The prompt.
  public var prompt: String
  /// The negative prompt.
  public var negative: String

  /// A prompt and its negative.
  public init(prompt: String, negative: String) {
    self.prompt = prompt
    self.negative = negative
  }
}

/// How much `verify` renders: the RouWei model card's settings (Euler a, CFG 5–7, 20–28 steps at
/// ≈ 1 MP, prompts starting with `masterpiece, best quality`, negative `worst quality, low
/// quality, watermark`), scaled down for `quick` and `standard`.
public enum VerifyPreset: String, Codable, Sendable, CaseIterable {
  /// 3 prompts (black background, white background, portrait), 512², 10 steps: a gate that
  /// finishes in minutes on a laptop CPU.
  case quick
  /// The 5 default prompts at 768², 20 steps, CFG 5.
  case standard
  /// The 5 default prompts at 1024², 28 steps, CFG 6 (the model card's setting).
  case full

  /// The model card's negative prompt.
  public static let negative = "worst quality, low quality, watermark"

  /// The default prompt set for full-size models: a portrait, a scene, `black background` and
  /// `white background` (full range), and a long prompt split with `BREAK` (A1111 syntax).
  public static let prompts: [VerifyPrompt] = [
    "masterpiece, best quality, 1girl, solo, full body, standing, simple background, black background",
    "masterpiece, best quality, 1girl, solo, full body, standing, simple background, white background",
    "masterpiece, best quality, 1girl, solo, portrait, looking at viewer, smile, detailed eyes, upper body",
    "masterpiece, best quality, no humans, scenery, japanese street at dusk, paper lanterns, cherry blossoms, "
      + "detailed background",
    "masterpiece, best quality, 1girl, solo, long silver hair, blue eyes, school uniform, pleated skirt, "
      + "holding book, sitting on bench BREAK park, autumn, falling leaves, warm sunlight, bokeh, depth of field "
      + "BREAK wide shot, soft lighting, detailed background",
  ].map { VerifyPrompt(prompt: $0, negative: negative) }

  /// The prompt set for the tiny test models (`Fixtures/trained`), which know only coloured
  /// shapes on black or white (captions `{colour} {shape}, {background} background`, trained with
  /// the empty prompt as negative).
  public static let tinyPrompts: [VerifyPrompt] = [
    "blue triangle, black background", "yellow circle, white background",
    "red square, black background",
    "green circle, white background",
  ].map { VerifyPrompt(prompt: $0, negative: "") }

  /// The prompts of this preset; `tiny` for the tiny test models.
  public func prompts(tiny: Bool) -> [VerifyPrompt] {
    let all = tiny ? VerifyPreset.tinyPrompts : VerifyPreset.prompts
    return self == .quick ? Array(all.prefix(tiny ? 2 : 3)) : all
  }

  /// Image size: per preset for full-size models, the tiny models' 64×64 for them.
  public func size(tiny: Bool) -> (width: Int, height: Int) {
    if tiny { return (64, 64) }
    switch self {
    case .quick: return (512, 512)
    case .standard: return (768, 768)
    case .full: return (1024, 1024)
    }
  }

  /// Sampling steps.
  public var steps: Int {
    switch self {
    case .quick: return 10
    case .standard: return 20
    case .full: return 28
    }
  }

  /// CFG scale.
  public var cfg: Float { self == .full ? 6 : 5 }

  /// The sampler (the model card's Euler a).
  public var sampler: SamplerKind { .eulerAncestral }

  /// The prompt syntax: A1111's (the default prompts use `BREAK`, which ComfyUI core lacks) for
  /// full-size models, ComfyUI's for the tiny ones (how they were trained: HF tokenizers, "" encoded).
  public func promptStyle(tiny: Bool) -> PromptStyle { tiny ? .comfyUI : .a1111 }
}

extension ChangeKind {
  /// The kind of change from `reference` to `model`, from the dtypes of each UNet's bytes
  /// (`model.diffusion_model.*`): 8-bit weights in the model's UNet (fp8, or int8/scaled fp8 on
  /// the Linears only) give `fp8`; otherwise the dtype holding most bytes decides: a different
  /// float type gives fp16 or bf16, the same type `lossless` (pass `merge` yourself for a merge).
  public static func inferred(model: SafeTensorsFile, reference: SafeTensorsFile) -> ChangeKind {
    func bytes(_ file: SafeTensorsFile) -> [DType: Int] {
      var bytes: [DType: Int] = [:]
      for tensor in file.tensors where tensor.name.hasPrefix("model.diffusion_model.") {
        bytes[tensor.dtype, default: 0] += tensor.dataOffsets.end - tensor.dataOffsets.begin
      }
      return bytes
    }
    let target = bytes(model)
    let source = bytes(reference)
    let total = target.values.reduce(0, +)
    let narrow = target.filter { $0.key.bitWidth <= 8 }.values.reduce(0, +)
    // Per-row scales and norms stay wide; a tenth of the bytes in 8 bits is a quantized UNet.
    if total > 0 && narrow * 10 >= total && source.keys.allSatisfy({ $0.bitWidth > 8 }) {
      return .fp8
    }
    func dominant(_ bytes: [DType: Int]) -> DType? { bytes.max { $0.value < $1.value }?.key }
    guard let modelType = dominant(target), let referenceType = dominant(source),
      modelType != referenceType
    else { return .lossless }
    switch modelType {
    case .bf16: return .bf16
    case .f16: return .fp16
    case .f32, .f64: return .lossless
    default: return modelType.bitWidth <= 8 ? .fp8 : .fp16
    }
  }
}
