import Checkpoint
import SafeTensors
import Tensors
import Weights

/// What can go wrong while loading or running a model (weights missing, of the wrong shape, or not
/// decodable; inputs that do not fit the model). The CLI maps these to exit code 2.
public enum ModelError: Error, CustomStringConvertible, Sendable {
  /// A weight the model needs is not in the file.
  case missingWeight(file: String, key: String)
  /// A weight has a shape the model cannot use.
  case badShape(file: String, key: String, shape: [Int], expected: String)
  /// A weight is stored in a form that cannot be widened to Float32.
  case undecodable(file: String, key: String, reason: String)
  /// The weights do not describe a model this engine runs.
  case unsupportedModel(file: String, reason: String)
  /// The caller's inputs do not fit the model (latent size, context width, batch…).
  case invalidInput(reason: String)

  public var description: String {
    switch self {
    case .missingWeight(let file, let key):
      let text = "\(file): tensor '\(key)' is missing; the model cannot be built without it"
      // A UNet-only artifact needs its parts from elsewhere.
      if key.hasPrefix("conditioner.") { return text + " (for a UNet-only artifact, pass --text-encoders FILE)" }
      if key.hasPrefix("first_stage_model.") { return text + " (for a UNet-only artifact, pass --vae FILE)" }
      return text
    case .badShape(let file, let key, let shape, let expected):
      return "\(file): tensor '\(key)' has shape \(shape), expected \(expected)"
    case .undecodable(let file, let key, let reason):
      return "\(file): tensor '\(key)' cannot be widened to float32: \(reason)"
    case .unsupportedModel(let file, let reason):
      return "\(file): \(reason)"
    case .invalidInput(let reason):
      return "invalid model input: \(reason)"
    }
  }
}

/// The weights of a model, served by a `WeightSource` under canonical single-file (SGM/LDM) names
/// whatever the artifact (single-file, UNet-only plus parts, diffusers folder, GGUF), and widened
/// to Float32 on demand (fp16, bf16, fp8, scaled fp8, per-row int8 and ggml blocks all decode
/// through `TensorDecoder`).
///
/// A scope (`scoped(_:)`) names weights relative to a component prefix, so that a text encoder
/// asks for `text_model.embeddings.token_embedding.weight` whatever file it lives in. Nothing is
/// cached: models keep their layer weights as stored (`StoredWeight`, widened per layer into the
/// scratch of `withOwnScratch()`), and `tensor(_:)` makes a fresh Float32 copy for small tensors
/// (biases, norms, embeddings).
public struct ModelWeights: @unchecked Sendable {
  /// Where the tensors come from.
  public let source: WeightSource
  /// Prepended to every key asked for.
  public let prefix: String
  /// Where layers built from these weights widen them (shared by scopes; see `withOwnScratch()`).
  let scratch: WeightScratch

  /// The artifact as a whole, for messages, metadata and integrity checks.
  public var file: Artifact { Artifact(source: source) }

  /// The artifact seen as one file: its path, metadata and tensor list (canonical names).
  public struct Artifact {
    public let source: WeightSource
    /// The path the model was opened from.
    public var path: String { source.path }
    /// The main artifact's string metadata.
    public var metadata: [String: String] { source.metadata }
    /// Every served tensor in artifact order.
    public var tensors: [WeightSource.Entry] { source.names.compactMap(source.entry) }
    /// The served tensor `name` (a full canonical name), or nil.
    public func info(_ name: String) -> WeightSource.Entry? { source.entry(name) }
    /// Throws when a mapped file changed under us.
    public func checkIntact() throws { try source.checkIntact() }
  }

  /// Opens the artifact at `path` (detected by content: safetensors, GGUF or a diffusers folder).
  public init(path: String) throws {
    self.init(source: try WeightSource(path: path))
  }

