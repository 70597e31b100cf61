import SafeTensors
import Tensors
import Weights

/// The two CLIP text towers of an SDXL checkpoint, told apart by their key naming.
public enum CLIPTextEncoderKind: String, Sendable, CaseIterable {
  /// OpenAI CLIP ViT-L/14's text model in HF transformers naming (`embeddings.*`,
  /// `encoder.layers.N.self_attn.{q,k,v,out}_proj`, `mlp.fc1/fc2`, `final_layer_norm`), with
  /// quick-GELU x·σ(1.702x). SDXL's first embedder.
  case clipL
  /// OpenCLIP ViT-bigG/14's text tower in open_clip naming (`token_embedding`,
  /// `positional_embedding`, `transformer.resblocks.N.attn.in_proj_weight` packing q, k, v,
  /// `mlp.c_fc/c_proj`, `ln_final`, `text_projection` [C, P] applied as x·P), with exact (erf)
  /// GELU. SDXL's second embedder.
  case openCLIPG

  /// The key prefix of this tower in an SDXL single-file (SGM) checkpoint.
  public var sdxlPrefix: String {
    switch self {
    case .clipL: return "conditioner.embedders.0.transformer.text_model."
    case .openCLIPG: return "conditioner.embedders.1.model."
    }
  }

  /// The activation between the two MLP layers.
  var usesQuickGELU: Bool { self == .clipL }
}

/// The hyper-parameters of a CLIP text tower, read from the shapes of its weights (the head count
/// cannot be read from shapes: it is width / 64, SDXL's head size, or 1 for narrower towers).
public struct CLIPTextConfiguration: Sendable, Equatable {
  /// Transformer layers (12 for CLIP-L, 32 for OpenCLIP-G).
  public var layers: Int
  /// Hidden width (768, 1280).
  public var width: Int
  /// Attention heads (12, 20).
  public var headCount: Int
  /// Hidden width of each MLP (3072, 5120).
  public var mlpWidth: Int
  /// Token embedding rows (49,408).
  public var vocabularySize: Int
  /// Positions (77): the longest sequence the tower takes.
  public var maximumTokens: Int
  /// Width of the pooled, projected output (1280 for OpenCLIP-G), or nil when the tower has no
  /// `text_projection` (SDXL's CLIP-L).
  public var projectionWidth: Int?
  /// LayerNorm ε (1e-5 in both towers).
  public var layerNormEpsilon: Float
}

/// When a text encoder reads its layers. Either way the matrices stay as stored in the map and
/// are widened to Float32 one at a time while they run (memory: one matrix); the token embedding
/// table is never copied, rows are decoded as needed.
public enum WeightResidency: String, Sendable, CaseIterable {
  /// Every layer is looked up once, at initialisation, with its norms and biases widened (a few MB).
  case resident
  /// Layers are looked up again during each `encode` call (shapes are still checked up front).
  case streamed
}

/// What `CLIPTextEncoder.encode` returns for a batch of token sequences.
public struct CLIPTextOutput {
  /// `hidden_states[hiddenLayer]` as HF transformers numbers them (0 = embeddings, i = output of
  /// layer i, negative from the end): `[B, T, width]`, without the final LayerNorm. SDXL uses -2
  /// for both towers.
  public var hidden: Tensor
  /// The final LayerNorm of the last layer's output (`last_hidden_state`), `[B, T, width]`, when
  /// asked for.
  public var lastNormed: Tensor?
  /// `final LayerNorm(last layer)[end token] · text_projection`, `[B, P]`, when asked for. The
  /// end token is the first 49407 of each sequence (argmax of the ids when there is none, as
  /// open_clip's `text.argmax(dim=-1)`).
  public var pooled: Tensor?
}

