// Pure Swift (standard library only) so that Fuzz/ can compile this file on its own.

/// Which front end's prompt-weight syntax to read.
public enum PromptSyntax: String, Sendable, CaseIterable {
  /// AUTOMATIC1111 (`modules/prompt_parser.py` `parse_prompt_attention`): `(x)` ×1.1, `[x]` ÷1.1,
  /// `(x:w)` multiplies by w (so nesting multiplies), escapes `\(` `\)` `\[` `\]` `\\`, `BREAK`.
  case a1111
  /// ComfyUI (`comfy/sd1_clip.py` `token_weights`): `(x)` ×1.1, `(x:w)` *sets* w, `[` `]` are
  /// plain text, escapes `\(` `\)` only, no `BREAK`.
  case comfyUI
}

/// A run of prompt text with its attention weight, or an A1111 `BREAK`.
public enum PromptSegment: Equatable, Sendable, CustomStringConvertible {
  /// Text to tokenize, every token of which gets `weight`.
  case text(String, weight: Double)
  /// Close the current 75-token chunk and start a new one.
  case chunkBreak

  /// `[text, weight]` as A1111 prints it, or `BREAK`.
  public var description: String {
    switch self {
    case .text(let text, let weight): return "[\(text.debugDescription), \(weight)]"
    case .chunkBreak: return "BREAK"
    }
  }
}

/// Prompt-weight parsing as A1111 and ComfyUI do it. Total: every string parses, nothing traps,
/// and the work is bounded by the prompt length (quadratic at worst, like the Python originals).
public enum PromptParser {
  /// Parses `prompt` with the given syntax.
  public static func parse(_ prompt: String, syntax: PromptSyntax) -> [PromptSegment] {
    switch syntax {
    case .a1111: return parseA1111(prompt)
    case .comfyUI: return parseComfyUI(prompt)
    }
  }

  // MARK: - A1111

  /// A1111 `parse_prompt_attention`, including its quirks: a lone `\` is dropped, unclosed
  /// brackets apply to everything after them, runs of equal weight are merged (two adjacent
  /// `BREAK`s therefore become the text `BREAKBREAK`, and a `BREAK` inside brackets is scaled into
  /// plain text), an empty prompt gives `[("", 1.0)]`.
  ///
  /// One deliberate difference: where A1111 raises on a weight that is not a number
  /// (`(x:1.2.3)`, `(x:.)`), the match is kept as plain text here.
  public static func parseA1111(_ prompt: String) -> [PromptSegment] {
    let text = Array(prompt.unicodeScalars)
    var result = [(text: [Unicode.Scalar], weight: Double)]()
    var roundBrackets = [Int]()
    var squareBrackets = [Int]()
    let breakWeight = -1.0
    func multiplyRange(from start: Int, by multiplier: Double) {
      for index in start..<result.count { result[index].weight *= multiplier }
    }
    func appendPlain(_ run: ArraySlice<Unicode.Scalar>) {
      let parts = splitOnBreak(Array(run))
      for (index, part) in parts.enumerated() {
        if index > 0 { result.append((Array("BREAK".unicodeScalars), breakWeight)) }
        result.append((part, 1.0))
      }
    }
    var index = 0
    while index < text.count {
      let scalar = text[index]
      if scalar == "\\" {
        // \( \) \[ \] \\ keep the second character; a lone backslash keeps nothing.
        if index + 1 < text.count, ["(", ")", "[", "]", "\\"].contains(text[index + 1]) {
          result.append(([text[index + 1]], 1.0))
          index += 2
        } else {
          result.append(([], 1.0))
          index += 1
        }
        continue
      }
      switch scalar {
      case "(":
        roundBrackets.append(result.count)
        index += 1
      case "[":
        squareBrackets.append(result.count)
        index += 1
      case ":":
        if let (length, weight) = weightSuffix(text, at: index) {
          if !roundBrackets.isEmpty, let weight {
            multiplyRange(from: roundBrackets.removeLast(), by: weight)
          } else {
            // No open bracket (A1111: plain text), or a number A1111 would raise on.
            appendPlain(text[index..<(index + length)])
          }
          index += length
        } else {
          appendPlain(text[index..<(index + 1)])
          index += 1
        }
      case ")":
        if let open = roundBrackets.popLast() {
          multiplyRange(from: open, by: 1.1)
        } else {
          appendPlain(text[index..<(index + 1)])
        }
        index += 1
      case "]":
        if let open = squareBrackets.popLast() {
          multiplyRange(from: open, by: 1 / 1.1)
        } else {
          appendPlain(text[index..<(index + 1)])
        }
        index += 1
      default:
        var end = index + 1
        while end < text.count && !["\\", "(", ")", "[", "]", ":"].contains(text[end]) { end += 1 }
        appendPlain(text[index..<end])
        index = end
      }
    }
    for open in roundBrackets { multiplyRange(from: open, by: 1.1) }
    for open in squareBrackets { multiplyRange(from: open, by: 1 / 1.1) }
    if result.isEmpty { result = [([], 1.0)] }
    // Merge runs of identical weights (exact comparison, as Python's ==).
    var merged = [(text: [Unicode.Scalar], weight: Double)]()
    for item in result {
      if let last = merged.last, last.weight == item.weight {
        merged[merged.count - 1].text += item.text
      } else {
        merged.append(item)
      }
    }
    let breakText = Array("BREAK".unicodeScalars)
    return merged.map { item in
      if item.weight == breakWeight && item.text == breakText { return .chunkBreak }
      return .text(String(String.UnicodeScalarView(item.text)), weight: item.weight)
    }
  }

