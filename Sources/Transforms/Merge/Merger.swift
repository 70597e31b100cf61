import Checkpoint
import Foundation
import SafeTensors
import Weights

/// What a merge did.
public struct MergeReport: Codable, Sendable {
  public var output: String
  public var tensorsMerged: Int
  /// Tensors copied from one input (integer buffers, scalars, `--vae-from`, α of 0 or 1 blocks).
  public var tensorsCopied: Int
  public var prediction: String
  public var inputHashes: [String: String]
  public var clamped: [String: Int]
  public var seconds: Double
  /// How many inputs' hashes came from the hash cache instead of a pass over the file.
  public var hashesFromCache: Int
}

/// Streams a merge: every input is mapped, each output tensor is computed in Float32 chunk by chunk
/// and written before the next, so memory does not grow with model size.
public enum Merger {
  static let chunkElements = 1 << 20

  /// Merges as `request` says into `output`. The inputs' hashes (recorded in the output's
  /// metadata) are looked up in and recorded to `hashCache` when given, else computed.
  public static func merge(
    _ request: MergeRequest, output: String, hashCache: HashCache? = nil,
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> MergeReport {
    let start = Date()
    try request.validate()
    let files = try openInputs(request.inputs)
    let profile = MergeProfile()
    let names = request.inputs.map { ($0 as NSString).lastPathComponent }
    try checkKeys(files: files, names: names, policy: request.missing)
    let (markers, predictionText) = try decideMarkers(files: files, names: names, request: request)
    let plan = try planTensors(files: files, names: names, request: request, profile: profile)
    let entries =
      plan.entries + markers.map { TensorEntry(spec: TensorSpec(name: $0, dtype: .f32, shape: [0])) { _ in } }

    // Provenance: every input's hashes, the recipe, and A1111's keys so its UI shows the lineage.
    // The hashes are computed on another thread while the tensors are written, and patched into the
    // header at the end (placeholders of the same length keep the header's size).
    let (hashing, box, fromCache) = startHashing(files: files, cache: hashCache, profile: profile)
    func metadata(_ inputHashes: [ModelHashes]) -> [String: String] {
      provenance(request: request, files: files, names: names, markers: markers, inputHashes: inputHashes)
    }
    try SafeTensorsWriter.write(
      to: output, entries: entries, metadata: metadata(placeholderHashes(count: files.count)), inputs: request.inputs,
      progress: { _, _, done, total in progress?(done, total) },
      finalMetadata: {
        let started = DispatchTime.now().uptimeNanoseconds
        hashing.wait()
        profile.waitingForHashes = DispatchTime.now().uptimeNanoseconds - started
        return metadata(box.value)
      })
    hashing.wait()
    if ProcessInfo.processInfo.environment["ROUWEI_PROFILE"] != nil {
      profile.report(total: Date().timeIntervalSince(start))
    }
    var hashes: [String: String] = [:]
    for (index, h) in box.value.enumerated() { hashes[names[index]] = h.sha256 }
    return MergeReport(
      output: output, tensorsMerged: plan.merged, tensorsCopied: plan.copied, prediction: predictionText,
      inputHashes: hashes, clamped: plan.clamped.values, seconds: Date().timeIntervalSince(start),
      hashesFromCache: fromCache)
  }

  /// Maps every input, asking for aggressive read-ahead: each is read front to back (tensors in
  /// file order, and the hashes).
  static func openInputs(_ paths: [String]) throws -> [SafeTensorsFile] {
    let files = try paths.map { try SafeTensorsFile(path: $0) }
    for file in files where file.mapping.size > 0 {
      let whole = file.mapping.bytes(offset: 0, count: file.mapping.size)
      if let base = whole.baseAddress {
        _ = madvise(UnsafeMutableRawPointer(mutating: base), whole.count, MADV_SEQUENTIAL)
      }
    }
    return files
  }

  /// Keys not in every input (markers and quantization bookkeeping aside): an error listing them
  /// unless `policy` takes them from A.
  static func checkKeys(files: [SafeTensorsFile], names: [String], policy: MissingKeyPolicy) throws {
    let a = files[0]
    var missing: [String] = []
    for file in files.dropFirst() {
      for tensor in a.tensors
      where !file.contains(tensor.name) && !isMarker(tensor.name) && !QuantizedLayers.isBookkeeping(tensor.name, in: a)
      {
        missing.append(tensor.name)
      }
      for tensor in file.tensors
      where !a.contains(tensor.name) && !isMarker(tensor.name) && !QuantizedLayers.isBookkeeping(tensor.name, in: file)
      {
        missing.append(tensor.name)
      }
    }
    missing = Array(Set(missing)).sorted()
    if !missing.isEmpty && policy == .error {
      throw MergeError.missingKeys(keys: missing, files: names)
    }
  }

  /// The output's tensors in A's order, each copied from one input or merged, and the counts.
  struct TensorPlan {
    var entries: [TensorEntry] = []
    var merged = 0, copied = 0
    /// Filled while the tensors are written: values clamped per tensor.
    let clamped = ClampTally()
  }

  /// Values clamped to the output dtype, per tensor (written by the entries as they run).
  final class ClampTally: @unchecked Sendable {
    var values: [String: Int] = [:]
  }

  /// Decides, for every tensor of A, whether it is copied whole from one input or merged, and makes
  /// its entry.
  static func planTensors(
    files: [SafeTensorsFile], names: [String], request: MergeRequest, profile: MergeProfile
  ) throws -> TensorPlan {
    let a = files[0]
    let layout = Layout.detect(keys: Set(a.tensors.map(\.name)))
    var plan = TensorPlan()
    for tensor in a.tensors where !isMarker(tensor.name) && !QuantizedLayers.isBookkeeping(tensor.name, in: a) {
      let sources = files.map { $0.info(tensor.name) }
      let component = layout.component(of: tensor.name)
      if let index = copySource(tensor: tensor, sources: sources, component: component, file: a, request: request) {
        guard let source = files[index].info(tensor.name) else {
          throw MergeError.missingKeys(keys: [tensor.name], files: [names[index]])
        }
        guard source.shape == tensor.shape || index == 0 else {
          throw MergeError.shapeMismatch(
            key: tensor.name, shapes: [(names[0], tensor.shape), (names[index], source.shape)])
        }
        plan.entries.append(copyEntry(file: files[index], tensor: source, dtype: request.dtype, clamp: request.clamp))
        plan.copied += 1
        continue
      }
      plan.entries.append(
        try mergeEntry(
          tensor: tensor, files: files, infos: sources.compactMap { $0 }, names: names, component: component,
          request: request, profile: profile, clamped: plan.clamped))
      plan.merged += 1
    }
    return plan
  }

  /// Whether A's quantized (int8 rows, scaled fp8) weight: read through its decoder, written as float.
  static func isQuantized(_ tensor: TensorInfo, in file: SafeTensorsFile) -> Bool {
    guard let decoder = try? TensorDecoder.resolve(file: file, tensor: tensor) else { return false }
    if case .float = decoder.encoding { return false }
    return true
  }

  /// The input a tensor is copied from, never blended, or nil to merge it: integer buffers
  /// (position_ids), scalars (logit_scale), keys not in every input, components taken whole from
  /// one input, and what is not a model weight (EMA, training buffers, markers).
  static func copySource(
    tensor: TensorInfo, sources: [TensorInfo?], component: Component, file a: SafeTensorsFile, request: MergeRequest
  ) -> Int? {
    var copyFrom: Int?
    if (!tensor.dtype.isFloatingPoint && !isQuantized(tensor, in: a)) || tensor.shape.isEmpty
      || sources.contains(where: { $0 == nil })
    {
      copyFrom = 0
    }
    if component == .vae, let index = request.vaeFrom { copyFrom = index }
    if component == .clipL || component == .clipG, let index = request.textEncodersFrom { copyFrom = index }
    if copyFrom == nil, [.ema, .trainingBuffers, .markers, .other].contains(component) { copyFrom = 0 }
    return copyFrom
  }

  /// The entry that merges one tensor of every input, chunk by chunk, when the writer asks for it.
  static func mergeEntry(
    tensor: TensorInfo, files: [SafeTensorsFile], infos: [TensorInfo], names: [String], component: Component,
    request: MergeRequest, profile: MergeProfile, clamped: ClampTally
  ) throws -> TensorEntry {
    // Dequantized weights are written as float: the requested dtype, else fp16.
    let outDType =
      isQuantized(tensor, in: files[0])
      ? (request.dtype ?? .f16)
      : tensor.dtype.isFloatingPoint && FloatCodec.supported.contains(tensor.dtype)
        ? (request.dtype ?? tensor.dtype)
        : tensor.dtype
    let spec = TensorSpec(name: tensor.name, dtype: outDType, shape: tensor.shape)
    // One decode path for every stored layout: a tensor that is not a float weight (or whose
    // quantization is not understood) is a CodecError naming the file and the tensor.
    let decoders = try zip(files, infos).map { try TensorDecoder.resolve(file: $0, tensor: $1) }
    let inpainting = try shapeCheck(tensor.name, infos: infos, names: names)
    let coefficients = self.coefficients(for: tensor.name, component: component, request: request)
    return TensorEntry(spec: spec) { sink in
      let started = DispatchTime.now().uptimeNanoseconds
      defer { profile.producing += DispatchTime.now().uptimeNanoseconds - started }
      for (file, info) in zip(files, infos) {
        file.mapping.advise(offset: file.dataOffset + info.dataOffsets.begin, count: info.byteCount, willNeed: true)
      }
      let count = try compute(
        infos: infos, decoders: decoders, coefficients: coefficients, method: request.method, request: request,
        key: tensor.name, inpaintingChannels: inpainting, target: outDType, clamp: request.clamp, sink: sink)
      if count > 0 {
        guard request.clamp else { throw MergeError.overflow(key: tensor.name, target: outDType, count: count) }
        clamped.values[tensor.name] = count
      }
      for (file, info) in zip(files, infos) {
        file.mapping.advise(offset: file.dataOffset + info.dataOffsets.begin, count: info.byteCount, willNeed: false)
      }
    }
  }

  /// Stand-ins for the inputs' hashes while they are computed: distinct per input (they key
  /// `sd_merge_models`) and exactly as long as the real digests, so the header keeps its size.
  static func placeholderHashes(count: Int) -> [ModelHashes] {
    (0..<count).map { index in
      ModelHashes(
        sha256: String(repeating: "0", count: 63) + String(index % 10), autoV2: String(repeating: "0", count: 10),
        autoV1: String(repeating: "0", count: 8), autoV3: nil, dataSHA256: nil)
    }
  }

  /// The output's metadata: A's, with the prediction type, the tool, the recipe (inputs by file
  /// name and SHA-256: a path would publish the user's folders, and name, with every shared model),
  /// every input's hashes, and A1111's `sd_merge_recipe` / `sd_merge_models` with the inputs' own
  /// merge history nested.
  static func provenance(
    request: MergeRequest, files: [SafeTensorsFile], names: [String], markers: [String], inputHashes: [ModelHashes]
  ) -> [String: String] {
    var recorded = request
    recorded.inputs = names
    recorded.inputHashes = inputHashes.map(\.sha256)
    let recipe = (try? JSONEncoder.sorted.encode(recorded)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    var hashList: [[String: String]] = []
    var models: [String: Any] = [:]
    for (index, file) in files.enumerated() {
      let h = inputHashes[index]
      hashList.append(["name": names[index], "sha256": h.sha256, "autov2": h.autoV2])
      var model: [String: Any] = ["name": names[index], "legacy_hash": h.autoV1]
      if let parent = file.metadata["sd_merge_recipe"] { model["sd_merge_recipe"] = parent }
      models[h.sha256] = model
      if let parentModels = file.metadata["sd_merge_models"], let data = parentModels.data(using: .utf8),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
      {
        models.merge(object) { current, _ in current }
      }
    }
    var metadata = files[0].metadata
    metadata.removeValue(forKey: "modelspec.predict_key")
    metadata["modelspec.prediction_type"] = markers.contains(MarkerKey.vPrediction) ? "v" : "epsilon"
    metadata["rouwei.tool"] = ToolInfo.name
    metadata["rouwei.version"] = ToolInfo.version
    metadata["rouwei.merge.recipe"] = recipe
    metadata["rouwei.merge.inputs"] = jsonString(hashList)
    var a1111: [String: Any] = [
      "type": ToolInfo.name, "interp_method": request.method.rawValue, "multiplier": request.alpha,
      "primary_model_hash": hashList[0]["sha256"] ?? "",
    ]
    if hashList.count > 1 { a1111["secondary_model_hash"] = hashList[1]["sha256"] ?? "" }
    if hashList.count > 2 { a1111["tertiary_model_hash"] = hashList[2]["sha256"] ?? "" }
    if let blocks = request.blocks { a1111["blocks"] = blocks }
    metadata["sd_merge_recipe"] = jsonString(a1111)
    metadata["sd_merge_models"] = jsonString(models)
    metadata["format"] = "pt"
    return metadata
  }

  /// Every input's hashes, from `cache` where it has them; the others are computed on another
  /// thread while the tensors are written (wait for the group before reading the box). When all
  /// come from the cache no thread is started.
  static func startHashing(
    files: [SafeTensorsFile], cache: HashCache?, profile: MergeProfile
  ) -> (DispatchGroup, HashBox, Int) {
    let cached = files.map { cache?.cachedHashes(of: $0.mapping, dataOffset: nil) }
    let box = HashBox()
    let hashing = DispatchGroup()
    let missing = cached.indices.filter { cached[$0] == nil }
    guard !missing.isEmpty else {
      box.value = cached.compactMap { $0 }
      return (hashing, box, files.count)
    }
    // One thread per input: SHA-256 is sequential within a file, and hashing is the largest CPU
    // cost of a merge (about 1 s per GB and core), so the inputs are hashed side by side.
    DispatchQueue.global().async(group: hashing) {
      let started = DispatchTime.now().uptimeNanoseconds
      let results = PartialHashes(cached)
      DispatchQueue.concurrentPerform(iterations: missing.count) { slot in
        let index = missing[slot]
        results.set(index, ModelHasher.hashes(of: files[index].mapping, dataOffset: nil, cache: cache).hashes)
      }
      box.value = results.items.compactMap { $0 }
      profile.hashing = DispatchTime.now().uptimeNanoseconds - started
    }
    return (hashing, box, files.count - missing.count)
  }

  /// The inputs' hashes once hashing has finished.
  final class HashBox: @unchecked Sendable { var value: [ModelHashes] = [] }

  /// Hashes filled in by concurrent workers.
  final class PartialHashes: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var items: [ModelHashes?]
    init(_ items: [ModelHashes?]) { self.items = items }
    func set(_ index: Int, _ value: ModelHashes) {
      lock.lock()
      items[index] = value
      lock.unlock()
    }
  }

  /// Where a merge's time went (`ROUWEI_PROFILE=1` prints it to stderr; Scripts/bench uses it).
  final class MergeProfile: @unchecked Sendable {
    var producing: UInt64 = 0
    var hashing: UInt64 = 0
    var waitingForHashes: UInt64 = 0

    func report(total: Double) {
      func s(_ nanoseconds: UInt64) -> String { String(format: "%.2f s", Double(nanoseconds) / 1e9) }
      let line =
        "merge profile: total \(String(format: "%.2f s", total)), computing merged tensors (decode, blend, encode, "
        + "hand to the writer) \(s(producing)), hashing inputs (in parallel) \(s(hashing)), waiting for hashes at the "
        + "end \(s(waitingForHashes)); the rest is copies, the header, the final write and fsync\n"
      FileHandle.standardError.write(Data(line.utf8))
    }
  }

  static func isMarker(_ key: String) -> Bool { key == MarkerKey.vPrediction || key == MarkerKey.zeroTerminalSNR }

  /// Markers are decided, not copied: agreeing inputs keep theirs; disagreeing inputs need `--prediction`.
  static func decideMarkers(files: [SafeTensorsFile], names: [String], request: MergeRequest) throws -> (
    [String], String
  ) {
    if let prediction = request.prediction {
      switch prediction {
      case .v, .edmV:
        return (
          request.zeroTerminalSNR ? [MarkerKey.vPrediction, MarkerKey.zeroTerminalSNR] : [MarkerKey.vPrediction],
          request.zeroTerminalSNR ? "v + ztsnr (--prediction)" : "v (--prediction)"
        )
      case .epsilon:
        return ([], "epsilon (--prediction)")
      }
    }
    let states = files.map { file -> String in
      let v = file.contains(MarkerKey.vPrediction)
      let z = file.contains(MarkerKey.zeroTerminalSNR)
      return v ? (z ? "v + ztsnr" : "v") : (z ? "epsilon + ztsnr" : "epsilon")
    }
    guard Set(states).count == 1, let state = states.first else {
      throw MergeError.predictionDisagreement(details: zip(names, states).map { ($0, $1) })
    }
    var markers: [String] = []
    if files[0].contains(MarkerKey.vPrediction) { markers.append(MarkerKey.vPrediction) }
    if files[0].contains(MarkerKey.zeroTerminalSNR) { markers.append(MarkerKey.zeroTerminalSNR) }
    return (markers, state)
  }

  /// Shapes must agree, except A1111's inpainting case: A has 9 (or 8) input channels where B has 4;
  /// then only A's first channels are merged. Returns B's channel count in that case.
  static func shapeCheck(_ key: String, infos: [TensorInfo], names: [String]) throws -> Int? {
    let first = infos[0].shape
    var inpainting: Int?
    for (index, info) in infos.enumerated().dropFirst() where info.shape != first {
      let onlyDim1 =
        info.shape.count == first.count && first.count >= 2
        && zip(info.shape, first).enumerated().allSatisfy { $0.offset == 1 || $0.element.0 == $0.element.1 }
      if onlyDim1, key.hasSuffix("input_blocks.0.0.weight"), first[1] > info.shape[1],
        inpainting == nil || inpainting == info.shape[1]
      {
        inpainting = info.shape[1]
        continue
      }
      throw MergeError.shapeMismatch(key: key, shapes: [(names[0], first), (names[index], info.shape)])
    }
    return inpainting
  }

  /// The α (or weights) for a key: blocks, per-component overrides, then the global value.
  static func coefficients(for key: String, component: Component, request: MergeRequest) -> [Double] {
    if request.method == .sum {
      let weights = request.weights ?? []
      let total = weights.reduce(0, +)
      return request.normalize ? weights.map { $0 / total } : weights
    }
    var alpha = request.alpha
    if let blocks = request.blocks, let block = SDXLBlocks.block(of: key, convention: request.blockConvention),
      let index = SDXLBlocks.names.firstIndex(of: block)
    {
      alpha = blocks[index]
    }
    if component == .clipL || component == .clipG, let value = request.textEncoderAlpha { alpha = value }
    if component == .vae, let value = request.vaeAlpha { alpha = value }
    return [alpha]
  }

  /// A tensor taken whole from one input: its bytes as stored, or cast to `dtype` (float tensors),
  /// or dequantized (int8 rows, scaled fp8: their scale tensors are not copied) to `dtype` or fp16.
  static func copyEntry(file: SafeTensorsFile, tensor: TensorInfo, dtype: DType?, clamp: Bool) -> TensorEntry {
    let decoder = try? TensorDecoder.resolve(file: file, tensor: tensor)
    let quantized: Bool = {
      guard let decoder else { return false }
      if case .float = decoder.encoding { return false }
      return true
    }()
    let isFloat = tensor.dtype.isFloatingPoint && FloatCodec.supported.contains(tensor.dtype)
    let target = quantized ? (dtype ?? .f16) : isFloat ? (dtype ?? tensor.dtype) : tensor.dtype
    let spec = TensorSpec(name: tensor.name, dtype: target, shape: tensor.shape)
    return TensorEntry(spec: spec) { sink in
      if target == tensor.dtype && !quantized {
        try sink.write(file.data(tensor))
        return
      }
      let source = try decoder ?? TensorDecoder.resolve(file: file, tensor: tensor)
      let stats = try Streaming.convert(source, to: target, policy: clamp ? .clamp : .refuse, sink: sink)
      if stats.overflowed > 0 && !clamp {
        throw MergeError.overflow(key: tensor.name, target: target, count: stats.overflowed)
      }
    }
  }

  /// Merges one tensor into `sink`; returns how many output values overflowed the target dtype.
  static func compute(
    infos: [TensorInfo], decoders: [TensorDecoder], coefficients: [Double], method: MergeMethod,
    request: MergeRequest, key: String, inpaintingChannels: Int?, target: DType, clamp: Bool, sink: TensorSink
  ) throws -> Int {
    let count = infos[0].elementCount
    let blend = try Blend(
      method: method, coefficients: coefficients, request: request, key: key, infos: infos, decoders: decoders,
      inpainting: inpaintingChannels)
    let width = FloatCodec.width(target)
    let policy: OverflowPolicy = clamp ? .clamp : .refuse
    let inputs = decoders.count
    // An inpainting conv_in is small (≤ 320×9×3×3): its inputs are remapped onto A's layout whole.
    let remapped = inpaintingChannels.map { remap(infos: infos, decoders: decoders, narrow: $0) }
    var overflowed = 0
    let lock = NSLock()
    var encoded = [UInt8](repeating: 0, count: min(chunkElements, max(count, 1)) * width)
    var offset = 0
    // Each chunk is split between the cores; each core decodes, blends and encodes in blocks small
    // enough to stay in its L1/L2 cache, straight from the maps into the output bytes. The bytes go
    // to the sink (whose file writes them in the background while the next chunk is computed).
    while offset < count {
      let n = min(chunkElements, count - offset)
      let chunkStart = offset
      encoded.withUnsafeMutableBytes { encodedBytes in
        parallelRanges(n) { range in
          let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: (inputs + 1) * blockElements)
          defer { scratch.deallocate() }
          guard let base = scratch.baseAddress else { return }
          let x = (0..<inputs).map { UnsafePointer(base + $0 * blockElements) }
          let y = base + inputs * blockElements
          var localOverflow = 0
          var start = range.lowerBound
          while start < range.upperBound {
            let m = min(blockElements, range.upperBound - start)
            let global = chunkStart + start
            for k in 0..<inputs {
              let into = UnsafeMutableBufferPointer(start: base + k * blockElements, count: m)
              if let remapped {
                remapped[k].withUnsafeBufferPointer {
                  into.baseAddress!.update(from: $0.baseAddress! + global, count: m)
                }
              } else {
                decoders[k].decode(global..<(global + m), into: into)
              }
            }
            blend.apply(x, into: y, count: m, at: global)
            if let narrow = inpaintingChannels {
              keepExtraChannels(of: x[0], into: y, count: m, at: global, shape: infos[0].shape, narrow: narrow)
            }
            let stats = FloatCodec.encode(
              UnsafeBufferPointer(start: y, count: m), to: target,
              into: UnsafeMutableRawBufferPointer(rebasing: encodedBytes[(start * width)..<((start + m) * width)]),
              policy: policy)
            localOverflow += stats.overflowed
            start += m
          }
          lock.lock()
          overflowed += localOverflow
          lock.unlock()
        }
      }
      try encoded.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * width)])) }
      offset += n
    }
    return overflowed
  }

  /// A1111's inpainting merge: only A's first `narrow` input channels are merged; the extra
  /// channels of `conv_in` are A's, exactly.
  static func keepExtraChannels(
    of a: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count m: Int, at global: Int, shape: [Int],
    narrow: Int
  ) {
    let inner = shape.dropFirst(2).reduce(1, *)
    for i in 0..<m where ((global + i) / inner) % shape[1] >= narrow { y[i] = a[i] }
  }

  /// One merge method with everything it needs decided before the element loop: the weights, and
  /// the whole-tensor quantities some methods need first (SLERP's angle, TIES' thresholds).
  struct Blend {
    let method: MergeMethod
    /// (1 − α, α).
    let wa: Float, wb: Float
    /// The sum method's weight per input.
    let weights: [Float]
    /// SLERP's two coefficients (plain weighted sum for nearly parallel tensors).
    let slerp: (Float, Float)
    /// TIES: each model's magnitude threshold (float bits of |Mᵢ − A|).
    let thresholds: [UInt32]
    /// train-difference's 1.8α.
    let trainScale: Float
    /// DARE: the keep probability and the drop mask's seed.
    let keepScale: Float, dropRate: Double, dareBase: UInt64

    init(
      method: MergeMethod, coefficients: [Double], request: MergeRequest, key: String, infos: [TensorInfo],
      decoders: [TensorDecoder], inpainting: Int?
    ) throws {
      let alpha = coefficients.first ?? 0
      self.method = method
      wa = Float(1 - alpha)
      wb = Float(alpha)
      weights = coefficients.map { Float($0) }
      slerp =
        method == .slerp
        ? try Merger.slerpCoefficients(infos: infos, decoders: decoders, inpainting: inpainting, alpha: alpha)
        : (wa, wb)
      // TIES trims each delta to its largest `density` fraction: each model's threshold first.
      thresholds =
        method == .ties
        ? try (1..<infos.count).map { model in
          try Merger.tiesThreshold(
            infos: infos, decoders: decoders, model: model, count: infos[0].elementCount, density: request.density,
            inpainting: inpainting)
        } : []
      trainScale = Float(1.8 * alpha)
      keepScale = Float(1 - request.dropRate)
      dropRate = request.dropRate
      dareBase = request.seed ^ Merger.fnv1a(key)
    }

    /// y[0..<m] = the method applied to the inputs x[k][0..<m], elements `global…` of the tensor.
    func apply(_ x: [UnsafePointer<Float>], into y: UnsafeMutablePointer<Float>, count m: Int, at global: Int) {
      let inputs = x.count
      switch method {
      case .weightedSum:
        // Exactly torch's `(1 - alpha) * A + alpha * B` in float32: two products, one sum.
        let a = x[0], b = x[1], wa = wa, wb = wb
        for i in 0..<m { y[i] = wa * a[i] + wb * b[i] }
      case .sum:
        let first = x[0], w0 = weights[0]
        for i in 0..<m { y[i] = w0 * first[i] }
        for k in 1..<inputs {
          let w = weights[k], source = x[k]
          for i in 0..<m { y[i] = y[i] + w * source[i] }
        }
      case .addDifference:
        // torch's `A + alpha * (B - C)`.
        let a = x[0], b = x[1], c = x[2], wb = wb
        for i in 0..<m { y[i] = a[i] + wb * (b[i] - c[i]) }
      case .slerp:
        let (sa, sb) = slerp
        let a = x[0], b = x[1]
        for i in 0..<m { y[i] = sa * a[i] + sb * b[i] }
      case .trainDifference:
        // supermerger: A + 1.8α · s·(B − C), s = |B − A| / (|B − A| + |B − C|).
        let a = x[0], b = x[1], c = x[2], trainScale = trainScale
        for i in 0..<m {
          let d = b[i] - c[i]
          let fromA = abs(b[i] - a[i])
          let denominator = fromA + abs(d)
          let s: Float = denominator != 0 ? fromA / denominator : 0
          y[i] = a[i] + trainScale * (s * d)
        }
      case .dare:
        let a = x[0], b = x[1], wb = wb, keepScale = keepScale, dropRate = dropRate, dareBase = dareBase
        for i in 0..<m {
          let keep = Merger.uniform(dareBase, UInt64(global + i)) >= dropRate
          y[i] = keep ? a[i] + wb * ((b[i] - a[i]) / keepScale) : a[i]
        }
      case .ties:
        let a = x[0], wb = wb
        for i in 0..<m {
          var total: Float = 0
          for k in 1..<inputs {
            let d = x[k][i] - a[i]
            if abs(d).bitPattern >= thresholds[k - 1] { total = total + d }
          }
          var agreeing: Float = 0
          var votes: Float = 0
          for k in 1..<inputs {
            let d = x[k][i] - a[i]
            if abs(d).bitPattern >= thresholds[k - 1], d != 0, (d > 0) == (total > 0), total != 0 {
              agreeing = agreeing + d
              votes += 1
            }
          }
          y[i] = votes > 0 ? a[i] + wb * (agreeing / votes) : a[i]
        }
      }
    }
  }

  /// SLERP's coefficients from the whole-tensor angle between A and B (one pass for the dot
  /// product and the norms); a plain weighted sum when they are nearly parallel.
  static func slerpCoefficients(
    infos: [TensorInfo], decoders: [TensorDecoder], inpainting: Int?, alpha: Double
  ) throws -> (Float, Float) {
    var dot = 0.0, normA = 0.0, normB = 0.0
    try forEachChunk(infos: infos, decoders: decoders, count: infos[0].elementCount, inpainting: inpainting) {
      inputs, n, _ in
      for i in 0..<n {
        let x = Double(inputs[0][i]), y = Double(inputs[1][i])
        dot += x * y
        normA += x * x
        normB += y * y
      }
    }
    let cosine = normA > 0 && normB > 0 ? max(-1, min(1, dot / (normA.squareRoot() * normB.squareRoot()))) : 1
    if abs(cosine) > 0.9995 { return (Float(1 - alpha), Float(alpha)) }
    let omega = acos(cosine)
    return (Float(sin((1 - alpha) * omega) / sin(omega)), Float(sin(alpha * omega) / sin(omega)))
  }

  /// Values per block of the fused decode → blend → encode loop (inputs + output: ≤ 160 KiB).
  static let blockElements = 1 << 13

  /// The inpainting case: every input as a whole tensor in A's layout. Inputs with fewer input
  /// channels are given A's own values outside their channels, so every formula returns A there.
  static func remap(infos: [TensorInfo], decoders: [TensorDecoder], narrow: Int) -> [[Float]] {
    let shape = infos[0].shape
    let inner = shape.dropFirst(2).reduce(1, *)
    let wide = shape[1]
    let count = infos[0].elementCount
    let full = decoders.map { $0.decodeAll() }
    var result = [full[0]]
    for k in 1..<infos.count {
      if infos[k].shape[1] == wide {
        result.append(full[k])
        continue
      }
      var values = [Float](repeating: 0, count: count)
      for position in 0..<count {
        let channel = (position / inner) % wide
        let outer = position / (inner * wide)
        let narrowPosition = (outer * narrow + channel) * inner + position % inner
        values[position] = channel < narrow ? full[k][narrowPosition] : full[0][position]
      }
      result.append(values)
    }
    return result
  }

  /// Decodes aligned chunks of every input. For an inpainting `conv_in`, inputs with fewer input
  /// channels are fed A's own values outside their channels, so every formula returns A there.
  static func forEachChunk(
    infos: [TensorInfo], decoders: [TensorDecoder], count: Int, inpainting: Int?,
    _ body: ([UnsafeMutableBufferPointer<Float>], Int, Int) throws -> Void
  ) throws {
    let buffers = infos.map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: chunkElements) }
    defer { for buffer in buffers { buffer.deallocate() } }
    if let narrow = inpainting {
      let full = remap(infos: infos, decoders: decoders, narrow: narrow)
      var offset = 0
      while offset < count {
        let n = min(chunkElements, count - offset)
        for k in infos.indices {
          full[k].withUnsafeBufferPointer { buffers[k].baseAddress!.update(from: $0.baseAddress! + offset, count: n) }
        }
        try body(buffers, n, offset)
        offset += n
      }
      return
    }
    var offset = 0
    while offset < count {
      let n = min(chunkElements, count - offset)
      let chunkStart = offset
      parallelRanges(n) { range in
        for (decoder, buffer) in zip(decoders, buffers) {
          let values = (chunkStart + range.lowerBound)..<(chunkStart + range.upperBound)
          decoder.decode(values, into: UnsafeMutableBufferPointer(rebasing: buffer[range]))
        }
      }
      try body(buffers, n, offset)
      offset += n
    }
  }

  /// TIES: the bit pattern of the k-th largest |Mᵢ − A| (k = round(density·n), at least 1), found
  /// exactly by a two-pass radix select over the float bits, so memory stays constant.
  static func tiesThreshold(
    infos: [TensorInfo], decoders: [TensorDecoder], model: Int, count: Int, density: Double,
    inpainting: Int?
  ) throws -> UInt32 {
    let wanted = max(1, Int((density * Double(count)).rounded()))
    var high = [Int](repeating: 0, count: 1 << 16)
    try forEachChunk(infos: infos, decoders: decoders, count: count, inpainting: inpainting) { inputs, n, _ in
      for i in 0..<n {
        let d = abs(inputs[model][i] - inputs[0][i])
        high[Int((d.isNaN ? 0 : d.bitPattern) >> 16)] += 1
      }
    }
    var remaining = wanted
    var bucket = (1 << 16) - 1
    while bucket > 0 && high[bucket] < remaining {
      remaining -= high[bucket]
      bucket -= 1
    }
    var low = [Int](repeating: 0, count: 1 << 16)
    try forEachChunk(infos: infos, decoders: decoders, count: count, inpainting: inpainting) { inputs, n, _ in
      for i in 0..<n {
        let d = abs(inputs[model][i] - inputs[0][i])
        let bits = d.isNaN ? 0 : d.bitPattern
        if Int(bits >> 16) == bucket { low[Int(bits & 0xFFFF)] += 1 }
      }
    }
    var value = (1 << 16) - 1
    while value > 0 && low[value] < remaining {
      remaining -= low[value]
      value -= 1
    }
    return UInt32(bucket) << 16 | UInt32(value)
  }

  /// DARE's per-element uniform draw in [0, 1): SplitMix64 of (seed ⊕ FNV-1a(key)) + index·φ, so any
  /// chunking or thread split gives the same mask (Scripts/fixtures/make_merge_goldens.py mirrors it).
  @inline(__always)
  static func uniform(_ base: UInt64, _ index: UInt64) -> Double {
    var z = base &+ index &* 0x9E37_79B9_7F4A_7C15 &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return Double(z >> 11) * 0x1.0p-53
  }

  static func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
  }

  static func jsonString(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
  }
}

extension JSONEncoder {
  /// An encoder with sorted keys, for reproducible metadata.
  static var sorted: JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return encoder
  }
}
