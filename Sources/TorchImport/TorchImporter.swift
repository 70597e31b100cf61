import Checkpoint
import Foundation
import SafeTensors

/// What an import wrote and what it left out.
public struct TorchImportReport: Codable, Sendable {
  public var input: String
  public var output: String
  public var format: String
  public var tensorsWritten: Int
  /// Tensors copied from a strided (non-contiguous) view or an offset into a shared storage.
  public var tensorsMadeContiguous: Int
  public var emaTensorsDropped: Int
  public var trainingStateTensorsDropped: Int
  public var bytesOut: Int
  /// Top-level values that are not tensors (`global_step`, `epoch`), kept as output metadata.
  public var scalars: [String: String]
  public var seconds: Double
}

/// `convert model.ckpt -o model.safetensors`: PyTorch checkpoint → safetensors, streamed tensor by
/// tensor from the mapped storages (strided views gathered through a small buffer), so memory does
/// not grow with the model. Bit-exact: bytes are copied, never converted.
public enum TorchImporter {
  /// Bytes gathered per write for non-contiguous tensors.
  static let gatherChunk = 4 << 20

  /// Imports `input` into `output`. EMA tensors are written only with `keepEMA` (under their own
  /// names, `model_ema.…` or `ema.…`); optimizer and other training state never are.
  public static func convert(
    input: String, output: String, keepEMA: Bool = false, metadata: [String: String] = [:],
    progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> TorchImportReport {
    let start = Date()
    let checkpoint = try TorchCheckpoint(path: input)
    var entries: [TensorEntry] = []
    var madeContiguous = 0, emaDropped = 0, stateDropped = 0, bytes = 0
    for tensor in checkpoint.tensors {
      switch tensor.role {
      case .model: break
      case .ema:
        if !keepEMA {
          emaDropped += 1
          continue
        }
      case .trainingState:
        stateDropped += 1
        continue
      }
      guard let dtype = tensor.dtype.safeTensors else {
        throw TorchImportError.invalidTensor(
          file: input, tensor: tensor.name, reason: "\(tensor.dtype.rawValue) has no safetensors dtype")
      }
      let spec = TensorSpec(name: tensor.name, dtype: dtype, shape: tensor.shape)
      let byteCount = tensor.elementCount * tensor.dtype.size
      bytes += byteCount
      let storage = checkpoint.storageBytes(tensor)
      let reference = tensor.reference
      if byteCount == 0 {
        // An empty tensor's offset is never checked against its storage: nothing to read.
        entries.append(TensorEntry(spec: spec, bytes: UnsafeRawBufferPointer(start: nil, count: 0)))
      } else if TorchCheckpoint.isContiguous(reference) {
        let begin = reference.offset * reference.dtype.size
        let bytes = UnsafeRawBufferPointer(rebasing: storage[begin..<(begin + byteCount)])
        entries.append(
          TensorEntry(spec: spec) { sink in
            try checkpoint.verifyStorage(of: tensor)
            try sink.write(bytes)
          })
      } else {
        madeContiguous += 1
        entries.append(
          TensorEntry(spec: spec) { sink in
            try checkpoint.verifyStorage(of: tensor)
            try gather(reference, from: storage, write: sink.write)
          })
      }
    }
    var outputMetadata = metadata
    outputMetadata["rouwei.source"] = (input as NSString).lastPathComponent
    outputMetadata["rouwei.source_format"] = checkpoint.format.rawValue
    for (key, value) in checkpoint.scalars where key.count <= 64 { outputMetadata["rouwei.source." + key] = value }
    try SafeTensorsWriter.write(
      to: output, entries: entries, metadata: outputMetadata, inputs: [input],
      progress: progress.map { report in { _, _, done, total in report(done, total) } })
    try checkpoint.mapping.checkIntact()
    return TorchImportReport(
      input: (input as NSString).lastPathComponent, output: output, format: checkpoint.format.rawValue,
      tensorsWritten: entries.count, tensorsMadeContiguous: madeContiguous, emaTensorsDropped: emaDropped,
      trainingStateTensorsDropped: stateDropped, bytesOut: bytes, scalars: checkpoint.scalars,
      seconds: Date().timeIntervalSince(start))
  }

  /// Writes a strided view in row-major order: runs of the innermost dimension when its stride is
  /// 1, element by element otherwise, through a buffer of at most `gatherChunk` bytes.
  static func gather(
    _ reference: TensorReference, from storage: UnsafeRawBufferPointer, write: (UnsafeRawBufferPointer) throws -> Void
  ) throws {
    let size = reference.dtype.size
    let shape = reference.shape, stride = reference.stride
    let rank = shape.count
    let inner = shape[rank - 1], innerStride = stride[rank - 1]
    let rows = shape.dropLast().reduce(1, *)
    var buffer = [UInt8](repeating: 0, count: min(gatherChunk, max(inner * size, size) * max(rows, 1)))
    var filled = 0
    var index = [Int](repeating: 0, count: max(rank - 1, 0))
    try buffer.withUnsafeMutableBytes { out in
      for _ in 0..<rows {
        var base = reference.offset
        for axis in 0..<(rank - 1) { base += index[axis] * stride[axis] }
        var element = 0
        while element < inner {
          if filled + size > out.count {
            try write(UnsafeRawBufferPointer(rebasing: out[0..<filled]))
            filled = 0
          }
          if innerStride == 1 {
            let run = min(inner - element, (out.count - filled) / size)
            let from = (base + element) * size
            out.baseAddress!.advanced(by: filled).copyMemory(
              from: storage.baseAddress!.advanced(by: from), byteCount: run * size)
            filled += run * size
            element += run
          } else {
            let from = (base + element * innerStride) * size
            out.baseAddress!.advanced(by: filled).copyMemory(
              from: storage.baseAddress!.advanced(by: from), byteCount: size)
            filled += size
            element += 1
          }
        }
        // Next row: increment the multi-index, last axis fastest.
        var axis = rank - 2
        while axis >= 0 {
          index[axis] += 1
          if index[axis] < shape[axis] { break }
          index[axis] = 0
          axis -= 1
        }
      }
      if filled > 0 { try write(UnsafeRawBufferPointer(rebasing: out[0..<filled])) }
    }
  }

  /// `info` for a PyTorch checkpoint: the same report as for safetensors, from the model tensors'
  /// names, shapes and dtypes (EMA and training state are counted under findings). With `hashes`,
  /// the whole file's SHA-256/AutoV1/AutoV2 (what Civitai lists for a .ckpt), through `hashCache`.
  public static func inspect(path: String, hashes wantHashes: Bool = false, hashCache: HashCache? = nil) throws
    -> InspectionReport
  {
    let checkpoint = try TorchCheckpoint(path: path)
    let model = checkpoint.tensors.filter { $0.role != .trainingState }
    var shapes: [String: [Int]] = [:]
    for tensor in model { shapes[tensor.name] = tensor.shape }
    let keys = Set(shapes.keys)
    let layout = Layout.detect(keys: keys)
    let architecture = ArchitectureDetector.detect(
      shapes: shapes, unetPrefix: layout.unetPrefix ?? SingleFilePrefix.unet)
    var summaries: [Component: ComponentSummary] = [:]
    var dtypes: [String: Int] = [:]
    var parameters = 0
    for tensor in model {
      let component = tensor.role == .ema ? .ema : layout.component(of: tensor.name)
      let dtype = tensor.dtype.safeTensors?.rawValue ?? tensor.dtype.rawValue
      var summary =
        summaries[component] ?? ComponentSummary(component: component, tensors: 0, parameters: 0, bytes: 0, dtypes: [:])
      summary.tensors += 1
      summary.bytes += tensor.elementCount * tensor.dtype.size
      if tensor.dtype.safeTensors?.isFloatingPoint ?? true {
        summary.parameters += tensor.elementCount
        parameters += tensor.elementCount
      }
      summary.dtypes[dtype, default: 0] += 1
      dtypes[dtype, default: 0] += 1
      summaries[component] = summary
    }
    let metadata = checkpoint.scalars
    let prediction = PredictionDetector.detect(keys: keys, metadata: [:])
    var anomalies = prediction.conflicts.map {
      Anomaly(severity: "warning", code: "prediction-conflict", message: $0, tensors: [])
    }
    anomalies.append(
      Anomaly(
        severity: "info", code: "pytorch-pickle",
        message:
          "a PyTorch checkpoint (\(checkpoint.format.rawValue)), read by the restricted unpickler (nothing was run); convert it to safetensors to use it: `rouwei-ckpt convert \((path as NSString).lastPathComponent) -o OUT.safetensors`",
        tensors: []))
    let ema = checkpoint.tensors.filter { $0.role == .ema }.count
    if ema > 0 {
      anomalies.append(
        Anomaly(
          severity: "info", code: "ema-weights", message: "\(ema) EMA tensors: convert drops them unless --keep-ema",
          tensors: []))
    }
    let state = checkpoint.tensors.filter { $0.role == .trainingState }.count
    if state > 0 {
      anomalies.append(
        Anomaly(
          severity: "info", code: "training-state",
          message: "\(state) optimizer or other training-state tensors (not counted above): convert drops them",
          tensors: []))
    }
    let hashes = wantHashes ? ModelHasher.hashes(of: checkpoint.mapping, dataOffset: nil, cache: hashCache) : nil
    return InspectionReport(
      path: path, format: checkpoint.format.rawValue, layout: layout.name, fileSize: checkpoint.mapping.size,
      headerBytes: nil,
      tensorCount: model.count, parameterCount: parameters, dtypes: dtypes, architecture: architecture,
      components: summaries.values.sorted { $0.component < $1.component }, prediction: prediction,
      metadata: metadata, hashes: hashes?.hashes, keyCheck: nil, anomalies: anomalies, nonFinite: nil, keys: nil,
      hashesFromCache: hashes?.fromCache)
  }
}