/// A CLIP text transformer (pre-LayerNorm blocks, causal self-attention), either SDXL tower, built
/// from a checkpoint's weights with its sizes inferred from their shapes.
///
/// Matches HF transformers `CLIPTextModel` / `CLIPTextModelWithProjection` (which diffusers loads
/// both SDXL towers into) and open_clip's `TextTransformer`: embeddings = token_embedding[ids] +
/// position_embedding[0..<T]; each layer x += out(attn(LN₁(x))), x += fc2(act(fc1(LN₂(x)))); no
/// padding mask, only the causal one, so padding positions are encoded like any token.
///
/// Activations live in a `TensorArena` reused across calls of the same batch shape. One encoder
/// runs one `encode` at a time (it shares its `ComputeContext`).
public final class CLIPTextEncoder {
  /// Which tower (key naming and activation).
  public let kind: CLIPTextEncoderKind
  /// Sizes read from the weights.
  public let configuration: CLIPTextConfiguration
  /// The weights, scoped to this tower's prefix.
  public let weights: ModelWeights
  /// Whether layers are kept widened or widened per call.
  public let residency: WeightResidency
  /// Where the kernels run.
  public let context: ComputeContext

  private let names: KeyNames
  private let tokenEmbedding: TensorDecoder
  private let positionEmbedding: Tensor
  private let finalNorm: (weight: Tensor, bias: Tensor)?
  private let projection: Tensor?
  private var residentLayers: [LayerWeights]
  private let arena = TensorArena(minimumBlockCapacity: 1 << 20)

  /// The tower of `kind` in an SDXL single-file checkpoint (`weights` unscoped: the whole file).
  public convenience init(
    sdxl weights: ModelWeights, kind: CLIPTextEncoderKind,
    context: ComputeContext = ComputeContext(),
    residency: WeightResidency = .resident, headCount: Int? = nil
  ) throws {
    try self.init(
      weights: weights.scoped(kind.sdxlPrefix), kind: kind, context: context, residency: residency,
      headCount: headCount)
  }

