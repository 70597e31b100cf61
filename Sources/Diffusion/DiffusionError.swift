import Foundation

/// What can go wrong in the model-independent parts of the Diffusion module (tokenizer vocabulary,
/// schedules, samplers).
///
/// Prompt parsing never fails: every string is a valid prompt. The CLI maps `isIOFailure` cases to
/// exit code 3 and the rest to 2.
public enum DiffusionError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The BPE vocabulary resource was not found in any of the places searched.
  case vocabularyNotFound(searched: [String])
  /// A vocabulary file could not be read.
  case vocabularyUnreadable(file: String, reason: String)
  /// A vocabulary file was read but its content is not a CLIP merges list.
  case invalidVocabulary(file: String, reason: String)
  /// A sigma schedule was asked for with unusable parameters.
  case invalidSchedule(reason: String)
  /// A sampler was given inputs of inconsistent sizes or an unusable sigma list.
  case invalidSamplerInput(reason: String)

  /// Whether the failure is an I/O problem (exit 3) rather than bad input (exit 2).
  public var isIOFailure: Bool {
    switch self {
    case .vocabularyUnreadable: return true
    default: return false
    }
  }

  /// One line saying what went wrong and where.
  public var description: String {
    switch self {
    case .vocabularyNotFound(let searched):
      return "CLIP BPE vocabulary not found; looked in: \(searched.joined(separator: ", "))"
        + " (set ROUWEI_CLIP_VOCAB to the path of bpe_simple_vocab_16e6.txt.zst or the plain .txt)"
    case .vocabularyUnreadable(let file, let reason):
      return "\(file): cannot read the CLIP BPE vocabulary: \(reason)"
    case .invalidVocabulary(let file, let reason):
      return "\(file): not a CLIP BPE merges list: \(reason)"
    case .invalidSchedule(let reason):
      return "invalid sigma schedule: \(reason)"
    case .invalidSamplerInput(let reason):
      return "invalid sampler input: \(reason)"
    }
  }
}
