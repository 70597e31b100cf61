import ArgumentParser
import Checkpoint
import Foundation
import SafeTensors
import Transforms
import Weights

/// Target dtypes as users of ComfyUI/A1111/sd-scripts spell them.
enum TargetDType: String, ExpressibleByArgument, CaseIterable {
  case fp32, fp16, bf16
  case fp8 = "fp8-e4m3fn"
  case fp8e5m2 = "fp8-e5m2"
  case int8
  case fp8Scaled = "fp8-scaled"
  case q8_0, q5_1, q5_0, q4_1, q4_0
  case q6_K, q5_K, q4_K, q3_K, q2_K
  case q5_K_M = "Q5_K_M"
  case q5_K_S = "Q5_K_S"
  case q4_K_M = "Q4_K_M"
  case q4_K_S = "Q4_K_S"
  case q3_K_M = "Q3_K_M"
  case q3_K_S = "Q3_K_S"

  init?(argument: String) {
    switch argument.lowercased() {
    case "fp32", "float32", "f32": self = .fp32
    case "fp16", "float16", "half", "f16": self = .fp16
    case "bf16", "bfloat16": self = .bf16
    case "fp8", "fp8-e4m3fn", "fp8_e4m3fn", "e4m3fn", "fp8-e4m3": self = .fp8
    case "fp8-e5m2", "fp8_e5m2", "e5m2": self = .fp8e5m2
    case "int8", "i8", "int8-rows": self = .int8
    case "fp8-scaled", "scaled-fp8", "fp8_scaled": self = .fp8Scaled
    case "q8_0", "q8": self = .q8_0
    case "q5_1": self = .q5_1
    case "q5_0": self = .q5_0
    case "q4_1": self = .q4_1
    case "q4_0": self = .q4_0
    case "q6_k": self = .q6_K
    case "q5_k": self = .q5_K
    case "q4_k": self = .q4_K
    case "q3_k": self = .q3_K
    case "q2_k": self = .q2_K
    default:
      guard let preset = GGUFPreset(name: argument), let value = TargetDType(rawValue: preset.rawValue) else {
        return nil
      }
      self = value
    }
  }

  var dtype: DType {
    switch self {
    case .fp32: return .f32
    case .fp16: return .f16
    case .bf16: return .bf16
    case .fp8: return .f8e4m3
    case .fp8e5m2: return .f8e5m2
    case .int8: return .i8
    case .fp8Scaled: return .f8e4m3
    default: return .f16  // GGUF block types and presets
    }
  }

  /// The ggml type for GGUF output, or nil where GGUF has none.
  var ggmlType: GGMLType? {
    switch self {
    case .fp32: return .f32
    case .fp16: return .f16
    case .bf16: return .bf16
    case .q8_0: return .q8_0
    case .q5_1: return .q5_1
    case .q5_0: return .q5_0
    case .q4_1: return .q4_1
    case .q4_0: return .q4_0
    case .q6_K: return .q6_K
    case .q5_K: return .q5_K
    case .q4_K: return .q4_K
    case .q3_K: return .q3_K
    case .q2_K: return .q2_K
    case .fp8, .fp8e5m2, .int8, .fp8Scaled: return nil
    default: return preset?.base
    }
  }

  /// The GGUF mixture this names (`Q4_K_M`, …), if any.
  var preset: GGUFPreset? { GGUFPreset(rawValue: rawValue) }
}

extension GGMLQuantizerMethod: ExpressibleByArgument {}