  /// A tower from weights scoped to its prefix (keys such as `embeddings.token_embedding.weight`
  /// for `.clipL`, `token_embedding.weight` for `.openCLIPG`).
  ///
  /// Every weight's presence and shape is checked here, whatever the residency.
  /// - Parameter headCount: overrides the inferred max(1, width / 64).
  /// - Throws: `ModelError` naming the file and the full key of the first weight that is missing,
  ///   misshaped or undecodable, or `.unsupportedModel` when the tower has no layers.
  public init(
    weights: ModelWeights, kind: CLIPTextEncoderKind, context: ComputeContext = ComputeContext(),
    residency: WeightResidency = .resident, headCount: Int? = nil
  ) throws {
    self.kind = kind
    let weights = weights.withOwnScratch()
    self.weights = weights
    self.residency = residency
    self.context = context
    let names = KeyNames(kind: kind)
    self.names = names
    let file = weights.file.path

    let embeddingShape = try weights.requireShape(names.tokenEmbedding)
    guard embeddingShape.count == 2, embeddingShape[0] > 0, embeddingShape[1] > 0 else {
      throw ModelError.badShape(
        file: file, key: weights.prefix + names.tokenEmbedding, shape: embeddingShape,
        expected: "[vocabulary, width]")
    }
    let (vocabularySize, width) = (embeddingShape[0], embeddingShape[1])
    let positionShape = try weights.requireShape(names.positionEmbedding)
    guard positionShape.count == 2, positionShape[1] == width, positionShape[0] > 0 else {
      throw ModelError.badShape(
        file: file, key: weights.prefix + names.positionEmbedding, shape: positionShape,
        expected: "[positions, \(width)]")
    }
    let layers = Self.layerCount(weights: weights, prefix: names.layersPrefix)
    guard layers > 0 else {
      throw ModelError.unsupportedModel(
        file: file,
        reason: "no text encoder layers under '\(weights.prefix + names.layersPrefix)' "
          + "(is this an SDXL checkpoint with its text encoders?)")
    }
    let fc1Key = names.layer(0) + names.fc1 + ".weight"
    let fc1Shape = try weights.requireShape(fc1Key)
    guard fc1Shape.count == 2, fc1Shape[1] == width, fc1Shape[0] > 0 else {
      throw ModelError.badShape(
        file: file, key: weights.prefix + fc1Key, shape: fc1Shape, expected: "[mlp, \(width)]")
    }
    let heads = headCount ?? Swift.max(1, width / 64)
    guard heads > 0, width % heads == 0 else {
      throw ModelError.unsupportedModel(
        file: file, reason: "text encoder width \(width) does not split into \(heads) heads")
    }
    var projectionWidth: Int?
    if let projectionKey = names.projection, let shape = weights.shape(projectionKey) {
      guard shape.count == 2, shape[0] == width, shape[1] > 0 else {
        throw ModelError.badShape(
          file: file, key: weights.prefix + projectionKey, shape: shape,
          expected: "[\(width), projection]")
      }
      projectionWidth = shape[1]
    }
    configuration = CLIPTextConfiguration(
      layers: layers, width: width, headCount: heads, mlpWidth: fc1Shape[0],
      vocabularySize: vocabularySize, maximumTokens: positionShape[0],
      projectionWidth: projectionWidth, layerNormEpsilon: 1e-5)

    // The embedding table is read row by row from the map: it is the largest tensor of both
    // towers (253 MB as Float32 for G) and an encode touches at most a few hundred rows.
    tokenEmbedding = try weights.decoder(names.tokenEmbedding)
    positionEmbedding = try weights.tensor(names.positionEmbedding, shape: positionShape)
    if weights.contains(names.finalNorm + ".weight") {
      finalNorm = (
        try weights.tensor(names.finalNorm + ".weight", shape: [width]),
        try weights.tensor(names.finalNorm + ".bias", shape: [width])
      )
    } else {
      finalNorm = nil
    }
    if let projectionKey = names.projection, let projectionWidth {
      projection = try weights.tensor(projectionKey, shape: [width, projectionWidth])
    } else {
      projection = nil
    }
    residentLayers = []
    for index in 0..<layers {
      let specs = layerSpecs(index)
      switch residency {
      case .resident: residentLayers.append(try loadLayer(specs))
      case .streamed: try checkLayer(specs)
      }
    }
  }

