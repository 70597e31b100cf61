import Foundation

/// How a CLIP tokenizer cleans text before splitting it into words. The three tokenizers found
/// in SDXL front ends differ only here; all share the vocabulary, the word regex and the BPE.
public enum CLIPTextCleaning: String, Sendable, CaseIterable {
  /// HF transformers' Python `CLIPTokenizer` (transformers ≤ 4.x) with `ftfy` installed:
  /// `whitespace_clean(ftfy.fix_text(text)).lower()`. What A1111 uses for CLIP-L, and ComfyUI and
  /// diffusers on transformers 4. The default. See `TextFixer` for the parts of ftfy covered.
  case ftfy
  /// open_clip's / openai CLIP's `SimpleTokenizer`: `ftfy.fix_text`, `html.unescape` twice,
  /// `whitespace_clean`, `lower()`. What A1111 uses for OpenCLIP-G.
  case openCLIP
  /// transformers ≥ 5 `CLIPTokenizer` (tokenizers backend): NFC, white-space runs to one space,
  /// per-character lowercase; no ftfy.
  case normalizeOnly
}

/// CLIP's byte-level BPE tokenizer (open_clip `SimpleTokenizer`, HF `CLIPTokenizer`).
///
/// Text is cleaned (`CLIPTextCleaning`), split with CLIP's pattern
/// `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// matched on Unicode scalars (never on Swift grapheme clusters), each word's UTF-8 bytes mapped
/// to byte symbols with `</w>` on the last one, and the lowest-ranked adjacent pair merged until
/// none is in the merge table.
///
/// Special tokens typed into a prompt follow each tokenizer: HF's (`.ftfy`, `.normalizeOnly`)
/// split out the exact strings `<|startoftext|>` and `<|endoftext|>` first; open_clip (2.x and
/// later, `.openCLIP`) knows them as `<start_of_text>` and `<end_of_text>` instead, matched by the
/// word pattern after lowercasing.
public struct CLIPTokenizer: Sendable {
  /// The vocabulary and merges.
  public let vocabulary: CLIPVocabulary
  /// The text clean-up applied before splitting.
  public let cleaning: CLIPTextCleaning

  /// A tokenizer over `vocabulary` with the given clean-up.
  public init(vocabulary: CLIPVocabulary, cleaning: CLIPTextCleaning = .ftfy) {
    self.vocabulary = vocabulary
    self.cleaning = cleaning
  }

  /// A tokenizer over the vocabulary shipped with the module (`CLIPVocabulary.bundled()`).
  public static func bundled(cleaning: CLIPTextCleaning = .ftfy) throws -> CLIPTokenizer {
    CLIPTokenizer(vocabulary: try CLIPVocabulary.bundled(), cleaning: cleaning)
  }

  /// The token ids of `text`, without start and end tokens and without truncation.
  public func encode(_ text: String) -> [Int32] {
    var ids = [Int32]()
    let scalars = Array(text.unicodeScalars)
    let pieces = cleaning == .openCLIP ? [.text(scalars)] : Self.splitSpecialTokens(scalars)
    for piece in pieces {
      switch piece {
      case .special(let id):
        ids.append(id)
      case .text(let scalars):
        for word in words(inCleaned: clean(scalars)) {
          ids += tokens(forWord: word)
        }
      }
    }
    return ids
  }

  /// The text after this tokenizer's clean-up (what the word pattern is applied to).
  public func cleaned(_ text: String) -> String {
    String(String.UnicodeScalarView(clean(Array(text.unicodeScalars))))
  }

  /// The token strings for `ids` joined, with `</w>` turned into spaces (for messages and tests).
  public func decode(_ ids: [Int32]) -> String {
    var bytes = [UInt8]()
    for id in ids where id >= 0 && Int(id) < vocabulary.count {
      let token = vocabulary.tokens[Int(id)]
      if id == CLIPVocabulary.startToken || id == CLIPVocabulary.endToken {
        bytes += Array(token.utf8)
        continue
      }
      for scalar in token.replacingOccurrences(of: "</w>", with: " ").unicodeScalars {
        if scalar == " " {
          bytes.append(0x20)
        } else if let byte = ByteLevel.byteOfSymbol[scalar] {
          bytes.append(byte)
        }
      }
    }
    return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
  }