  /// `:\s*([+-]?[.\d]+)\s*\)` at `index` (a `:`): the match length and the number (nil when the
  /// digits and dots do not form a float).
  static func weightSuffix(_ text: [Unicode.Scalar], at index: Int) -> (Int, Double?)? {
    var cursor = index + 1
    while cursor < text.count && isPythonReSpace(text[cursor]) { cursor += 1 }
    let numberStart = cursor
    if cursor < text.count && (text[cursor] == "+" || text[cursor] == "-") { cursor += 1 }
    let digitsStart = cursor
    while cursor < text.count && (text[cursor] == "." || isDecimalDigit(text[cursor])) {
      cursor += 1
    }
    guard cursor > digitsStart else { return nil }
    let numberEnd = cursor
    while cursor < text.count && isPythonReSpace(text[cursor]) { cursor += 1 }
    guard cursor < text.count && text[cursor] == ")" else { return nil }
    let number = pythonFloat(text[numberStart..<numberEnd])
    return (cursor + 1 - index, number)
  }

  /// `re.split(r"\s*\bBREAK\b\s*", run)`.
  static func splitOnBreak(_ run: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    let word: [Unicode.Scalar] = ["B", "R", "E", "A", "K"]
    var parts = [[Unicode.Scalar]]()
    var partStart = 0
    var index = 0
    while index + word.count <= run.count {
      guard run[index] == "B", Array(run[index..<(index + word.count)]) == word,
        index == 0 || !isWordCharacter(run[index - 1]),
        index + word.count == run.count || !isWordCharacter(run[index + word.count])
      else {
        index += 1
        continue
      }
      var matchStart = index
      while matchStart > partStart && isPythonReSpace(run[matchStart - 1]) { matchStart -= 1 }
      var matchEnd = index + word.count
      while matchEnd < run.count && isPythonReSpace(run[matchEnd]) { matchEnd += 1 }
      parts.append(Array(run[partStart..<matchStart]))
      partStart = matchEnd
      index = matchEnd
    }
    parts.append(Array(run[partStart...]))
    return parts
  }

  // MARK: - ComfyUI

  /// ComfyUI `escape_important` → `token_weights(text, 1.0)` → `unescape_important`, with the
  /// segments split again where ComfyUI starts a new `embedding:` word (` embedding:` or
  /// `\nembedding:`; each piece is its own token group). Textual-inversion embeddings are not
  /// looked up: `embedding:name` is tokenized as text.
  public static func parseComfyUI(_ prompt: String) -> [PromptSegment] {
    let escaped = replace(
      replace(Array(prompt.unicodeScalars), ["\\", ")"], with: ["\0", "\u{1}"]),
      ["\\", "("], with: ["\0", "\u{2}"])
    var segments = [PromptSegment]()
    for (text, weight) in tokenWeights(escaped, weight: 1.0) {
      let unescaped = replace(
        replace(text, ["\0", "\u{1}"], with: [")"]), ["\0", "\u{2}"], with: ["("])
      for piece in splitEmbeddingWords(unescaped) where !piece.isEmpty {
        segments.append(.text(String(String.UnicodeScalarView(piece)), weight: weight))
      }
    }
    return segments
  }

  /// The (text, weight) pairs of one prompt, with an empty text kept as ComfyUI keeps it.
  static func tokenWeights(_ text: [Unicode.Scalar], weight: Double) -> [([Unicode.Scalar], Double)] {
    // token_weights is recursive in Python; an explicit stack keeps deep nesting off the call
    // stack.
    var output = [([Unicode.Scalar], Double)]()
    var stack: [(items: [[Unicode.Scalar]], next: Int, weight: Double)] = [
      (parseParentheses(text), 0, weight)
    ]
    while let top = stack.last {
      if top.next == top.items.count {
        stack.removeLast()
        continue
      }
      stack[stack.count - 1].next += 1
      var item = top.items[top.next]
      if item.count >= 2 && item.first == "(" && item.last == ")" {
        item = Array(item[1..<(item.count - 1)])
        var inner = top.weight * 1.1
        if let colon = item.lastIndex(of: ":"), colon > 0,
          let value = pythonFloat(item[(colon + 1)...])
        {
          inner = value
          item = Array(item[..<colon])
        }
        stack.append((parseParentheses(item), 0, inner))
      } else {
        output.append((item, top.weight))
      }
    }
    return output
  }

