import Tensors

/// The text conditioning of one SDXL prompt: the cross-attention context and the pooled
/// OpenCLIP-G embedding, from which the UNet's adm vector `y` is built.
public struct SDXLConditioning {
  /// `[1, 77·k, C_L + C_G]` (2048 wide for SDXL): per token, CLIP-L's penultimate hidden state
  /// followed by OpenCLIP-G's, k chunks concatenated along the tokens.
  public var context: Tensor
  /// `[1, P]` (1280 for SDXL): OpenCLIP-G's pooled projection of the first chunk, unweighted.
  public var pooled: Tensor

  /// A conditioning from its two tensors.
  public init(context: Tensor, pooled: Tensor) {
    self.context = context
    self.pooled = pooled
  }

  /// Width of each embedding of the size conditioning (SDXL: 256).
  public static let sizeEmbeddingWidth = 256

  /// The number of context tokens (77 per chunk).
  public var tokenCount: Int { context.shape[1] }

  /// The adm vector y = [pooled ‖ e(orig_h) ‖ e(orig_w) ‖ e(crop_top) ‖ e(crop_left) ‖
  /// e(target_h) ‖ e(target_w)], `[1, P + 6·256]` (2816 for SDXL), each e a 256-wide
  /// [cos ‖ sin] embedding (sgm `ConcatTimestepEmbedderND`, diffusers `add_time_proj`).
  ///
  /// Defaults in the front ends: original = target = the image size, crop (0, 0).
  public func admVector(
    originalSize: (height: Int, width: Int), crop: (top: Int, left: Int),
    targetSize: (height: Int, width: Int)
  ) -> Tensor {
    let pooledWidth = pooled.count
    let width = Self.sizeEmbeddingWidth
    let result = Tensor(zeros: Shape(1, pooledWidth + 6 * width))
    result.pointer.update(from: pooled.pointer, count: pooledWidth)
    let values = [
      originalSize.height, originalSize.width, crop.top, crop.left, targetSize.height,
      targetSize.width,
    ]
    // sgm ConcatTimestepEmbedderND: one Timestep(256) per scalar, [cos ‖ sin] each.
    let embeddings = sinusoidalEmbedding(values.map { Float($0) }, dimension: width)
    (result.pointer + pooledWidth).update(from: embeddings.pointer, count: embeddings.count)
    return result
  }

  /// The same shapes filled with zeros: A1111's, sgm's and diffusers' conditioning for an empty
  /// negative prompt (ComfyUI encodes "" instead).
  public func zeroed() -> SDXLConditioning {
    SDXLConditioning(context: Tensor(zeros: context.shape), pooled: Tensor(zeros: pooled.shape))
  }
}

extension SDXLPromptTokens {
  /// diffusers' `encode_prompt` tokenization: the text as is (no weight syntax), truncated to 75
  /// tokens, one chunk per encoder; CLIP-L padded with the end token, OpenCLIP-G with 0.
  public static func plain(_ prompt: String, tokenizer: CLIPTokenizer) -> SDXLPromptTokens {
    let ids = Array(tokenizer.encode(prompt).prefix(TokenChunk.capacity))
    func chunk(pad: Int32) -> TokenChunk {
      let body = [CLIPVocabulary.startToken] + ids + [CLIPVocabulary.endToken]
      return TokenChunk(
        tokens: body + [Int32](repeating: pad, count: TokenChunk.length - body.count),
        weights: [Double](repeating: 1, count: TokenChunk.length))
    }
    return SDXLPromptTokens(clipL: [chunk(pad: CLIPVocabulary.endToken)], clipG: [chunk(pad: 0)])
  }
}

/// What an empty negative prompt conditions on. This visibly changes images, so front ends that
/// reproduce another tool's output must pick the same.
public enum EmptyNegative: String, Sendable, CaseIterable {
  /// All-zero context and pooled embedding (the size embeddings of y stay): A1111
  /// (`force_zero_embeddings`), sgm, and diffusers with `negative_prompt=None`.
  case zeros
  /// The empty prompt encoded like any other: ComfyUI.
  case encode
}

