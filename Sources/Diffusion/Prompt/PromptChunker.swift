/// One encoder input: 77 token ids (start, 75 prompt or padding tokens, end) and a weight for
/// each position (1 for the start, end and padding tokens).
public struct TokenChunk: Equatable, Sendable {
  /// Tokens per chunk, start and end included.
  public static let length = 77
  /// Prompt tokens per chunk.
  public static let capacity = 75

  /// The 77 token ids.
  public var tokens: [Int32]
  /// The weight of each position (A1111's multipliers, ComfyUI's token weights).
  public var weights: [Double]

  /// A chunk from its ids and weights (both of length 77).
  public init(tokens: [Int32], weights: [Double]) {
    self.tokens = tokens
    self.weights = weights
  }

  /// The empty prompt: `[start, end, pad…]`, every weight 1 (ComfyUI's `z_empty` input).
  public static func empty(padToken: Int32) -> TokenChunk {
    let tokens =
      [CLIPVocabulary.startToken, CLIPVocabulary.endToken]
      + [Int32](repeating: padToken, count: length - 2)
    return TokenChunk(tokens: tokens, weights: [Double](repeating: 1, count: length))
  }

  /// Whether any weight differs from 1.
  public var isWeighted: Bool { weights.contains { $0 != 1 } }

  /// A1111's OpenCLIP-G `process_tokens`: every position after the first end token becomes 0.
  public func zeroingAfterFirstEnd() -> TokenChunk {
    guard let first = tokens.firstIndex(of: CLIPVocabulary.endToken) else { return self }
    var copy = self
    for index in (first + 1)..<tokens.count { copy.tokens[index] = 0 }
    return copy
  }
}

/// What each SDXL text encoder gets for one prompt.
public struct SDXLPromptTokens: Equatable, Sendable {
  /// CLIP-L chunks (padded with the end token).
  public var clipL: [TokenChunk]
  /// OpenCLIP-G chunks (padded with 0 after the first end token).
  public var clipG: [TokenChunk]
}

/// Which front end's tokenization, chunking and padding to reproduce.
public enum PromptStyle: String, Sendable, CaseIterable {
  /// A1111: its syntax and `BREAK`, 75-token chunks with comma backtracking, CLIP-L tokenized
  /// by HF's tokenizer (`.ftfy`), OpenCLIP-G by open_clip's (`.openCLIP`) and zeroed after its
  /// first end token.
  case a1111
  /// ComfyUI: its syntax, token groups kept whole when short (split across chunks only when 8
  /// tokens or longer), both encoders on the same tokenizer, CLIP-G padded with 0.
  case comfyUI
}

/// Packs prompt tokens into 77-token chunks as A1111 (`modules/sd_hijack_clip.py`
/// `tokenize_line`) and ComfyUI (`comfy/sd1_clip.py` `SDTokenizer.tokenize_with_weights`) do.
public enum PromptChunker {
  /// ComfyUI's `max_word_length`: shorter token groups are never split across chunks.
  public static let comfyMaxWordLength = 8
  /// The id of `,</w>`, A1111's comma token.
  public static let commaToken: Int32 = 267

  /// Both encoders' chunks for `prompt` in the given style.
  /// - Parameters:
  ///   - tokenizer: used for both encoders in the ComfyUI style and for CLIP-L in the A1111 style.
  ///   - openCLIPTokenizer: A1111's OpenCLIP-G tokenizer (default: `tokenizer` with `.openCLIP`
  ///     clean-up).
  public static func sdxl(
    _ prompt: String, style: PromptStyle, tokenizer: CLIPTokenizer,
    openCLIPTokenizer: CLIPTokenizer? = nil, commaBacktrack: Int = 20
  ) -> SDXLPromptTokens {
    switch style {
    case .a1111:
      let segments = PromptParser.parseA1111(prompt)
      let g =
        openCLIPTokenizer
        ?? CLIPTokenizer(vocabulary: tokenizer.vocabulary, cleaning: .openCLIP)
      return SDXLPromptTokens(
        clipL: a1111(segments, tokenizer: tokenizer, commaBacktrack: commaBacktrack).chunks,
        clipG: a1111(segments, tokenizer: g, commaBacktrack: commaBacktrack).chunks
          .map { $0.zeroingAfterFirstEnd() })
    case .comfyUI:
      let segments = PromptParser.parseComfyUI(prompt)
      return SDXLPromptTokens(
        clipL: comfyUI(segments, tokenizer: tokenizer, padToken: CLIPVocabulary.endToken),
        clipG: comfyUI(segments, tokenizer: tokenizer, padToken: 0))
    }
  }