  /// ComfyUI `parse_parentheses`, character for character (a stray `)` makes the nesting level
  /// negative, as in Python).
  static func parseParentheses(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    var result = [[Unicode.Scalar]]()
    var current = [Unicode.Scalar]()
    var level = 0
    for scalar in text {
      if scalar == "(" {
        if level == 0 {
          if !current.isEmpty { result.append(current) }
          current = ["("]
        } else {
          current.append(scalar)
        }
        level += 1
      } else if scalar == ")" {
        level -= 1
        if level == 0 {
          result.append(current + [")"])
          current = []
        } else {
          current.append(scalar)
        }
      } else {
        current.append(scalar)
      }
    }
    if !current.isEmpty { result.append(current) }
    return result
  }

  /// `re.split(' embedding:|\nembedding:', text)` with `embedding:` put back on every piece but
  /// the first.
  static func splitEmbeddingWords(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    let identifier = Array("embedding:".unicodeScalars)
    var pieces = [[Unicode.Scalar]]()
    var current = [Unicode.Scalar]()
    var index = 0
    while index < text.count {
      if text[index] == " " || text[index] == "\n", index + 1 + identifier.count <= text.count,
        Array(text[(index + 1)..<(index + 1 + identifier.count)]) == identifier
      {
        pieces.append(current)
        current = identifier
        index += 1 + identifier.count
        continue
      }
      current.append(text[index])
      index += 1
    }
    pieces.append(current)
    return pieces
  }

  // MARK: - Python helpers

  /// Python `str.replace` on scalars (left to right, non-overlapping).
  static func replace(
    _ text: [Unicode.Scalar], _ target: [Unicode.Scalar],
    with replacement: [Unicode.Scalar]
  ) -> [Unicode.Scalar] {
    guard !target.isEmpty, text.count >= target.count else { return text }
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    var index = 0
    while index < text.count {
      if index + target.count <= text.count && text[index] == target[0]
        && Array(text[index..<(index + target.count)]) == target
      {
        result += replacement
        index += target.count
      } else {
        result.append(text[index])
        index += 1
      }
    }
    return result
  }

  /// Python `float(text)`: surrounding white space, sign, `inf`/`infinity`/`nan` in any case,
  /// digits of any script, `_` between digits, a fraction and an exponent. Nil where Python raises.
  public static func pythonFloat<S: Collection>(_ text: S) -> Double?
  where S.Element == Unicode.Scalar {
    var scalars = Array(text)
    while let first = scalars.first, isPythonSpace(first) { scalars.removeFirst() }
    while let last = scalars.last, isPythonSpace(last) { scalars.removeLast() }
    var negative = false
    if let first = scalars.first, first == "+" || first == "-" {
      negative = first == "-"
      scalars.removeFirst()
    }
    let lowered = String(String.UnicodeScalarView(scalars)).lowercased()
    if lowered == "inf" || lowered == "infinity" { return negative ? -.infinity : .infinity }
    if lowered == "nan" { return .nan }
    // digitpart ("." digitpart?)? exponent? | "." digitpart exponent?
    var index = 0
    func digitPart() -> String? {
      guard index < scalars.count, let first = decimalValue(scalars[index]) else { return nil }
      var digits = String(first)
      index += 1
      while index < scalars.count {
        if let digit = decimalValue(scalars[index]) {
          digits += String(digit)
          index += 1
        } else if scalars[index] == "_", index + 1 < scalars.count,
          decimalValue(scalars[index + 1]) != nil
        {
          index += 1
        } else {
          break
        }
      }
      return digits
    }
    let integer = digitPart()
    var fraction: String?
    if index < scalars.count && scalars[index] == "." {
      index += 1
      fraction = digitPart()
    }
    guard integer != nil || fraction != nil else { return nil }
    var exponent = "0"
    if index < scalars.count && (scalars[index] == "e" || scalars[index] == "E") {
      index += 1
      var sign = ""
      if index < scalars.count && (scalars[index] == "+" || scalars[index] == "-") {
        sign = scalars[index] == "-" ? "-" : ""
        index += 1
      }
      guard let digits = digitPart() else { return nil }
      exponent = sign + digits
    }
    guard index == scalars.count else { return nil }
    let canonical =
      (negative ? "-" : "") + (integer ?? "0") + "." + (fraction ?? "0") + "e"
      + exponent
    return Double(canonical)
  }

  static func decimalValue(_ scalar: Unicode.Scalar) -> Int? {
    if (0x30...0x39).contains(scalar.value) { return Int(scalar.value - 0x30) }
    guard scalar.properties.numericType == .decimal, let value = scalar.properties.numericValue,
      value >= 0, value <= 9
    else { return nil }
    return Int(value)
  }

  static func isDecimalDigit(_ scalar: Unicode.Scalar) -> Bool { decimalValue(scalar) != nil }

  /// `\s` of Python's `re` module on str patterns (`str.isspace()`).
  static func isPythonReSpace(_ scalar: Unicode.Scalar) -> Bool { isPythonSpace(scalar) }

  /// Python `str.isspace()`: Unicode White_Space plus the four information separators.
  static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
  }

  /// `\w` of Python's `re` module: letters, numbers and `_`.
  static func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
    if scalar == "_" { return true }
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
      .decimalNumber, .letterNumber, .otherNumber:
      return true
    default:
      return false
    }
  }
}