  // MARK: - Steps

  enum Piece {
    case special(Int32)
    case text([Unicode.Scalar])
  }

  static let startText = Array("<|startoftext|>".unicodeScalars)
  static let endText = Array("<|endoftext|>".unicodeScalars)
  static let openCLIPStartText = Array("<start_of_text>".unicodeScalars)
  static let openCLIPEndText = Array("<end_of_text>".unicodeScalars)

  /// Splits out exact occurrences of the two special-token strings (case-sensitive).
  static func splitSpecialTokens(_ text: [Unicode.Scalar]) -> [Piece] {
    var pieces = [Piece]()
    var current = [Unicode.Scalar]()
    var index = 0
    while index < text.count {
      if text[index] == "<" {
        if hasPrefix(text, at: index, startText) {
          if !current.isEmpty { pieces.append(.text(current)) }
          current = []
          pieces.append(.special(CLIPVocabulary.startToken))
          index += startText.count
          continue
        }
        if hasPrefix(text, at: index, endText) {
          if !current.isEmpty { pieces.append(.text(current)) }
          current = []
          pieces.append(.special(CLIPVocabulary.endToken))
          index += endText.count
          continue
        }
      }
      current.append(text[index])
      index += 1
    }
    if !current.isEmpty { pieces.append(.text(current)) }
    return pieces
  }

  static func hasPrefix(_ text: [Unicode.Scalar], at index: Int, _ prefix: [Unicode.Scalar])
    -> Bool
  {
    guard index + prefix.count <= text.count else { return false }
    for offset in 0..<prefix.count where text[index + offset] != prefix[offset] { return false }
    return true
  }

  func clean(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    switch cleaning {
    case .ftfy:
      let fixed = Array(TextFixer.fixText(String(String.UnicodeScalarView(text))).unicodeScalars)
      return TextFixer.pythonLower(TextFixer.collapseWhitespace(fixed))
    case .openCLIP:
      let fixed = Array(TextFixer.fixText(String(String.UnicodeScalarView(text))).unicodeScalars)
      let unescaped = TextFixer.htmlUnescape(TextFixer.htmlUnescape(fixed))
      return TextFixer.pythonLower(TextFixer.collapseWhitespace(unescaped))
    case .normalizeOnly:
      var collapsed = [Unicode.Scalar]()
      var inSpace = false
      for scalar in TextFixer.nfc(text) {
        if scalar.properties.isWhitespace {
          if !inSpace { collapsed.append(" ") }
          inSpace = true
        } else {
          collapsed.append(scalar)
          inSpace = false
        }
      }
      return TextFixer.characterLower(collapsed)
    }
  }

  /// A word found by CLIP's pattern.
  enum Word: Equatable {
    case text([Unicode.Scalar])
    case special(Int32)
  }

  /// CLIP's word pattern applied to cleaned text (Python `regex.findall` semantics: at each
  /// position the alternatives are tried in order; white space is skipped).
  func words(inCleaned text: [Unicode.Scalar]) -> [Word] {
    var words = [Word]()
    var index = 0
    while index < text.count {
      let scalar = text[index]
      if scalar == "<", let (literal, id) = specialLiteral(text, at: index) {
        if cleaning == .normalizeOnly {
          // tokenizers' ByteLevel step splits this piece again with GPT-2's pattern.
          words.append(.text(Array(literal.prefix(2))))
          words.append(.text(Array(literal.dropFirst(2).dropLast(2))))
          words.append(.text(Array(literal.suffix(2))))
        } else {
          words.append(.special(id))
        }
        index += literal.count
        continue
      }
      if scalar == "'", let length = Self.contractionLength(text, at: index) {
        words.append(.text(Array(text[index..<(index + length)])))
        index += length
        continue
      }
      if Self.isLetter(scalar) {
        var end = index + 1
        while end < text.count && Self.isLetter(text[end]) { end += 1 }
        words.append(.text(Array(text[index..<end])))
        index = end
        continue
      }
      if Self.isNumber(scalar) {
        words.append(.text([scalar]))
        index += 1
        continue
      }
      if scalar.properties.isWhitespace {
        index += 1
        continue
      }
      var end = index + 1
      while end < text.count && !Self.isLetter(text[end]) && !Self.isNumber(text[end])
        && !text[end].properties.isWhitespace
      {
        end += 1
      }
      words.append(.text(Array(text[index..<end])))
      index = end
    }
    return words
  }