  /// Runs the tower on a batch of token sequences of equal length (at most
  /// `configuration.maximumTokens`; SDXL chunks are 77).
  /// - Parameters:
  ///   - sequences: token ids, each in `0..<vocabularySize`.
  ///   - hiddenLayer: which `hidden_states` entry to return (HF numbering; -2 for SDXL). Layers
  ///     after it run only when `lastNormed` or `pooled` needs them.
  ///   - lastNormed: also return the final LayerNorm of the last layer.
  ///   - pooled: also return the projected end-token embedding (needs `text_projection`).
  /// - Throws: `ModelError.invalidInput` for unusable ids, lengths or layer indices, or when
  ///   `lastNormed`/`pooled` asks for a weight the tower lacks; weight errors in `.streamed` mode.
  public func encode(
    _ sequences: [[Int32]], hiddenLayer: Int = -2, lastNormed: Bool = false, pooled: Bool = false
  ) throws -> CLIPTextOutput {
    let config = configuration
    let batch = sequences.count
    guard batch > 0, let tokens = sequences.first?.count, tokens > 0 else {
      throw ModelError.invalidInput(reason: "no tokens to encode")
    }
    guard sequences.allSatisfy({ $0.count == tokens }), tokens <= config.maximumTokens else {
      throw ModelError.invalidInput(
        reason: "text encoder sequences must share one length of at most \(config.maximumTokens) "
          + "tokens, got lengths \(sequences.map(\.count))")
    }
    for sequence in sequences {
      if let bad = sequence.first(where: { $0 < 0 || Int($0) >= config.vocabularySize }) {
        throw ModelError.invalidInput(
          reason: "token id \(bad) outside the vocabulary of \(config.vocabularySize)")
      }
    }
    let hiddenIndex = hiddenLayer < 0 ? config.layers + 1 + hiddenLayer : hiddenLayer
    guard hiddenIndex >= 0 && hiddenIndex <= config.layers else {
      throw ModelError.invalidInput(
        reason:
          "hidden layer \(hiddenLayer) outside 0...\(config.layers) (or -\(config.layers + 1)...-1)"
      )
    }
    if (lastNormed || pooled) && finalNorm == nil {
      throw ModelError.missingWeight(
        file: weights.file.path, key: weights.prefix + names.finalNorm + ".weight")
    }
    if pooled && projection == nil {
      throw ModelError.missingWeight(
        file: weights.file.path, key: weights.prefix + (names.projection ?? "text_projection"))
    }
    let layersToRun = lastNormed || pooled ? config.layers : hiddenIndex

    let width = config.width
    arena.reset()
    let sequenceShape = Shape(batch, tokens, width)
    let x = arena.tensor(sequenceShape)
    let normed = arena.tensor(sequenceShape)
    let query = arena.tensor(sequenceShape)
    let key = arena.tensor(sequenceShape)
    let value = arena.tensor(sequenceShape)
    let attended = arena.tensor(sequenceShape)
    let mlp = arena.tensor(Shape(batch, tokens, config.mlpWidth))

    try embed(sequences, into: x)
    let hidden = Tensor(zeros: sequenceShape)
    if hiddenIndex == 0 { hidden.copy(from: x) }
    for index in 0..<layersToRun {
      let layer = residency == .resident ? residentLayers[index] : try loadLayer(layerSpecs(index))
      let eps = config.layerNormEpsilon
      context.layerNorm(
        x, epsilon: eps, weight: layer.norm1.weight, bias: layer.norm1.bias, into: normed)
      layer.query.apply(context, normed, into: query)
      layer.key.apply(context, normed, into: key)
      layer.value.apply(context, normed, into: value)
      context.attention(
        query: query, key: key, value: value, headCount: config.headCount, causal: true,
        into: attended)
      layer.out.apply(context, attended, into: x, accumulate: true)
      context.layerNorm(
        x, epsilon: eps, weight: layer.norm2.weight, bias: layer.norm2.bias, into: normed)
      layer.fc1.apply(context, normed, into: mlp)
      if kind.usesQuickGELU {
        context.quickGELU(mlp, into: mlp)
      } else {
        context.gelu(mlp, into: mlp)
      }
      layer.fc2.apply(context, mlp, into: x, accumulate: true)
      if index + 1 == hiddenIndex { hidden.copy(from: x) }
    }
    // The layers were read straight from the map: fail if the file changed under it.
    try weights.file.checkIntact()

    var output = CLIPTextOutput(hidden: hidden, lastNormed: nil, pooled: nil)
    if let finalNorm, lastNormed {
      let result = Tensor(zeros: sequenceShape)
      context.layerNorm(
        x, epsilon: config.layerNormEpsilon, weight: finalNorm.weight, bias: finalNorm.bias,
        into: result)
      output.lastNormed = result
    }
    if let finalNorm, let projection, pooled {
      let projectionWidth = projection.shape[1]
      let result = Tensor(zeros: Shape(batch, projectionWidth))
      let row = arena.tensor(Shape(1, width))
      for (sample, ids) in sequences.enumerated() {
        let position = Self.poolingPosition(ids)
        row.copy(from: x.view(offset: (sample * tokens + position) * width, shape: Shape(1, width)))
        context.layerNorm(
          row, epsilon: config.layerNormEpsilon, weight: finalNorm.weight, bias: finalNorm.bias,
          into: row)
        // open_clip: x[argmax] @ text_projection, P stored [width, projection].
        context.matmul(
          row, projection,
          into: result.view(offset: sample * projectionWidth, shape: Shape(1, projectionWidth)))
      }
      output.pooled = result
    }
    return output
  }