/// `rouwei-ckpt convert`: dtype casts, component extraction, VAE baking, prediction markers.
struct Convert: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Convert a checkpoint: change dtype, extract components, bake in a VAE, set prediction markers.",
    discussion: """
      Streams tensor by tensor from the mapped input: memory stays flat whatever the model size, and
      the output appears only when complete (temporary file, fsync, rename).

      Casts round to nearest even, bit-identical to PyTorch. Values a narrower dtype cannot hold are
      refused (exit 2, naming the tensors) unless --clamp saturates them. Integer tensors
      (position_ids), markers and --keep matches keep their dtype; for fp8 targets 1-D tensors (norms,
      biases) and embedding tables do too.

      Examples:
        rouwei-ckpt convert model.safetensors -o model-fp16.safetensors --dtype fp16
        rouwei-ckpt convert model.safetensors -o unet.safetensors --components unet
        rouwei-ckpt convert model.safetensors -o baked.safetensors --replace-vae sdxl_vae.safetensors
        rouwei-ckpt convert merged.safetensors -o fixed.safetensors --set-prediction v --ztsnr
        rouwei-ckpt convert model.safetensors -o model-fp8.safetensors --dtype fp8 --verify-reference model.safetensors

      --verify renders the output with `verify` once it is written and exits 1 if a check fails
      (the output is kept, so it can be inspected).
      """)

  @Argument(
    help:
      "The input checkpoint (.safetensors, .gguf, a diffusers folder, or a PyTorch .ckpt/.pt read without running its code)."
  )
  var input: String

  @Option(name: .shortAndLong, help: "The output file (never one of the inputs).")
  var output: String

  @Option(
    help:
      "Target dtype: fp32, fp16, bf16, fp8-e4m3fn, fp8-e5m2, int8 (per-row, UNet Linears), fp8-scaled (ComfyUI scaled fp8, UNet Linears); for .gguf output f16, f32, bf16, q8_0, q6_K, q5_K, q5_1, q5_0, q4_K, q4_1, q4_0, q3_K, q2_K or a mixture Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_M, Q3_K_S (default: keep each tensor's)."
  )
  var dtype: TargetDType?

  @Option(
    help:
      "GGUF block scales: unit-importance (default: ggml's error-minimising search with weights of one, the bytes stable-diffusion.cpp's converter writes), reference (ggml's reference quantizers: the bytes gguf-py and llama-quantize without an imatrix write) or search (per block the least squared error of both and our own search; lowest RMSE, slower)."
  )
  var quantizer: GGMLQuantizerMethod?

  @Flag(
    help:
      "GGUF output: measure each quantized tensor's error (RMSE, max error relative to its range), listed worst first.")
  var report = false

  @Option(help: "Components to keep, comma-separated: unet, clip_l, clip_g, vae (also text-encoders).")
  var components: String?

  @Option(name: .customLong("keep"), help: "Keep tensors matching this glob in their dtype (repeatable).")
  var keep: [String] = []

  @Flag(help: "Saturate values outside the target range instead of refusing.")
  var clamp = false

  @Flag(help: "Drop EMA weights (model_ema.*) and training schedule buffers.")
  var dropEMA = false

  @Flag(help: "With a PyTorch .ckpt/.pt input: keep its EMA weights (dropped by default; optimizer state always is).")
  var keepEMA = false

  @Option(help: "Take the VAE from this file (single-file, LDM or diffusers VAE).")
  var replaceVAE: String?

  @Option(help: "Set the prediction type: v adds the v_pred marker, eps removes the markers.")
  var setPrediction: PredictionType?

  @Flag(help: "With --set-prediction v: also mark zero-terminal SNR (ztsnr).")
  var ztsnr = false

  @Option(
    help:
      "Output layout: single-file (default) or diffusers (OUT is a new pipeline folder). A diffusers folder as input is read automatically."
  )
  var layout: OutputLayout = .singleFile

  @OptionGroup var jsonOption: JSONOption
  var json: Bool { jsonOption.json }

  @OptionGroup var threadsOption: ThreadsOption

  @OptionGroup var verification: VerifyAfterWriting

  enum OutputLayout: String, ExpressibleByArgument {
    case singleFile = "single-file"
    case diffusers
  }

  func validate() throws {
    if output.hasSuffix(".gguf") && !input.hasSuffix(".gguf") {
      guard let dtype, dtype.ggmlType != nil else {
        throw ValidationError(
          "GGUF output needs --dtype f16, f32, bf16, q8_0, q6_K, q5_K, q5_1, q5_0, q4_K, q4_1, q4_0, q3_K, q2_K or a mixture (Q4_K_M, …)"
        )
      }
      if replaceVAE != nil || setPrediction != nil || !keep.isEmpty || clamp {
        throw ValidationError(
          "--replace-vae, --set-prediction, --keep and --clamp apply to safetensors output; convert first, then to GGUF"
        )
      }
    } else if report || quantizer != nil {
      throw ValidationError("--report and --quantizer apply to GGUF output")
    } else if let dtype, dtype.ggmlType?.isQuantized == true {
      throw ValidationError("\(dtype.rawValue) is a GGUF block type: write the output as .gguf")
    }
    if ztsnr && setPrediction != .v {
      throw ValidationError("--ztsnr needs --set-prediction v")
    }
    if verification.isEnabled, let components, !(try Convert.parseComponents(components)).contains(.unet) {
      throw ValidationError("--verify renders a model: the selected components must include the UNet")
    }
  }

  func run() throws {
    threadsOption.apply()
    let kind = try InputCheck.require(input, for: .convert)
    if kind == .torchZip || kind == .torchLegacy { return try importTorch() }
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory), isDirectory.boolValue {
      guard layout == .singleFile else { throw ValidationError("the input is already a diffusers folder") }
      try show(
        try DiffusersLayout.importFolder(
          folder: input, output: output, dtype: dtype?.ggmlType == nil ? nil : dtype?.dtype))
      return
    }
    if layout == .diffusers {
      guard components == nil, replaceVAE == nil, setPrediction == nil, keep.isEmpty, !clamp, !dropEMA else {
        throw ValidationError(
          "--layout diffusers converts a whole checkpoint; apply other changes first, in a separate convert")
      }
      try show(
        try DiffusersLayout.export(
          input: input, folder: output, dtype: dtype?.ggmlType?.isQuantized == false ? dtype?.dtype : nil))
      return
    }
    if input.hasSuffix(".gguf") {
      guard !output.hasSuffix(".gguf") else {
        throw ValidationError("GGUF → GGUF is not supported; write .safetensors")
      }
      try show(
        try GGUFImport.convert(
          input: input, output: output, dtype: dtype?.ggmlType.flatMap { $0.isQuantized ? nil : dtype?.dtype }))
      return
    }
    if output.hasSuffix(".gguf"), let type = dtype?.ggmlType {
      let bar = ProgressBar("writing GGUF", total: 1, quiet: json)
      let quantization = GGUFQuantization(
        type: type, preset: dtype?.preset, method: quantizer ?? .conversionDefault, measure: report)
      let result = try GGUFExport.export(
        input: input, output: output, quantization: quantization,
        components: try components.map(Convert.parseComponents),
        dropEMA: dropEMA
      ) { done, total in bar.update(Double(done) / Double(max(total, 1))) }
      bar.finish()
      try show(result)
      return
    }
    var request = ConversionRequest()
    request.dtype = dtype?.dtype
    request.scaledFP8 = dtype == .fp8Scaled
    request.components = try components.map(Convert.parseComponents)
    request.keepPatterns = keep
    request.overflowPolicy = clamp ? .clamp : .refuse
    request.dropEMA = dropEMA
    request.replacementVAE = replaceVAE
    request.prediction = setPrediction
    request.zeroTerminalSNR = ztsnr
    let bar = ProgressBar("converting", total: 1, quiet: json)
    let report = try Converter.convert(input: input, output: output, request: request) { done, total in
      bar.update(Double(done) / Double(max(total, 1)))
    }
    bar.finish()
    try show(report)
  }

  func show(_ report: ConversionReport) throws {
    for warning in report.warnings {
      FileHandle.standardError.write(Data("rouwei-ckpt: warning: \(warning)\n".utf8))
    }
    if json {
      try verification.printJSON(report, output: output, partsFrom: input)
    } else {
      print(
        "\(report.output): \(report.tensorsWritten) tensors (\(report.tensorsConverted) converted, \(report.tensorsKeptWide) kept in their dtype, \(report.tensorsDropped) dropped), \(InfoView.bytes(report.bytesIn)) → \(InfoView.bytes(report.bytesOut)) in \(String(format: "%.1f", report.seconds)) s"
      )
      if !report.clamped.isEmpty {
        print("clamped: \(report.clamped.count) tensors (\(report.clamped.values.reduce(0, +)) values saturated)")
      }
      if !report.nanTensors.isEmpty {
        print(
          "NaN carried over in \(report.nanTensors.count) tensors: \(report.nanTensors.keys.sorted().prefix(5).joined(separator: ", "))"
        )
      }
      if let types = report.types {
        print(
          "types: "
            + types.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \($0.value)" }.joined(
              separator: ", "))
      }
      if let errors = report.quantization {
        print("quantization error, worst first (max error / value range, RMSE / RMS value):")
        for entry in errors {
          let type = entry.type.padding(toLength: 6, withPad: " ", startingAt: 0)
          let figures = String(
            format: "max %.3e (%.4f of range)  rmse %.3e (%.4f of rms)", entry.maxError, entry.relativeMaxError,
            entry.rmse, entry.relativeRMSE)
          print("  \(type) \(figures)  \(entry.name)")
        }
      }
      try verification.printText(output: output, partsFrom: input)
    }
  }

  static func parseComponents(_ text: String) throws -> Set<Component> {
    var set = Set<Component>()
    for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
      switch item {
      case "unet", "model": set.insert(.unet)
      case "clip_l", "clip-l", "clipl": set.insert(.clipL)
      case "clip_g", "clip-g", "clipg": set.insert(.clipG)
      case "vae": set.insert(.vae)
      case "text-encoders", "text_encoders", "clip": set.formUnion([.clipL, .clipG])
      default: throw ValidationError("unknown component '\(item)' (use unet, clip_l, clip_g, vae, text-encoders)")
      }
    }
    return set
  }
}