/// Turns prompts into SDXL conditioning: tokenization and chunking in A1111's or ComfyUI's way
/// (`PromptChunker`), both CLIP towers at their penultimate layer, token weights applied per
/// encoder (`PromptWeighting`), and OpenCLIP-G's pooled embedding from the first chunk.
///
/// ```swift
/// let weights = try ModelWeights(path: "model.safetensors")
/// let text = try SDXLTextConditioner(weights: weights)
/// let positive = try text.encode("a (red:1.2) circle", style: .comfyUI)
/// let y = positive.admVector(originalSize: (1024, 1024), crop: (0, 0), targetSize: (1024, 1024))
/// ```
///
/// The towers keep their matrices as stored in the map (widened one at a time while they run) and
/// hold only norms, biases and one scratch matrix in Float32; `SDXLPipeline` drops the conditioner
/// and the towers' mapped pages once the prompts are encoded.
public final class SDXLTextConditioner {
  /// CLIP-L (first embedder).
  public let clipL: CLIPTextEncoder
  /// OpenCLIP-G (second embedder, pooled output).
  public let clipG: CLIPTextEncoder
  /// The tokenizer for CLIP-L in the A1111 style and both encoders in the ComfyUI style.
  public let tokenizer: CLIPTokenizer
  /// A1111's OpenCLIP-G tokenizer (open_clip's clean-up: ftfy and HTML unescaping).
  public let openCLIPTokenizer: CLIPTokenizer

  /// The text encoders of an SDXL single-file checkpoint (`weights` unscoped: the whole file).
  /// - Parameters:
  ///   - tokenizer: default: the bundled vocabulary with HF's (`.ftfy`) clean-up.
  ///   - residency: when the towers widen their weights (see `WeightResidency`).
  /// - Throws: `ModelError` naming the first missing or misshaped weight; `DiffusionError` when
  ///   the bundled vocabulary cannot be loaded.
  public convenience init(
    weights: ModelWeights, context: ComputeContext = ComputeContext(),
    tokenizer: CLIPTokenizer? = nil, residency: WeightResidency = .resident
  ) throws {
    let clipL = try CLIPTextEncoder(
      sdxl: weights, kind: .clipL, context: context, residency: residency)
    let clipG = try CLIPTextEncoder(
      sdxl: weights, kind: .openCLIPG, context: context, residency: residency)
    try self.init(clipL: clipL, clipG: clipG, tokenizer: tokenizer ?? CLIPTokenizer.bundled())
  }

  /// A conditioner over two built towers.
  /// - Throws: `ModelError.unsupportedModel` when G has no projection.
  public init(clipL: CLIPTextEncoder, clipG: CLIPTextEncoder, tokenizer: CLIPTokenizer) throws {
    guard clipG.configuration.projectionWidth != nil else {
      throw ModelError.unsupportedModel(
        file: clipG.weights.file.path,
        reason: "OpenCLIP-G has no text_projection, so there is no pooled embedding for SDXL")
    }
    self.clipL = clipL
    self.clipG = clipG
    self.tokenizer = tokenizer
    openCLIPTokenizer = CLIPTokenizer(vocabulary: tokenizer.vocabulary, cleaning: .openCLIP)
  }

  /// Context width C_L + C_G (2048 for SDXL).
  public var contextWidth: Int { clipL.configuration.width + clipG.configuration.width }
  /// Pooled width P (1280 for SDXL).
  public var pooledWidth: Int { clipG.configuration.projectionWidth ?? 0 }
  /// Width of the adm vector, P + 6·256 (2816 for SDXL).
  public var admWidth: Int { pooledWidth + 6 * SDXLConditioning.sizeEmbeddingWidth }

  /// Both encoders' chunks for `prompt` in `style` (see `PromptChunker.sdxl`).
  public func tokens(_ prompt: String, style: PromptStyle) -> SDXLPromptTokens {
    PromptChunker.sdxl(
      prompt, style: style, tokenizer: tokenizer, openCLIPTokenizer: openCLIPTokenizer)
  }

  /// Encodes `prompt` with `style`'s syntax and chunking, and `weighting` (default: the style's
  /// own, ComfyUI's interpolation for `.comfyUI`, A1111's "Original" emphasis for `.a1111`).
  public func encode(
    _ prompt: String, style: PromptStyle = .comfyUI, weighting: TokenWeighting? = nil
  ) throws -> SDXLConditioning {
    try encode(tokens(prompt, style: style), weighting: weighting ?? Self.weighting(for: style))
  }

  /// The weighting a front end applies by default.
  public static func weighting(for style: PromptStyle) -> TokenWeighting {
    switch style {
    case .a1111: return .a1111
    case .comfyUI: return .comfyUI
    }
  }

