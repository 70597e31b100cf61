import Adapters
import ArgumentParser
import Checkpoint
import Foundation
import SafeTensors
import TorchImport
import Transforms
import Verification
import Weights

/// `rouwei-ckpt info`: what a checkpoint is and what is wrong with it.
struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Describe checkpoints: architecture, components, dtypes, prediction type, hashes, problems.",
    discussion: """
      Reads only the header unless --hash or --scan ask for a full pass, so it answers in milliseconds
      even for a 7 GB file. PATH may be a .safetensors, .gguf or PyTorch .ckpt/.pt file (read without running its pickle) or a diffusers folder.

      --probe runs the prediction-type probe of `verify` (the UNet at high noise on a known latent):
      a file marked epsilon that behaves like v (a merge that lost its v_pred key) or the reverse is
      reported with what ComfyUI/A1111 will do with it. Use `verify` to gate on it (exit 1).

      Exit codes: 0 all files read, 2 a file is malformed or unsupported, 3 an I/O error.
      """)

  @Argument(help: "Checkpoint files (.safetensors, .gguf, .ckpt, .pt) or diffusers folders.")
  var paths: [String]

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  @Flag(help: "Compute SHA-256, AutoV1, AutoV2 and AutoV3 hashes (reads the whole file).")
  var hash = false

  @Flag(help: "Scan every tensor for NaN and Inf values (reads the whole file).")
  var scan = false

  @Flag(help: "List every tensor with dtype and shape.")
  var keys = false

  @Flag(
    help:
      "Run the UNet at high noise and say whether it behaves like epsilon or v, against what the file declares (loads the model: seconds for the tiny fixtures, minutes for SDXL)."
  )
  var probe = false

  @Option(help: "With --probe: channels per UNet attention head (default: the file's 'rouwei.unet_head_dim', else 64).")
  var headDim: Int?

  @OptionGroup var hashCacheOptions: HashCacheOptions

  func validate() throws {
    if headDim != nil && !probe { throw ValidationError("--head-dim needs --probe") }
    if let headDim, headDim < 1 { throw ValidationError("--head-dim must be positive") }
  }

  func run() throws {
    let hashCache = hash ? hashCacheOptions.cache() : nil
    var reports: [InfoDocument] = []
    var firstError: Error?
    for path in paths {
      do {
        let kind = try InputCheck.require(path, for: .describe)
        if kind == .torchZip || kind == .torchLegacy {
          let report = try TorchImporter.inspect(path: path, hashes: hash, hashCache: hashCache)
          reports.append(InfoDocument(report: report, kind: kind.name))
          if !json { print(InfoView.render(report), terminator: paths.count > 1 ? "\n" : "") }
          continue
        }
        var adapterProblem: String?
        if case .safetensors(.loraAdapter, _) = kind {
          do {
            let adapter = AdapterReport(try AdapterFile(path: path))
            var document = InfoDocument(report: nil)
            document.adapter = adapter
            document.kind = kind.name
            reports.append(document)
            if !json { print(adapter.render(), terminator: paths.count > 1 ? "\n" : "") }
            continue
          } catch let error as AdapterError where !error.isIOFailure {
            // Described as a plain safetensors file below, with what makes it unusable.
            adapterProblem = SafeTensorsError.printable(error.description, limit: 4096)
          }
        }
        let report: InspectionReport
        if kind == .gguf {
          report = try GGUFInspection.inspect(path: path, hashes: hash, hashCache: hashCache)
        } else {
          let progress = ProgressBar("reading", total: 1, quiet: json)
          report = try Inspector.inspect(
            path: path, options: .init(hashes: hash, scan: scan, listKeys: keys, hashCache: hashCache)
          ) { done, total in progress.update(Double(done) / Double(max(total, 1))) }
          progress.finish()
        }
        var document = InfoDocument(report: report)
        document.kind = kind.name
        document.adapterProblem = adapterProblem
        var probeLines: [String] = []
        if probe {
          let outcome = try PredictionProbe.run(
            path: path, options: ModelLoadOptions(headDimension: headDim, hashCache: hashCache))
          document.probe = InfoDocument.Probe(
            verdict: outcome.verdict, measurements: outcome.result, note: outcome.note)
          probeLines =
            ["", "Probe (how the UNet behaves)"]
            + VerifyReport.predictionLines(outcome.verdict, probe: outcome.result).map { "  " + $0 }
          if let note = outcome.note { probeLines.append("  ! \(note)") }
          probeLines.append("")
        }
        reports.append(document)
        if !json {
          let problem = adapterProblem.map { "  ! not usable as an adapter: \($0)\n" } ?? ""
          print(
            InfoView.marking(InfoView.render(report), kind: kind) + problem + probeLines.joined(separator: "\n"),
            terminator: paths.count > 1 ? "\n" : "")
        }
      } catch {
        FileHandle.standardError.write(Data(("rouwei-ckpt: " + ExitStatus.message(for: error) + "\n").utf8))
        if firstError == nil { firstError = error }
      }
    }
    if json {
      if paths.count == 1, let report = reports.first {
        try printJSON(report)
      } else if paths.count > 1 {
        try printJSON(reports)
      }
    }
    if let firstError { throw AlreadyReported(underlying: firstError) }
  }
}