  /// The position pooled from: the first end token (49407), as HF transformers does with an
  /// `eos_token_id`, which for CLIP ids equals open_clip's `argmax` (the end token is the largest
  /// id); the first largest id when there is no end token.
  static func poolingPosition(_ ids: [Int32]) -> Int {
    if let end = ids.firstIndex(of: CLIPVocabulary.endToken) { return end }
    var best = 0
    for (index, id) in ids.enumerated() where id > ids[best] { best = index }
    return best
  }

  /// x[b, t] = token_embedding[ids[b][t]] + position_embedding[t].
  private func embed(_ sequences: [[Int32]], into x: Tensor) throws {
    let width = configuration.width
    let tokens = sequences[0].count
    for (sample, ids) in sequences.enumerated() {
      for (position, id) in ids.enumerated() {
        let row = x.pointer + (sample * tokens + position) * width
        let first = Int(id) * width
        tokenEmbedding.decode(
          first..<(first + width), into: UnsafeMutableBufferPointer(start: row, count: width))
        let positionRow = positionEmbedding.pointer + position * width
        for column in 0..<width { row[column] += positionRow[column] }
      }
    }
    // The rows were read straight from the map: fail if the file changed under it.
    try weights.file.checkIntact()
  }

  // MARK: - Weights

  /// Key names of one tower, relative to its prefix.
  private struct KeyNames {
    let tokenEmbedding: String
    let positionEmbedding: String
    let layersPrefix: String
    let finalNorm: String
    let projection: String?
    let norm1: String, norm2: String, out: String, fc1: String, fc2: String
    /// Separate projections (`q_proj`, `k_proj`, `v_proj`), or nil for a fused `in_proj`.
    let separateQKV: (String, String, String)?
    let fusedQKV: String

    init(kind: CLIPTextEncoderKind) {
      switch kind {
      case .clipL:
        tokenEmbedding = "embeddings.token_embedding.weight"
        positionEmbedding = "embeddings.position_embedding.weight"
        layersPrefix = "encoder.layers."
        finalNorm = "final_layer_norm"
        projection = nil
        (norm1, norm2) = ("layer_norm1", "layer_norm2")
        out = "self_attn.out_proj"
        (fc1, fc2) = ("mlp.fc1", "mlp.fc2")
        separateQKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        fusedQKV = ""
      case .openCLIPG:
        tokenEmbedding = "token_embedding.weight"
        positionEmbedding = "positional_embedding"
        layersPrefix = "transformer.resblocks."
        finalNorm = "ln_final"
        projection = "text_projection"
        (norm1, norm2) = ("ln_1", "ln_2")
        out = "attn.out_proj"
        (fc1, fc2) = ("mlp.c_fc", "mlp.c_proj")
        separateQKV = nil
        fusedQKV = "attn.in_proj"
      }
    }

    func layer(_ index: Int) -> String { "\(layersPrefix)\(index)." }
  }

  /// A norm's weight and bias.
  private typealias Affine = (weight: Tensor, bias: Tensor)

  /// A linear map: its matrix as stored and its bias widened.
  private struct Projection {
    let weight: StoredWeight
    let bias: Tensor

    func apply(_ context: ComputeContext, _ x: Tensor, into output: Tensor, accumulate: Bool = false) {
      context.linear(x, weight: weight.linearView(context), bias: bias, into: output, accumulate: accumulate)
    }
  }

  /// One layer's weights.
  private struct LayerWeights {
    let norm1: Affine, norm2: Affine
    let query: Projection, key: Projection, value: Projection, out: Projection
    let fc1: Projection, fc2: Projection
  }

  /// A weight a layer needs: its key (relative to the tower) and shape.
  private struct WeightSpec {
    let key: String
    let shape: [Int]
  }