  /// Encodes a prompt and its negative for classifier-free guidance.
  ///
  /// An empty negative follows `emptyNegative` (default: the style's front end, A1111's zeros
  /// for `.a1111` and ComfyUI's encoded "" for `.comfyUI`); its token count then matches the
  /// prompt's, as A1111 does (`zeroed()` of the positive).
  public func encode(
    prompt: String, negative: String, style: PromptStyle = .comfyUI,
    weighting: TokenWeighting? = nil, emptyNegative: EmptyNegative? = nil
  ) throws -> (positive: SDXLConditioning, negative: SDXLConditioning) {
    let positive = try encode(prompt, style: style, weighting: weighting)
    let policy = emptyNegative ?? (style == .a1111 ? .zeros : .encode)
    if negative.isEmpty && policy == .zeros { return (positive, positive.zeroed()) }
    return (positive, try encode(negative, style: style, weighting: weighting))
  }

  /// Encodes already chunked tokens. When the two encoders got different chunk counts (their
  /// tokenizers can disagree in A1111's style), both are cut to the shorter, as ComfyUI does.
  public func encode(_ tokens: SDXLPromptTokens, weighting: TokenWeighting) throws
    -> SDXLConditioning
  {
    let chunks = Swift.min(tokens.clipL.count, tokens.clipG.count)
    guard chunks > 0 else { throw ModelError.invalidInput(reason: "a prompt with no token chunks") }
    let l = try encodeChunks(
      Array(tokens.clipL.prefix(chunks)), encoder: clipL, weighting: weighting,
      padToken: CLIPVocabulary.endToken, pooled: false)
    let g = try encodeChunks(
      Array(tokens.clipG.prefix(chunks)), encoder: clipG, weighting: weighting, padToken: 0,
      pooled: true)
    let length = chunks * TokenChunk.length
    let (widthL, widthG) = (clipL.configuration.width, clipG.configuration.width)
    let context = Tensor(zeros: Shape(1, length, widthL + widthG))
    clipL.context.concatenate(
      l.hidden.reshaped(Shape(1, length, widthL)), g.hidden.reshaped(Shape(1, length, widthG)),
      axis: 2, into: context)
    guard let pooled = g.pooled else {
      throw ModelError.invalidInput(reason: "OpenCLIP-G returned no pooled embedding")
    }
    return SDXLConditioning(context: context, pooled: pooled)
  }

  /// One encoder over all chunks in one batch (plus ComfyUI's empty prompt when some weight is
  /// not 1), weighted per chunk; returns `[chunks, 77, C]` and, if asked, chunk 0's pooled `[1, P]`.
  private func encodeChunks(
    _ chunks: [TokenChunk], encoder: CLIPTextEncoder, weighting: TokenWeighting, padToken: Int32,
    pooled: Bool
  ) throws -> (hidden: Tensor, pooled: Tensor?) {
    var sequences = chunks.map(\.tokens)
    let usesEmpty = weighting == .comfyUI && chunks.contains { $0.isWeighted }
    if usesEmpty { sequences.append(TokenChunk.empty(padToken: padToken).tokens) }
    let output = try encoder.encode(sequences, hiddenLayer: -2, pooled: pooled)
    let width = encoder.configuration.width
    let chunkSize = TokenChunk.length * width
    let empty: [Float]? =
      usesEmpty
      ? output.hidden.view(offset: chunks.count * chunkSize, shape: Shape(chunkSize)).scalars : nil
    for (index, chunk) in chunks.enumerated() {
      let view = output.hidden.view(offset: index * chunkSize, shape: Shape(chunkSize))
      var z = view.scalars
      switch weighting {
      case .comfyUI:
        guard let empty else { continue }
        PromptWeighting.applyComfyUI(&z, empty: empty, weights: chunk.weights, width: width)
      case .a1111:
        PromptWeighting.applyA1111(&z, multipliers: chunk.weights, width: width, restoreMean: true)
      case .a1111NoNorm:
        PromptWeighting.applyA1111(&z, multipliers: chunk.weights, width: width, restoreMean: false)
      }
      view.copy(from: Tensor(shape: Shape(chunkSize), values: z))
    }
    var first: Tensor?
    if let all = output.pooled {
      let pooledWidth = all.shape[1]
      let copy = Tensor(zeros: Shape(1, pooledWidth))
      copy.copy(from: all.view(offset: 0, shape: Shape(1, pooledWidth)))
      first = copy
    }
    return (output.hidden.slice(0..<chunks.count), first)
  }
}