/// One path's JSON document: the inspection report, with the probe's findings under `probe`.
struct InfoDocument: Encodable {
  struct Probe: Encodable {
    let verdict: PredictionVerdict
    let measurements: PredictionProbe.Result
    let note: String?
  }

  let report: InspectionReport?
  /// For a LoRA/LyCORIS adapter: what it is and what it touches.
  var adapter: AdapterReport?
  var probe: Probe?
  /// What the sniffer says the file is (`FileKind.name`).
  var kind: String?
  /// For a LoRA-like file the adapter reader refuses: why.
  var adapterProblem: String?

  private enum Keys: String, CodingKey {
    case probe, kind
    case adapterProblem = "adapter_problem"
  }

  /// The report's own keys (what `info --json` always printed), plus `probe` when it ran.
  func encode(to encoder: Encoder) throws {
    try report?.encode(to: encoder)
    try adapter?.encode(to: encoder)
    var container = encoder.container(keyedBy: Keys.self)
    try container.encodeIfPresent(kind, forKey: .kind)
    try container.encodeIfPresent(adapterProblem, forKey: .adapterProblem)
    if let probe { try container.encode(probe, forKey: .probe) }
  }
}

/// An error whose message was already printed; carries the exit status only.
struct AlreadyReported: Error, ExitStatusProviding, CustomStringConvertible {
  let underlying: Error
  var exitStatus: ExitStatus { ExitStatus(for: underlying) }
  var description: String { "" }
}

/// The human-readable view of an inspection report: a compact summary, then sections.
enum InfoView {
  /// Adds the sniffed kind under the file name when the file is not a whole checkpoint (a LoRA's
  /// architecture and prediction lines describe no model of its own).
  static func marking(_ text: String, kind: FileKind) -> String {
    guard case .safetensors(let content, _) = kind, content != .fullCheckpoint else { return text }
    var lines = text.components(separatedBy: "\n")
    let note =
      content == .loraAdapter || content == .textualInversion || content == .controlNet
      ? " (an add-on for a base model: architecture and prediction below describe no model of its own)" : ""
    lines.insert(
      "  kind: \(content.title.dropFirst(content.title.hasPrefix("an ") ? 3 : 2))\(note)", at: min(1, lines.count))
    return lines.joined(separator: "\n")
  }