  /// The weights of layer `index` in a fixed order: LN₁ (w, b), q/k/v (three pairs, or the fused
  /// [3C, C] weight and [3C] bias), out (w, b), LN₂ (w, b), fc1 (w, b), fc2 (w, b).
  private func layerSpecs(_ index: Int) -> [WeightSpec] {
    let c = configuration.width, m = configuration.mlpWidth
    let p = names.layer(index)
    func affine(_ name: String, _ weightShape: [Int]) -> [WeightSpec] {
      [
        WeightSpec(key: p + name + ".weight", shape: weightShape),
        WeightSpec(key: p + name + ".bias", shape: [weightShape[0]]),
      ]
    }
    var specs = affine(names.norm1, [c])
    if let qkv = names.separateQKV {
      specs += affine(qkv.0, [c, c]) + affine(qkv.1, [c, c]) + affine(qkv.2, [c, c])
    } else {
      specs += [
        WeightSpec(key: p + names.fusedQKV + "_weight", shape: [3 * c, c]),
        WeightSpec(key: p + names.fusedQKV + "_bias", shape: [3 * c]),
      ]
    }
    specs += affine(names.out, [c, c]) + affine(names.norm2, [c])
    specs += affine(names.fc1, [m, c]) + affine(names.fc2, [c, m])
    return specs
  }

  /// Checks that every weight of a layer is present with its shape, without reading it.
  private func checkLayer(_ specs: [WeightSpec]) throws {
    for spec in specs {
      let shape = try weights.requireShape(spec.key)
      if shape != spec.shape {
        throw ModelError.badShape(
          file: weights.file.path, key: weights.prefix + spec.key, shape: shape,
          expected: "\(spec.shape)")
      }
    }
  }

  /// Looks up a layer's weights (in `layerSpecs` order): matrices as stored, norms and biases
  /// widened to Float32.
  private func loadLayer(_ specs: [WeightSpec]) throws -> LayerWeights {
    try checkLayer(specs)
    let c = configuration.width
    var next = 0
    func norm() throws -> Affine {
      defer { next += 2 }
      return (
        try weights.tensor(specs[next].key, shape: specs[next].shape),
        try weights.tensor(specs[next + 1].key, shape: specs[next + 1].shape)
      )
    }
    func projection() throws -> Projection {
      defer { next += 2 }
      return Projection(
        weight: try weights.stored(specs[next].key, shape: specs[next].shape, scratch: weights.scratch),
        bias: try weights.tensor(specs[next + 1].key, shape: specs[next + 1].shape))
    }
    let norm1 = try norm()
    let query: Projection, key: Projection, value: Projection
    if names.separateQKV != nil {
      (query, key, value) = (try projection(), try projection(), try projection())
    } else {
      // open_clip's nn.MultiheadAttention packs [q; k; v] along the output rows.
      let packed = try projection()
      func part(_ index: Int) -> Projection {
        Projection(
          weight: packed.weight.rows((index * c)..<((index + 1) * c)),
          bias: packed.bias.view(offset: index * c, shape: Shape(c)))
      }
      (query, key, value) = (part(0), part(1), part(2))
    }
    let out = try projection(), norm2 = try norm(), fc1 = try projection(), fc2 = try projection()
    return LayerWeights(
      norm1: norm1, norm2: norm2, query: query, key: key, value: value, out: out, fc1: fc1, fc2: fc2
    )
  }

  /// The number of layers: one more than the largest index N of a key `<prefix>N.…`.
  private static func layerCount(weights: ModelWeights, prefix: String) -> Int {
    var count = 0
    for key in weights.keys where key.hasPrefix(prefix) {
      let rest = key.dropFirst(prefix.count)
      guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]), index >= 0,
        index < 10_000
      else { continue }
      count = Swift.max(count, index + 1)
    }
    return count
  }
}
