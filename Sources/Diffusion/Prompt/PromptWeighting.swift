/// How token weights are applied to a text encoder's output. Pooled outputs are never weighted.
///
/// - `comfyUI` (ComfyUI `ClipTokenWeightEncoder.encode_token_weights`, its only mode): the empty
///   prompt `[start, end, pad…]` is encoded as well, and each position j whose weight w ≠ 1 becomes
///   `z_empty[j] + (z[j] − z_empty[j])·w`. Nothing else changes; the mean is not restored.
/// - `a1111` (A1111's default emphasis "Original", `modules/sd_emphasis.py`): per chunk and per
///   encoder, `μ0 = mean(z)`, `z ← z·m` row by row, `μ1 = mean(z)`, `z ← z·(μ0/μ1)`.
/// - `a1111NoNorm` (A1111's "No norm"): `z ← z·m` only.
public enum TokenWeighting: String, Sendable, CaseIterable {
  /// ComfyUI: interpolate away from the empty prompt's encoding.
  case comfyUI
  /// A1111 "Original": multiply, then restore the chunk's mean.
  case a1111
  /// A1111 "No norm": multiply only.
  case a1111NoNorm = "a1111-nonorm"
}

/// Token weighting on encoder outputs held as row-major `[tokens × width]` Float arrays.
public enum PromptWeighting {
  /// A1111's emphasis on one chunk's output `z` (77 × `width`), multipliers per token.
  public static func applyA1111(
    _ z: inout [Float], multipliers: [Double], width: Int, restoreMean: Bool = true
  ) {
    precondition(z.count == multipliers.count * width, "z is not tokens × width")
    let originalMean = mean(z)
    for (row, multiplier) in multipliers.enumerated() {
      // torch multiplies a float32 tensor by a float32 multiplier tensor.
      let factor = Float(multiplier)
      for column in 0..<width { z[row * width + column] *= factor }
    }
    guard restoreMean else { return }
    let ratio = originalMean / mean(z)
    for index in z.indices { z[index] *= ratio }
  }

  /// ComfyUI's weighting on one chunk's output `z`, given the empty prompt's output `empty`.
  public static func applyComfyUI(
    _ z: inout [Float], empty: [Float], weights: [Double], width: Int
  ) {
    precondition(z.count == weights.count * width && empty.count == z.count, "shape mismatch")
    for (row, weight) in weights.enumerated() where weight != 1 {
      let factor = Float(weight)
      for column in 0..<width {
        let index = row * width + column
        z[index] = (z[index] - empty[index]) * factor + empty[index]
      }
    }
  }

  /// Encodes every chunk with `encode` (77 ids → 77 × `width` floats), applies `weighting` and
  /// concatenates the chunks along the token axis (`[77·chunks × width]`).
  ///
  /// For `.comfyUI` the empty prompt (`TokenChunk.empty(padToken:)`) is encoded once, and only
  /// when some weight differs from 1.
  public static func encode(
    _ chunks: [TokenChunk], weighting: TokenWeighting, padToken: Int32, width: Int,
    encode: ([Int32]) throws -> [Float]
  ) rethrows -> [Float] {
    var output = [Float]()
    output.reserveCapacity(chunks.count * TokenChunk.length * width)
    var empty: [Float]?
    if weighting == .comfyUI && chunks.contains(where: { $0.isWeighted }) {
      empty = try encode(TokenChunk.empty(padToken: padToken).tokens)
    }
    for chunk in chunks {
      var z = try encode(chunk.tokens)
      switch weighting {
      case .comfyUI:
        if let empty { applyComfyUI(&z, empty: empty, weights: chunk.weights, width: width) }
      case .a1111:
        applyA1111(&z, multipliers: chunk.weights, width: width, restoreMean: true)
      case .a1111NoNorm:
        applyA1111(&z, multipliers: chunk.weights, width: width, restoreMean: false)
      }
      output += z
    }
    return output
  }

  /// The mean of `values`, accumulated in Double.
  static func mean(_ values: [Float]) -> Float {
    guard !values.isEmpty else { return 0 }
    var sum = 0.0
    for value in values { sum += Double(value) }
    return Float(sum / Double(values.count))
  }
}
