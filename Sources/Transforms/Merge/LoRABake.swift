import Adapters
import Checkpoint
import Foundation
import SafeTensors
import Weights
import Workers

/// `merge BASE --lora A:0.8 --lora B:0.5 -o OUT`: adapters baked into a single-file checkpoint.
public struct LoRABakeRequest: Sendable {
  public var base: String
  public var adapters: [AdapterSpec]
  /// Multiplies every adapter's strength on the UNet / on the text encoders.
  public var unetStrength: Double = 1
  public var textEncoderStrength: Double = 1
  /// 20 multipliers (BASE, IN00–IN08, M00, OUT00–OUT08, `merge --blocks` names; BASE = the text
  /// encoders) applied on top of the strengths.
  public var blocks: [Double]?
  public var blockConvention: BlockConvention = .supermerger
  /// Output dtype (default: each tensor's own).
  public var dtype: DType?
  /// Apply what maps and list the rest instead of refusing the adapter.
  public var skipUnmapped = false
  /// Saturate values outside the output dtype instead of failing.
  public var clamp = false
  /// Where the adapters' hashes (recorded in the output) are looked up and stored; nil: computed.
  public var hashCache: HashCache?

  public init(base: String, adapters: [AdapterSpec]) {
    self.base = base
    self.adapters = adapters
  }

  func validate() throws {
    guard !adapters.isEmpty else {
      throw MergeError.invalidRequest("name at least one adapter with --lora FILE[:STRENGTH]")
    }
    if let blocks, blocks.count != 20 {
      throw MergeError.invalidRequest(
        "--blocks takes 20 numbers (BASE, IN00–IN08, M00, OUT00–OUT08), got \(blocks.count)")
    }
    for value in [unetStrength, textEncoderStrength] + (blocks ?? []) where !value.isFinite {
      throw MergeError.invalidRequest("strengths must be finite numbers")
    }
    if let dtype, !FloatCodec.supported.contains(dtype) {
      throw MergeError.invalidRequest("output dtype \(dtype.rawValue) is not supported")
    }
  }

  /// The factor on top of each adapter's own strength for a target weight.
  func multiplier(_ target: AdapterTarget) -> Double {
    var factor = target.component == .unet ? unetStrength : textEncoderStrength
    if let blocks, let block = SDXLBlocks.block(of: target.key, convention: blockConvention),
      let index = SDXLBlocks.names.firstIndex(of: block)
    {
      factor *= blocks[index]
    }
    return factor
  }
}

/// What a bake did.
public struct LoRABakeReport: Codable, Sendable {
  public var output: String
  public var adapters: [AppliedAdapter]
  /// Base tensors changed by at least one adapter, and copied unchanged.
  public var tensorsChanged: Int
  public var tensorsCopied: Int
  /// Per adapter file name: keys that map onto no SDXL weight, skipped on request.
  public var skippedKeys: [String: [String]]
  public var clamped: [String: Int]
  public var seconds: Double
}