  /// A1111 `tokenize_line`: tokens fill 75-slot chunks; when a chunk is full and a comma lies
  /// within `commaBacktrack` tokens of its end, the tokens after the comma move to the next chunk;
  /// `BREAK` closes the current chunk (even an empty one); the last chunk is padded with the end
  /// token. Returns the chunks and A1111's token count (75 per closed chunk, the real count for
  /// the last).
  public static func a1111(
    _ segments: [PromptSegment], tokenizer: CLIPTokenizer, commaBacktrack: Int = 20
  ) -> (chunks: [TokenChunk], tokenCount: Int) {
    let end = CLIPVocabulary.endToken
    var chunks = [TokenChunk]()
    var tokens = [Int32]()
    var weights = [Double]()
    var tokenCount = 0
    var lastComma = -1
    func nextChunk(isLast: Bool = false) {
      tokenCount += isLast ? tokens.count : TokenChunk.capacity
      let missing = TokenChunk.capacity - tokens.count
      if missing > 0 {
        tokens += [Int32](repeating: end, count: missing)
        weights += [Double](repeating: 1, count: missing)
      }
      chunks.append(
        TokenChunk(
          tokens: [CLIPVocabulary.startToken] + tokens + [end], weights: [1] + weights + [1]))
      tokens = []
      weights = []
      lastComma = -1
    }
    for segment in segments {
      guard case .text(let text, let weight) = segment else {
        nextChunk()
        continue
      }
      for token in tokenizer.encode(text) {
        if token == commaToken {
          lastComma = tokens.count
        } else if commaBacktrack != 0 && tokens.count == TokenChunk.capacity && lastComma != -1
          && tokens.count - lastComma <= commaBacktrack
        {
          let breakAt = lastComma + 1
          let movedTokens = Array(tokens[breakAt...])
          let movedWeights = Array(weights[breakAt...])
          tokens.removeSubrange(breakAt...)
          weights.removeSubrange(breakAt...)
          nextChunk()
          tokens = movedTokens
          weights = movedWeights
        }
        if tokens.count == TokenChunk.capacity { nextChunk() }
        tokens.append(token)
        weights.append(weight)
      }
    }
    if !tokens.isEmpty || chunks.isEmpty { nextChunk(isLast: true) }
    return (chunks, tokenCount)
  }

  /// ComfyUI `tokenize_with_weights` packing: each segment's tokens form a group; a group that
  /// does not fit in the current chunk moves whole to the next one (the current chunk gets the
  /// end token and padding) unless it has `comfyMaxWordLength` tokens or more, in which case it
  /// is split at the chunk boundary. Every chunk is 77 tokens.
  public static func comfyUI(
    _ segments: [PromptSegment], tokenizer: CLIPTokenizer, padToken: Int32
  ) -> [TokenChunk] {
    let start = CLIPVocabulary.startToken
    let end = CLIPVocabulary.endToken
    let limit = TokenChunk.length
    var chunks = [TokenChunk]()
    var tokens: [Int32] = [start]
    var weights: [Double] = [1]
    for segment in segments {
      guard case .text(let text, let weight) = segment else { continue }
      var group = tokenizer.encode(text)
      let isLarge = group.count >= comfyMaxWordLength
      while !group.isEmpty {
        if group.count + tokens.count > limit - 1 {
          let remaining = limit - tokens.count - 1
          if isLarge {
            tokens += group.prefix(remaining)
            weights += [Double](repeating: weight, count: remaining)
            tokens.append(end)
            weights.append(1)
            group.removeFirst(remaining)
          } else {
            tokens.append(end)
            weights.append(1)
            tokens += [Int32](repeating: padToken, count: remaining)
            weights += [Double](repeating: 1, count: remaining)
          }
          chunks.append(TokenChunk(tokens: tokens, weights: weights))
          tokens = [start]
          weights = [1]
        } else {
          tokens += group
          weights += [Double](repeating: weight, count: group.count)
          group = []
        }
      }
    }
    tokens.append(end)
    weights.append(1)
    let missing = limit - tokens.count
    tokens += [Int32](repeating: padToken, count: missing)
    weights += [Double](repeating: 1, count: missing)
    chunks.append(TokenChunk(tokens: tokens, weights: weights))
    return chunks
  }
}
