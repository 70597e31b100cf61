import CBLAS
import Checkpoint
import Foundation

/// One adapter to apply and its strength per target weight (UNet vs text encoders, per block).
public struct AdapterApplication: Sendable {
  public let adapter: AdapterFile
  public let strength: @Sendable (AdapterTarget) -> Float

  public init(adapter: AdapterFile, strength: @escaping @Sendable (AdapterTarget) -> Float) {
    self.adapter = adapter
    self.strength = strength
  }

  /// One strength for the UNet and one for the text encoders.
  public init(adapter: AdapterFile, unet: Float, textEncoders: Float) {
    self.init(adapter: adapter) { target in target.component == .unet ? unet : textEncoders }
  }
}

/// Several adapters applied to a base model's weights, in the order given (DoRA makes order matter,
/// as in ComfyUI and A1111): for every canonical weight name, the modules that change it.
/// All work is in Float32; the caller rounds once to the stored dtype.
public final class AdapterStack: @unchecked Sendable {
  public let applications: [AdapterApplication]
  /// Keys every adapter leaves unmapped, skipped on request (listed in reports).
  public let skippedKeys: [String: [String]]
  private var byKey: [String: [(application: Int, module: Int, bias: Bool)]] = [:]

  /// Refuses unmapped keys (listing them) unless `skipUnmapped`.
  public init(_ applications: [AdapterApplication], skipUnmapped: Bool = false) throws {
    self.applications = applications
    var skipped: [String: [String]] = [:]
    for (index, application) in applications.enumerated() {
      let adapter = application.adapter
      if !adapter.unmappedKeys.isEmpty {
        guard skipUnmapped else { throw AdapterError.unmapped(file: adapter.path, keys: adapter.unmappedKeys) }
        skipped[adapter.path] = adapter.unmappedKeys
      }
      for (moduleIndex, module) in adapter.modules.enumerated() {
        let hasWeightDelta =
          module.algorithm != .full || module.tensors[.diff] != nil || module.tensors[.normWeight] != nil
        if hasWeightDelta { byKey[module.target.key, default: []].append((index, moduleIndex, false)) }
        if module.hasBias, let bias = module.target.biasKey {
          byKey[bias, default: []].append((index, moduleIndex, true))
        }
      }
    }
    skippedKeys = skipped
  }

  /// Makes the products single-threaded (process-wide OpenBLAS setting): a bake runs several
  /// tensors side by side instead, which keeps OpenBLAS's spinning threads off the writer's core.
  public static func useSingleThreadedProducts() { openblas_set_num_threads(1) }

  /// Every canonical key an adapter changes.
  public var targetKeys: Set<String> { Set(byKey.keys) }

  /// Checks that the base has every target (`shape(key)` gives the base's shape or nil), so a
  /// mismatch is reported before any work.
  public func checkTargets(shape: (String) -> [Int]?) throws {
    for (key, uses) in byKey.sorted(by: { $0.key < $1.key }) {
      for use in uses {
        let adapter = applications[use.application].adapter, module = adapter.modules[use.module]
        guard let found = shape(key) else {
          throw AdapterError.missingTarget(file: adapter.path, module: module.name, target: key)
        }
        if let count = module.target.sliceCount, found.first.map({ $0 % count != 0 }) ?? true {
          throw AdapterError.shapeMismatch(
            file: adapter.path, module: module.name, target: key, targetShape: found,
            reason: "rows do not split into \(count) blocks")
        }
      }
    }
  }

  /// Applies every module that targets `key` to `values` (the base weight of `shape`, Float32),
  /// then checks that the result is finite.
  public func apply(key: String, shape: [Int], to values: inout [Float]) throws {
    guard let uses = byKey[key] else { return }
    try values.withUnsafeMutableBufferPointer { buffer in
      for use in uses {
        let application = applications[use.application]
        let adapter = application.adapter, module = adapter.modules[use.module]
        let strength = application.strength(module.target)
        if strength == 0 && !module.hasDoRA { continue }
        if use.bias {
          try adapter.applyBias(module, to: buffer, strength: strength)
          continue
        }
        var region = buffer
        var regionShape = shape
        if let index = module.target.sliceIndex, let count = module.target.sliceCount {
          let rows = shape[0] / count, columns = buffer.count / max(shape[0], 1)
          region = UnsafeMutableBufferPointer(
            rebasing: buffer[(index * rows * columns)..<((index + 1) * rows * columns)])
          regionShape = [rows] + shape.dropFirst()
        }
        try adapter.apply(module, to: region, shape: regionShape, strength: strength)
      }
    }
    var bad = 0
    for value in values where !value.isFinite { bad += 1 }
    if bad > 0 {
      throw AdapterError.nonFinite(
        file: uses.map { applications[$0.application].adapter.path }.first ?? "", target: key, count: bad)
    }
  }
}
