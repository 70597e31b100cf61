import CBLAS
import Checkpoint
import Foundation
import Weights

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
  public static func useSingleThreadedProducts() { productThreads = 1 }

  /// OpenBLAS's thread count (process-wide); with the AVX-512 kernels results do not depend on it (see `adapt`).
  public static var productThreads: Int {
    get { Int(openblas_get_num_threads()) }
    set { openblas_set_num_threads(Int32(max(1, newValue))) }
  }

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
  /// then checks that the result is finite. Same arithmetic as `adapt`.
  public func apply(key: String, shape: [Int], to values: inout [Float]) throws {
    guard byKey[key] != nil else { return }
    let columns = values.count / Self.rowCount(shape)
    // Tiles come in order and each is loaded before its result is stored: in place is safe.
    try values.withUnsafeMutableBufferPointer { buffer in
      try adapt(
        key: key, shape: shape,
        load: { rows, tile in
          _ = tile.initialize(from: buffer[(rows.lowerBound * columns)..<(rows.upperBound * columns)])
        },
        body: { rows, tile in
          _ = UnsafeMutableBufferPointer(rebasing: buffer[(rows.lowerBound * columns)..<(rows.upperBound * columns)])
            .initialize(from: tile)
        })
    }
  }

  /// Row tiles of about this many values (4 MiB of Float32): a tile is decoded, gets its product
  /// and is encoded while it is still in the cache, and OpenBLAS repacks the down factor once per
  /// tile only (smaller tiles spent up to 8 % of the product time repacking it).
  static let tileValues = 1 << 20

  /// The adapted weight of `key` (of `shape`), row tile by row tile in order: `load(rows, tile)`
  /// fills `tile` with the base's rows as Float32, every module targeting `key` is added, and
  /// `body(rows, tile)` gets the result; non-finite results throw `nonFinite` (after counting them
  /// all; `body` is not called again once one is seen). The bake, the in-memory render path and
  /// `apply` all come through here, so they agree bit for bit. Where every module is a plain LoRA
  /// (the common case), a row block gets all of them in one sgemm with the ranks concatenated:
  /// W += [m₁s₁U₁ | m₂s₂U₂ | …]·[D₁; D₂; …], accumulated straight into the tile. Other forms
  /// (LoHa, LoKr, DoRA, mid factors, full ΔW, biases) are applied in order to the whole weight.
  /// Deterministic whatever OpenBLAS's thread count with its AVX-512 (SkylakeX) kernels: the product
  /// is split by rows and columns, never along the rank. (Its Prescott and Haswell kernels were seen
  /// to differ in the last bit between 1 and 2 threads; the bake runs single-threaded products.)
  ///
  /// With `checkFinite` false the low-rank path leaves the check to the caller, whose `body` then
  /// gets every tile and must count non-finite values itself (the bake's encoder does, in the pass
  /// it makes anyway; see `nonFiniteError`).
  public func adapt(
    key: String, shape: [Int], checkFinite: Bool = true, load: (Range<Int>, UnsafeMutableBufferPointer<Float>) -> Void,
    body: (Range<Int>, UnsafeBufferPointer<Float>) throws -> Void
  ) throws {
    let uses = byKey[key] ?? []
    let rows = Self.rowCount(shape), count = shape.reduce(1, *), columns = count / rows
    guard let blocks = try lowRankBlocks(uses: uses, shape: shape) else {
      var values = [Float](repeating: 0, count: count)
      values.withUnsafeMutableBufferPointer { load(0..<rows, $0) }
      try applyInOrder(uses: uses, shape: shape, to: &values)
      let bad = values.withUnsafeBufferPointer { Self.nonFiniteCount($0) }
      if bad > 0 { throw nonFinite(uses: uses, key: key, count: bad) }
      try values.withUnsafeBufferPointer { try body(0..<rows, $0) }
      return
    }
    let tileRows = max(1, min(rows, Self.tileValues / max(columns, 1)))
    // Not zeroed (that cost a bake 3 % of its CPU time): every tile is loaded before it is read.
    let tileBuffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: tileRows * columns)
    defer { tileBuffer.deallocate() }
    var bad = 0
    for block in blocks {
      var start = block.rows.lowerBound
      while start < block.rows.upperBound {
        let n = min(tileRows, block.rows.upperBound - start)
        let part = UnsafeMutableBufferPointer(rebasing: tileBuffer[0..<(n * columns)])
        load(start..<(start + n), part)
        if block.rank > 0 {
          block.up.withUnsafeBufferPointer { up in
            block.down.withUnsafeBufferPointer { down in
              cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(columns), Int32(block.rank), 1,
                up.baseAddress! + (start - block.rows.lowerBound) * block.rank, Int32(block.rank),
                down.baseAddress, Int32(columns), 1, part.baseAddress, Int32(columns))
            }
          }
        }
        if checkFinite { bad += Self.nonFiniteCount(UnsafeBufferPointer(part)) }
        if bad == 0 { try body(start..<(start + n), UnsafeBufferPointer(part)) }
        start += n
      }
    }
    if bad > 0 { throw nonFinite(uses: uses, key: key, count: bad) }
  }

  /// Rows of a weight of `shape` as the products see it (a vector is one column).
  static func rowCount(_ shape: [Int]) -> Int { max(shape.first ?? 1, 1) }

  /// A row block of the target and every plain-LoRA module on it, concatenated: `up` is
  /// rows × rank (each module's columns scaled by strength·scale), `down` rank × columns.
  struct LowRankBlock {
    var rows: Range<Int>
    var rank: Int
    var up: [Float]
    var down: [Float]
  }

  /// The target's rows split where a module's row block (a q/k/v slice) starts or ends, each with
  /// its modules concatenated; nil when some module is not a plain LoRA of matching shape (then
  /// the modules are applied in order, which also reports a mismatch).
  func lowRankBlocks(uses: [(application: Int, module: Int, bias: Bool)], shape: [Int]) throws -> [LowRankBlock]? {
    let rows = Self.rowCount(shape), columns = shape.reduce(1, *) / rows
    guard shape.count >= 2, columns > 0 else { return nil }
    var modules: [(adapter: AdapterFile, module: AdapterModule, factor: Float, rows: Range<Int>, rank: Int)] = []
    for use in uses {
      let application = applications[use.application]
      let adapter = application.adapter, module = adapter.modules[use.module]
      let strength = application.strength(module.target)
      if strength == 0 && !module.hasDoRA { continue }
      guard !use.bias, module.algorithm == .lora, module.tensors[.mid] == nil, !module.hasDoRA,
        let down = adapter.shape(module, .down), let r = down.first, r > 0
      else { return nil }
      var region = 0..<rows
      if let index = module.target.sliceIndex, let count = module.target.sliceCount {
        let size = rows / count
        region = (index * size)..<((index + 1) * size)
      }
      let outRows = (adapter.shape(module, .up)?.reduce(1, *) ?? 0) / r
      guard outRows == region.count, down.reduce(1, *) / r == columns, region.upperBound <= rows else { return nil }
      modules.append((adapter, module, strength * module.scale, region, r))
    }
    var cuts = Set([0, rows])
    for m in modules { cuts.formUnion([m.rows.lowerBound, m.rows.upperBound]) }
    let bounds = cuts.sorted()
    // Each module's up factor decoded once (a whole-weight module's may serve several row blocks),
    // its down factor straight into each block's concatenation, nothing zero-filled first: the
    // factors are as large as a fifth of the weight.
    var ups: [Int: [Float]] = [:]
    func decoder(_ m: Int, _ role: AdapterRole) throws -> TensorDecoder {
      try modules[m].adapter.decoder(modules[m].module, role)
    }
    var blocks: [LowRankBlock] = []
    for (lower, upper) in zip(bounds, bounds.dropFirst()) {
      let span = lower..<upper
      let here = modules.indices.filter { modules[$0].rows.contains(lower) }
      let rank = here.reduce(0) { $0 + modules[$1].rank }
      for m in here where ups[m] == nil { ups[m] = try modules[m].adapter.values(modules[m].module, .up) }
      // Each module's up rows side by side, scaled by its factor; its down rows one after another.
      let up = [Float](unsafeUninitializedCapacity: span.count * rank) { buffer, initialized in
        var offset = 0
        for m in here {
          let factor = modules[m].factor, r = modules[m].rank, first = modules[m].rows.lowerBound
          ups[m]!.withUnsafeBufferPointer { u in
            guard let source = u.baseAddress, let target = buffer.baseAddress else { return }
            for row in span {
              // Pointers, not checked index sums: the loop then vectorises (it was 3 % of a bake).
              let from = source + (row - first) * r, to = target + (row - lower) * rank + offset
              for c in 0..<r { to[c] = factor * from[c] }
            }
          }
          offset += r
        }
        initialized = span.count * rank
      }
      let downs = try here.map { try decoder($0, .down) }
      let down = [Float](unsafeUninitializedCapacity: rank * columns) { buffer, initialized in
        var offset = 0
        for factor in downs {
          factor.decode(
            0..<factor.elementCount,
            into: UnsafeMutableBufferPointer(rebasing: buffer[offset..<(offset + factor.elementCount)]))
          offset += factor.elementCount
        }
        initialized = offset
      }
      blocks.append(LowRankBlock(rows: span, rank: rank, up: up, down: down))
    }
    return blocks
  }

  /// Every module of `uses` applied in order to the whole weight (LoHa, LoKr, DoRA, full ΔW, biases).
  func applyInOrder(uses: [(application: Int, module: Int, bias: Bool)], shape: [Int], to values: inout [Float]) throws
  {
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
  }

  func nonFinite(uses: [(application: Int, module: Int, bias: Bool)], key: String, count: Int) -> AdapterError {
    .nonFinite(file: uses.map { applications[$0.application].adapter.path }.first ?? "", target: key, count: count)
  }

  /// The error `adapt` throws for `count` non-finite values in the adapted `key`, for callers that
  /// count them themselves.
  public func nonFiniteError(key: String, count: Int) -> AdapterError {
    nonFinite(uses: byKey[key] ?? [], key: key, count: count)
  }

  /// How many values are NaN or infinite: x − x is 0 for finite x, NaN otherwise, summed 16 lanes
  /// at a time (the exact count only when some lane is not 0).
  static func nonFiniteCount(_ values: UnsafeBufferPointer<Float>) -> Int {
    guard let base = values.baseAddress else { return 0 }
    let lanes = 16, whole = values.count / lanes * lanes
    var sum = SIMD16<Float>()
    let raw = UnsafeRawPointer(base)
    var i = 0
    while i < whole {
      let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
      sum += v - v
      i += lanes
    }
    var tail: Float = 0
    for j in whole..<values.count { tail += values[j] - values[j] }
    if sum == SIMD16<Float>() && tail == 0 { return 0 }
    var bad = 0
    for value in values where !value.isFinite { bad += 1 }
    return bad
  }
}