  /// Opens `artifact`, taking the text encoders from `textEncoders` and the VAE from `vae` when
  /// given (component files or whole checkpoints): how `sample`, `verify` and the verify library
  /// open a model.
  public init(artifact: String, textEncoders: [String] = [], vae: String? = nil) throws {
    self.init(source: try WeightSource(artifact: artifact, textEncoders: textEncoders, vae: vae))
  }

  /// Weights served by `source`, optionally under a prefix.
  public init(source: WeightSource, prefix: String = "") {
    self.init(source: source, prefix: prefix, scratch: WeightScratch())
  }

  init(source: WeightSource, prefix: String, scratch: WeightScratch) {
    self.source = source
    self.prefix = prefix
    self.scratch = scratch
  }

  /// The same source with `component` appended to the prefix.
  public func scoped(_ component: String) -> ModelWeights {
    ModelWeights(source: source, prefix: prefix + component, scratch: scratch)
  }

  /// The same weights with a scratch of their own: each model takes one, so two models never
  /// widen into the same buffer.
  func withOwnScratch() -> ModelWeights {
    ModelWeights(source: source, prefix: prefix, scratch: WeightScratch())
  }

  /// Whether the source holds `key` (relative to the prefix).
  public func contains(_ key: String) -> Bool { source.contains(prefix + key) }

  /// The single-file shape of `key`, or nil when the source lacks it.
  public func shape(_ key: String) -> [Int]? { source.shape(prefix + key) }

  /// Every key the source serves that starts with the prefix, with the prefix removed.
  public var keys: [String] {
    source.names.compactMap { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : nil }
  }

  /// The decoder of `key` (relative to the prefix), for code that widens weights itself (row by
  /// row, layer by layer) instead of taking a Float32 copy.
  public func decoder(_ key: String) throws -> TensorDecoder {
    let name = prefix + key
    guard source.contains(name) else { throw ModelError.missingWeight(file: source.path, key: name) }
    do {
      return try source.decoder(name)
    } catch {
      throw ModelError.undecodable(file: source.entry(name)?.file ?? source.path, key: name, reason: "\(error)")
    }
  }

  /// A fresh Float32 copy of `key`, checked against `shape` when given (an empty shape is
  /// accepted for a scalar expected as `[1]`).
  public func tensor(_ key: String, shape expected: [Int]? = nil) throws -> Tensor {
    let name = prefix + key
    guard let entry = source.entry(name) else { throw ModelError.missingWeight(file: source.path, key: name) }
    let elements = entry.shape.reduce(1, *)
    if let expected, entry.shape != expected, !(elements == 1 && expected.reduce(1, *) == 1) {
      throw ModelError.badShape(file: entry.file, key: name, shape: entry.shape, expected: "\(expected)")
    }
    let shapeDims = expected ?? (entry.shape.isEmpty ? [1] : entry.shape)
    guard shapeDims.count <= Shape.maximumRank else {
      throw ModelError.badShape(
        file: entry.file, key: name, shape: entry.shape, expected: "at most \(Shape.maximumRank) dimensions")
    }
    let decoder = try self.decoder(key)
    let result = Tensor(zeros: Shape(shapeDims))
    decoder.decode(
      0..<decoder.elementCount, into: UnsafeMutableBufferPointer(start: result.pointer, count: result.count))
    try source.checkIntact()
    return result
  }

  /// `tensor(key)` when the source holds it, else nil (for optional biases).
  public func optionalTensor(_ key: String, shape: [Int]? = nil) throws -> Tensor? {
    contains(key) ? try tensor(key, shape: shape) : nil
  }

  /// Drops the mapped pages of every tensor under the prefix from the process's resident set
  /// (they stay in the page cache): for a component the engine is done with.
  public func releasePages() {
    for key in keys { (try? decoder(key))?.releasePages() }
  }

  /// The stored shape of `key`, or a `missingWeight` error.
  public func requireShape(_ key: String) throws -> [Int] {
    guard let found = shape(key) else { throw ModelError.missingWeight(file: source.path, key: prefix + key) }
    return found
  }
}