/// Streams a bake: the base is read tensor by tensor; a weight an adapter changes is widened to
/// Float32, gets every adapter's ΔW in order, and is rounded once to the output dtype; every other
/// tensor is copied as stored. The adapters are small and stay mapped.
public enum LoRABaker {
  public static func bake(
    _ request: LoRABakeRequest, output: String, progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> LoRABakeReport {
    let start = Date()
    try request.validate()
    let multiplier: @Sendable (AdapterTarget) -> Double = { [request] in request.multiplier($0) }
    let stack = try AdapterStack.open(request.adapters, skipUnmapped: request.skipUnmapped, multiplier: multiplier)
    let base = try Merger.openInputs([request.base])[0]
    try stack.checkTargets { base.info($0)?.shape }
    let targets = stack.targetKeys
    let clamped = Tally()
    // Adapted weights are computed on worker threads (one per `--threads`, single-threaded products)
    // ahead of the writer, up to `lookaheadBytes` of finished output, in the writer's file order:
    // the products overlap the copying and writing, also across runs of copied tensors.
    AdapterStack.useSingleThreadedProducts()
    keepFreedMemoryForReuse()
    let workers = max(1, min(ThreadPool.shared.threadCount, 8))
    let lookahead = Lookahead(capacity: lookaheadBytes, workers: workers)
    var entries: [TensorEntry] = []
    var jobs: [String: (bytes: Int, run: (UnsafeMutableRawBufferPointer) throws -> Void)] = [:]
    var changed = 0, copied = 0
    for tensor in base.tensors where !QuantizedLayers.isBookkeeping(tensor.name, in: base) {
      guard targets.contains(tensor.name) else {
        entries.append(
          Merger.copyEntry(
            file: base, tensor: tensor,
            dtype: tensor.dtype.isFloatingPoint && tensor.elementCount > 0 && !Merger.isMarker(tensor.name)
              ? request.dtype : nil, clamp: request.clamp))
        copied += 1
        continue
      }
      let decoder = try TensorDecoder.resolve(file: base, tensor: tensor)
      let quantized: Bool = { if case .float = decoder.encoding { return false } else { return true } }()
      let target = request.dtype ?? (quantized ? .f16 : tensor.dtype)
      let policy: OverflowPolicy = request.clamp ? .clamp : .refuse
      let width = target.bitWidth / 8
      let columns = tensor.elementCount / max(tensor.shape.first ?? 1, 1)
      // Each row tile is decoded, adapted and encoded straight into the output buffer.
      jobs[tensor.name] = (
        tensor.elementCount * width,
        { out in
          // The output goes to the disk from this buffer: past the cache.
          var encoder = try ChunkEncoder(target: target, policy: policy, bypassCache: true)
          // Non-finite results are counted by the encoder, in its pass over the tile.
          try stack.adapt(
            key: tensor.name, shape: tensor.shape, checkFinite: false,
            load: { rows, tile in
              decoder.decode((rows.lowerBound * columns)..<(rows.upperBound * columns), into: tile)
            },
            body: { rows, tile in
              encoder.encode(
                tile, into: UnsafeMutableRawBufferPointer(rebasing: out[(rows.lowerBound * columns * width)...]))
            })
          if encoder.statistics.nonFinite > 0 {
            throw stack.nonFiniteError(key: tensor.name, count: encoder.statistics.nonFinite)
          }
          if encoder.statistics.overflowed > 0 {
            guard request.clamp else {
              throw MergeError.overflow(key: tensor.name, target: target, count: encoder.statistics.overflowed)
            }
            clamped.add(tensor.name, encoder.statistics.overflowed)
          }
        }
      )
      entries.append(
        TensorEntry(spec: TensorSpec(name: tensor.name, dtype: target, shape: tensor.shape)) { sink in
          let slice = try lookahead.take(tensor.name)
          // Written from the ring where it lines up with the file (direct I/O), released after.
          try sink.write(slice.bytes, release: { lookahead.release(slice) })
        })
      changed += 1
    }
    // The writer asks for tensors in safetensors file order (dtype, then name): so do the jobs. The
    // data starts on a page (`dataAlignment`), so a tensor's page offset in the file is known now:
    // its job writes at the same offset in a page-aligned buffer.
    var dataOffset = 0
    for spec in SafeTensorsWriter.fileOrder(entries.map(\.spec)) {
      if let job = jobs[spec.name] {
        lookahead.add(spec.name, bytes: job.bytes, lead: dataOffset % AtomicFile.pageSize, job.run)
      }
      dataOffset += spec.byteCount
    }
    // Started before the adapters are hashed for the metadata, so hashing overlaps the products.
    lookahead.start()
    defer { lookahead.cancel() }
    let applied = zip(stack.applications, request.adapters).map {
      AppliedAdapter(adapter: $0.adapter, spec: $1, cache: request.hashCache)
    }
    var metadata = base.metadata
    metadata["rouwei.tool"] = ToolInfo.name
    metadata["rouwei.version"] = ToolInfo.version
    metadata["rouwei.lora.applied"] = jsonString(applied)
    var recipe: [String: Any] = ["unet_strength": request.unetStrength, "te_strength": request.textEncoderStrength]
    if let blocks = request.blocks { recipe["blocks"] = blocks }
    if let dtype = request.dtype { recipe["dtype"] = dtype.rawValue }
    metadata["rouwei.lora.recipe"] = jsonString(recipe)
    try SafeTensorsWriter.write(
      to: output, entries: entries, metadata: metadata, inputs: [request.base] + request.adapters.map(\.path),
      // Past the page cache: the kernel's copy and dirty-page work would cost the products CPU time.
      progress: { _, _, done, total in progress?(done, total) }, directIO: true, dataAlignment: AtomicFile.pageSize)
    var skipped: [String: [String]] = [:]
    for (path, keys) in stack.skippedKeys { skipped[(path as NSString).lastPathComponent] = keys }
    return LoRABakeReport(
      output: output, adapters: applied, tensorsChanged: changed, tensorsCopied: copied, skippedKeys: skipped,
      clamped: clamped.snapshot, seconds: Date().timeIntervalSince(start))
  }

  /// Values clamped per tensor, written from the lookahead thread.
  final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: Int] = [:]
    func add(_ key: String, _ count: Int) {
      lock.lock()
      values[key] = count
      lock.unlock()
    }
    var snapshot: [String: Int] {
      lock.lock()
      defer { lock.unlock() }
      return values
    }
  }

  /// Serves allocations up to 32 MiB (the per-tensor tiles and factors) from glibc's heaps, whose
  /// freed memory is reused, instead of fresh maps that are zero-filled page by page and unmapped
  /// again (about 1 s of page faults in a full-size bake). Process-wide; the memory stays bounded
  /// by what one tensor's work needs.
  static func keepFreedMemoryForReuse() {
    #if os(Linux)
      typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
      guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
      let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
      _ = mallopt(-3, 32 << 20)  // M_MMAP_THRESHOLD
      _ = mallopt(-1, 64 << 20)  // M_TRIM_THRESHOLD
    #endif
  }

  /// Finished output the workers may hold ahead of the writer (the lookahead's ring): bounds
  /// anonymous memory whatever the model's size.
  static let lookaheadBytes = 160 << 20

  static func jsonString<T: Encodable>(_ value: T) -> String {
    (try? JSONEncoder.sorted.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
  }

  static func jsonString(_ object: [String: Any]) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
    return String(decoding: data, as: UTF8.self)
  }
}
