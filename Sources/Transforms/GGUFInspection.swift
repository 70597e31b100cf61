import Checkpoint
import Foundation
import SafeTensors
import Weights

/// `info` for GGUF files: the same report as for safetensors, read from the GGUF header.
public enum GGUFInspection {
  /// Whether the file starts with the GGUF magic.
  public static func isGGUF(path: String) -> Bool {
    guard let handle = FileHandle(forReadingAtPath: path) else { return false }
    defer { try? handle.close() }
    return (try? handle.read(upToCount: 4)) == Data("GGUF".utf8)
  }

  /// Inspects the GGUF file at `path`; with `hashes`, also its hashes (looked up in and recorded
  /// to `hashCache` when given).
  public static func inspect(path: String, hashes wantHashes: Bool, hashCache: HashCache? = nil) throws
    -> InspectionReport
  {
    let file = try GGUFFile(path: path)
    var shapes: [String: [Int]] = [:]
    for tensor in file.tensors { shapes[tensor.name] = tensor.shape }
    let keys = Set(shapes.keys)
    let layout = Layout.detect(keys: keys)
    let architecture = ArchitectureDetector.detect(
      shapes: shapes, unetPrefix: layout.unetPrefix ?? SingleFilePrefix.unet)
    var summaries: [Component: ComponentSummary] = [:]
    var dtypes: [String: Int] = [:]
    var parameters = 0
    for tensor in file.tensors {
      let component = layout.component(of: tensor.name)
      var summary =
        summaries[component] ?? ComponentSummary(component: component, tensors: 0, parameters: 0, bytes: 0, dtypes: [:])
      summary.tensors += 1
      summary.bytes += tensor.byteCount
      let integer = [GGMLType.i8, .i16, .i32, .i64].contains(tensor.type)
      if !integer {
        summary.parameters += tensor.elementCount
        parameters += tensor.elementCount
      }
      summary.dtypes[tensor.type.name.uppercased(), default: 0] += 1
      dtypes[tensor.type.name.uppercased(), default: 0] += 1
      summaries[component] = summary
    }
    let prediction = PredictionDetector.detect(keys: keys, metadata: file.metadata)
    var anomalies = prediction.conflicts.map {
      Anomaly(severity: "warning", code: "prediction-conflict", message: $0, tensors: [])
    }
    if layout.name == "unet-only" || !keys.contains(where: { $0.hasPrefix(SingleFilePrefix.vae) }) {
      anomalies.append(
        Anomaly(
          severity: "info", code: "gguf-unet-only",
          message: "no VAE or text encoders in this GGUF: load them separately", tensors: []))
    }
    let hashes = wantHashes ? ModelHasher.hashes(of: file.mapping, dataOffset: nil, cache: hashCache) : nil
    return InspectionReport(
      path: path, format: "gguf", layout: layout.name, fileSize: file.mapping.size, headerBytes: nil,
      tensorCount: file.tensors.count, parameterCount: parameters, dtypes: dtypes, architecture: architecture,
      components: summaries.values.sorted { $0.component < $1.component }, prediction: prediction,
      metadata: file.metadata, hashes: hashes?.hashes, keyCheck: nil, anomalies: anomalies, nonFinite: nil,
      keys: nil, hashesFromCache: hashes?.fromCache)
  }
}