  /// The special-token alternative of the word pattern starting at `index`, if any.
  func specialLiteral(_ text: [Unicode.Scalar], at index: Int) -> ([Unicode.Scalar], Int32)? {
    let (start, end) =
      cleaning == .openCLIP
      ? (Self.openCLIPStartText, Self.openCLIPEndText)
      : (Self.startText, Self.endText)
    if Self.hasPrefix(text, at: index, start) { return (start, CLIPVocabulary.startToken) }
    if Self.hasPrefix(text, at: index, end) { return (end, CLIPVocabulary.endToken) }
    return nil
  }

  /// `'s|'t|'re|'ve|'m|'ll|'d` (case-insensitive) at `index`.
  static func contractionLength(_ text: [Unicode.Scalar], at index: Int) -> Int? {
    func letter(_ offset: Int) -> Unicode.Scalar? {
      guard index + offset < text.count else { return nil }
      let value = text[index + offset].value
      guard let scalar = Unicode.Scalar((0x41...0x5A).contains(value) ? value + 32 : value)
      else { return nil }
      return scalar
    }
    switch letter(1) {
    case "s", "t", "m", "d": return 2
    case "r": return letter(2) == "e" ? 3 : nil
    case "v": return letter(2) == "e" ? 3 : nil
    case "l": return letter(2) == "l" ? 3 : nil
    default: return nil
    }
  }

  static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
      return true
    default:
      return false
    }
  }

  static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
  }

  func tokens(forWord word: Word) -> [Int32] {
    switch word {
    case .special(let id):
      return [id]
    case .text(let scalars):
      return bytePairEncode(Array(String(String.UnicodeScalarView(scalars)).utf8))
    }
  }

  /// open_clip `SimpleTokenizer.bpe` on a word's UTF-8 bytes: repeatedly merge every
  /// non-overlapping occurrence, left to right, of the adjacent pair with the lowest rank.
  func bytePairEncode(_ bytes: [UInt8]) -> [Int32] {
    guard let last = bytes.last else { return [] }
    var symbols = bytes.dropLast().map { vocabulary.byteSymbols[Int($0)] }
    symbols.append(vocabulary.byteWordEndSymbols[Int(last)])
    var next = [Int32]()
    next.reserveCapacity(symbols.count)
    while symbols.count > 1 {
      var bestRank = Int32.max
      var bestLeft: Int32 = 0
      var bestRight: Int32 = 0
      var bestMerged: Int32 = 0
      for index in 0..<(symbols.count - 1) {
        if let merge = vocabulary.merges[CLIPVocabulary.key(symbols[index], symbols[index + 1])],
          merge.rank < bestRank
        {
          bestRank = merge.rank
          bestLeft = symbols[index]
          bestRight = symbols[index + 1]
          bestMerged = merge.merged
        }
      }
      if bestRank == .max { break }
      next.removeAll(keepingCapacity: true)
      var index = 0
      while index < symbols.count {
        if index + 1 < symbols.count && symbols[index] == bestLeft
          && symbols[index + 1] == bestRight
        {
          next.append(bestMerged)
          index += 2
        } else {
          next.append(symbols[index])
          index += 1
        }
      }
      swap(&symbols, &next)
    }
    return symbols
  }
}

extension ByteLevel {
  /// The byte each printable stand-in represents.
  static let byteOfSymbol: [Unicode.Scalar: UInt8] = {
    var table = [Unicode.Scalar: UInt8]()
    for byte in 0...255 {
      if let scalar = symbols[byte].unicodeScalars.first { table[scalar] = UInt8(byte) }
    }
    return table
  }()
}
