import SafeTensors
import Tensors
import Transforms

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
      return "\(file): tensor '\(key)' is missing; the model cannot be built without it"
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

/// The weights of a checkpoint, read from its mapped safetensors file by single-file (SGM/LDM)
/// key names and widened to Float32 on demand (fp16, bf16, fp8, scaled fp8 and per-row int8 all
/// decode through `TensorDecoder`).
///
/// A scope (`scoped(_:)`) names weights relative to a component prefix, so that a text encoder
/// asks for `text_model.embeddings.token_embedding.weight` whatever file it lives in. Nothing is
/// cached: each `tensor(_:)` call makes a fresh Float32 copy the caller owns, so a model holds its
/// layers' weights and the map holds the rest on disk.
public struct ModelWeights: @unchecked Sendable {
  /// The mapped file.
  public let file: SafeTensorsFile
  /// Prepended to every key asked for.
  public let prefix: String

  /// Opens (maps) the safetensors file at `path`.
  public init(path: String) throws {
    self.init(file: try SafeTensorsFile(path: path))
  }

  /// Weights read from an already opened file, optionally under a prefix.
  public init(file: SafeTensorsFile, prefix: String = "") {
    self.file = file
    self.prefix = prefix
  }

  /// The same file with `component` appended to the prefix.
  public func scoped(_ component: String) -> ModelWeights {
    ModelWeights(file: file, prefix: prefix + component)
  }

  /// Whether the file holds `key` (relative to the prefix).
  public func contains(_ key: String) -> Bool { file.contains(prefix + key) }

  /// The stored shape of `key`, or nil when the file lacks it.
  public func shape(_ key: String) -> [Int]? { file.info(prefix + key)?.shape }

  /// Every key in the file that starts with the prefix, with the prefix removed.
  public var keys: [String] {
    file.tensors.compactMap { $0.name.hasPrefix(prefix) ? String($0.name.dropFirst(prefix.count)) : nil }
  }

  /// A fresh Float32 copy of `key`, checked against `shape` when given (an empty shape is
  /// accepted for a scalar expected as `[1]`).
  public func tensor(_ key: String, shape expected: [Int]? = nil) throws -> Tensor {
    let name = prefix + key
    guard let info = file.info(name) else { throw ModelError.missingWeight(file: file.path, key: name) }
    if let expected, info.shape != expected, !(info.elementCount == 1 && expected.reduce(1, *) == 1) {
      throw ModelError.badShape(file: file.path, key: name, shape: info.shape, expected: "\(expected)")
    }
    let shapeDims = expected ?? (info.shape.isEmpty ? [1] : info.shape)
    guard shapeDims.count <= Shape.maximumRank else {
      throw ModelError.badShape(file: file.path, key: name, shape: info.shape, expected: "at most \(Shape.maximumRank) dimensions")
    }
    let decoder: TensorDecoder
    do {
      decoder = try TensorDecoder.resolve(file: file, tensor: info)
    } catch {
      throw ModelError.undecodable(file: file.path, key: name, reason: "\(error)")
    }
    let result = Tensor(zeros: Shape(shapeDims))
    decoder.decode(0..<decoder.elementCount, into: UnsafeMutableBufferPointer(start: result.pointer, count: result.count))
    try file.checkIntact()
    return result
  }

  /// `tensor(key)` when the file holds it, else nil (for optional biases).
  public func optionalTensor(_ key: String, shape: [Int]? = nil) throws -> Tensor? {
    contains(key) ? try tensor(key, shape: shape) : nil
  }

  /// The stored shape of `key`, or a `missingWeight` error.
  public func requireShape(_ key: String) throws -> [Int] {
    guard let found = shape(key) else { throw ModelError.missingWeight(file: file.path, key: prefix + key) }
    return found
  }
}
