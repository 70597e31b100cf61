import Checkpoint
import Foundation

/// What a command wants to do with an input path.
enum InputUse {
  /// `info`: describe it.
  case describe
  /// `convert`: read it and write a new file.
  case convert
  /// `merge`: one of the models being merged.
  case merge
  /// `sample`, `verify`: render with it.
  case render
}

/// An input whose kind the command cannot use, with what to do instead (exit 2).
struct UnusableInput: Error, ExitStatusProviding, CustomStringConvertible {
  let path: String
  let kind: FileKind
  let advice: String?
  var exitStatus: ExitStatus { .badInput }
  var description: String { "\(path) is \(kind.phrase)" + (advice.map { ": \($0)" } ?? "") }
}

/// The sniff every command makes of its inputs before anything else (`FileKind.sniff`): kinds the
/// command cannot use end here in one line that says what the file is. Kinds whose own reader gives
/// the better message (a malformed safetensors header, a missing path) pass.
enum InputCheck {
  @discardableResult
  static func require(_ path: String, for use: InputUse) throws -> FileKind {
    let kind = FileKind.sniff(path: path)
    if let advice = refusal(kind, path: path, use: use) {
      throw UnusableInput(path: path, kind: kind, advice: advice.isEmpty ? nil : advice)
    }
    return kind
  }

  /// nil when `use` can go ahead with `kind`; otherwise the advice ("" for none).
  static func refusal(_ kind: FileKind, path: String, use: InputUse) -> String? {
    let name = (path as NSString).lastPathComponent
    let stem = (name as NSString).deletingPathExtension
    let convertFirst = "convert it first: `rouwei-ckpt convert \(name) -o \(stem).safetensors`"
    switch kind {
    case .missing, .malformedSafeTensors: return nil
    case .empty, .truncated, .html, .json, .text: return "download it again"
    case .zip, .pickle, .directory, .gitLFSPointer, .unknown: return ""
    case .torchZip, .torchLegacy:
      return use == .describe || use == .convert ? nil : convertFirst
    case .gguf, .diffusersFolder:
      // The weight source renders both; merging reads single-file safetensors only.
      return use == .merge ? convertFirst : nil
    case .safetensors(let content, _):
      if use == .describe || use == .convert { return nil }
      switch content {
      case .fullCheckpoint, .unknown: return nil
      case .unetOnly:
        // Rendering takes the missing parts from `--text-encoders` / `--vae`; the weight source names what is missing.
        return nil
      case .vae, .textEncoder:
        return use == .merge
          ? nil
          : "sample and verify render a model with a UNet; pass this file as `--vae` or `--text-encoders` alongside one"
      case .loraAdapter:
        return
          "bake it into a model with `rouwei-ckpt merge BASE --lora \(name) -o OUT` or render with `--lora \(name)`"
      case .textualInversion:
        return "use it in a prompt (ComfyUI `embedding:\(stem)`, A1111 `\(stem)`), not as a model"
      case .controlNet:
        return "it guides a base model in ComfyUI/A1111; it is not a model to \(use == .merge ? "merge" : "render")"
      }
    }
  }
}