  static func render(_ r: InspectionReport) -> String {
    var out: [String] = []
    let name = (r.path as NSString).lastPathComponent
    out.append(name)
    let dtypeText = r.dtypes.sorted { $0.value > $1.value }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    out.append(
      "  \(r.architecture.kind.title) · \(r.layout) · \(r.tensorCount) tensors · \(parameters(r.parameterCount)) parameters · \(dtypeText) · \(bytes(r.fileSize))"
    )
    out.append("  prediction: \(predictionLine(r.prediction))")
    if let hashes = r.hashes {
      out.append("  AutoV2 \(hashes.autoV2) · AutoV3 \(hashes.autoV3 ?? "-") · AutoV1 \(hashes.autoV1)")
    }
    let problems = r.anomalies.filter { $0.severity != "info" }
    out.append("  problems: \(problems.isEmpty ? "none" : "\(problems.count) (see below)")")

    out.append("")
    out.append("Architecture")
    for line in r.architecture.evidence { out.append("  \(line)") }

    out.append("")
    out.append("Components")
    for c in r.components {
      let types = c.dtypes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
      out.append(
        "  \(pad(c.component.title, 17)) \(pad(String(c.tensors), 5, left: true)) tensors  \(pad(grouped(c.parameters), 13, left: true)) params  \(pad(bytes(c.bytes), 9, left: true))  \(types)"
      )
    }

    out.append("")
    out.append("Prediction")
    if r.prediction.evidence.isEmpty {
      out.append("  no markers or metadata: every loader assumes epsilon")
    }
    for e in r.prediction.evidence { out.append("  \(e.source) \(e.key): \(e.says)") }
    out.append("  ComfyUI / A1111 / Forge load it as: \(r.prediction.loadedByComfyUIAs)")
    for conflict in r.prediction.conflicts { out.append("  ! \(conflict)") }

    if let hashes = r.hashes {
      out.append("")
      out.append(r.hashesFromCache == true ? "Hashes (from the hash cache)" : "Hashes")
      out.append("  SHA-256        \(hashes.sha256)")
      out.append("  AutoV2         \(hashes.autoV2)")
      out.append("  AutoV1 legacy  \(hashes.autoV1)")
      if let v3 = hashes.autoV3 { out.append("  AutoV3         \(v3)  (tensor data only)") }
    }

    if !r.metadata.isEmpty {
      out.append("")
      out.append("Metadata")
      for (key, value) in r.metadata.sorted(by: { $0.key < $1.key }) {
        let flat = value.replacingOccurrences(of: "\n", with: " ")
        out.append("  \(key): \(flat.count > 100 ? String(flat.prefix(97)) + "…" : flat)")
      }
    }

    if let check = r.keyCheck {
      out.append("")
      out.append("Keys against the \(check.template) template (\(check.expected) expected)")
      out.append(
        "  missing \(check.missing.count) · extra \(check.extra.count) · other shape \(check.wrongShape.count)")
      for key in check.missing.prefix(10) { out.append("  - \(key)") }
      for key in check.wrongShape.prefix(10) { out.append("  ≠ \(key)") }
      for key in check.extra.prefix(10) { out.append("  + \(key)") }
    }

    if !r.anomalies.isEmpty {
      out.append("")
      out.append("Findings")
      for a in r.anomalies { out.append("  [\(a.severity)] \(a.code): \(a.message)") }
    }
    if let scan = r.nonFinite, scan.isEmpty {
      out.append("")
      out.append("Scan: every tensor is finite")
    }

    if let keys = r.keys {
      out.append("")
      out.append("Tensors")
      for k in keys { out.append("  \(k.name)  \(k.dtype) \(k.shape)") }
    }
    // Names and metadata come from the file: escape control characters so a hostile header cannot
    // drive the terminal (SafeTensorsError.printable; JSON output is escaped by the encoder).
    return out.map { SafeTensorsError.printable($0, limit: .max) }.joined(separator: "\n") + "\n"
  }

  static func predictionLine(_ p: PredictionReport) -> String {
    var text: String
    switch p.prediction {
    case .epsilon: text = "epsilon"
    case .v: text = "v-prediction"
    case .edmV: text = "EDM v-prediction"
    }
    if p.zeroTerminalSNR { text += " + zero-terminal SNR" }
    let sources = p.evidence.map(\.key)
    text += sources.isEmpty ? " (no evidence of v: default)" : " (\(sources.joined(separator: ", ")))"
    if !p.conflicts.isEmpty { text += " — \(p.conflicts.count) conflict(s)" }
    return text
  }

  static func parameters(_ count: Int) -> String {
    if count >= 1_000_000_000 { return String(format: "%.2f B", Double(count) / 1e9) }
    if count >= 1_000_000 { return String(format: "%.1f M", Double(count) / 1e6) }
    return grouped(count)
  }

  static func grouped(_ count: Int) -> String {
    let digits = Array(String(count))
    var out = ""
    for (index, digit) in digits.enumerated() {
      if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
      out.append(digit)
    }
    return out
  }

  static func bytes(_ count: Int) -> String {
    if count >= 1_000_000_000 { return String(format: "%.2f GB", Double(count) / 1e9) }
    if count >= 1_000_000 { return String(format: "%.1f MB", Double(count) / 1e6) }
    if count >= 1_000 { return String(format: "%.1f kB", Double(count) / 1e3) }
    return "\(count) B"
  }

  static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let padding = String(repeating: " ", count: max(0, width - text.count))
    return left ? padding + text : text + padding
  }
}
