import Foundation

/// A reimplementation of the parts of `ftfy.fix_text` (ftfy 6, default configuration) that apply to
/// prompts, plus Python's `html.unescape`, `str.lower` and CLIP's `whitespace_clean`.
///
/// Done, in ftfy's order and repeated until nothing changes: HTML entity decoding (skipped for the
/// rest of the text once a line contains `<`, ftfy's "auto"), C1 controls read as Windows-1252,
/// Latin ligatures split, half- and full-width forms folded, curly quotes straightened, line breaks
/// unified, ANSI terminal escapes and unwanted control characters removed, NFC.
///
/// Not done: ftfy's mojibake detection and repair (`fix_encoding`, e.g. `sÃ³` → `só`). ASCII and
/// correctly encoded Unicode prompts are unaffected by it. Named HTML entities are decoded from a
/// table of the common ones (`&amp;`, `&lt;`, `&quot;`, `&nbsp;`, typographic quotes and dashes,
/// arrows, …; see `namedEntities`); numeric references (`&#39;`, `&#x1F600;`) are decoded in full.
enum TextFixer {
  /// `ftfy.fix_text(text)` with the scope described above.
  static func fixText(_ text: String) -> String {
    let scalars = Array(text.unicodeScalars)
    var output = [Unicode.Scalar]()
    output.reserveCapacity(scalars.count)
    var unescape = true
    var position = 0
    // ftfy fixes line by line (each segment keeps its "\n"), at most 10^6 code points at a time.
    while position < scalars.count {
      var end = position
      while end < scalars.count && scalars[end] != "\n" { end += 1 }
      end = min(end < scalars.count ? end + 1 : end, position + 1_000_000)
      let segment = Array(scalars[position..<end])
      // "auto": once a segment looks like HTML, stop unescaping for it and all later segments.
      if segment.contains("<") { unescape = false }
      output += fixSegment(segment, unescapeHTML: unescape)
      position = end
    }
    return String(String.UnicodeScalarView(output))
  }

  /// One `fix_and_explain` pass set, repeated until the text stops changing.
  static func fixSegment(_ segment: [Unicode.Scalar], unescapeHTML: Bool) -> [Unicode.Scalar] {
    var text = segment
    // ftfy loops until a fixed point; each round either shrinks the text or ends it, the cap
    // only guards against a pathological cycle.
    for _ in 0..<64 {
      let original = text
      if unescapeHTML { text = unescapeEntities(text) }
      text = text.map(fixC1Control)
      text = splitLigatures(text)
      text = foldWidth(text)
      text = text.map(uncurlQuote)
      text = unifyLineBreaks(text)
      text = removeTerminalEscapes(text)
      text = text.filter { !isRemovedControl($0) }
      text = nfc(text)
      if text == original { break }
    }
    return text
  }

  // MARK: - ftfy fixers

  /// ftfy `unescape_html`: `&#?[0-9A-Za-z]{1,24};` replaced when it names an entity.
  static func unescapeEntities(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard text.contains("&") else { return text }
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    var index = 0
    while index < text.count {
      if text[index] == "&", let (length, replacement) = entity(in: text, at: index) {
        result += replacement
        index += length
      } else {
        result.append(text[index])
        index += 1
      }
    }
    return result
  }

  /// The entity starting at `start` (an `&`) and its replacement, ftfy's `_unescape_fixup`.
  private static func entity(in text: [Unicode.Scalar], at start: Int)
    -> (Int, [Unicode.Scalar])?
  {
    var body = start + 1
    let numeric = body < text.count && text[body] == "#"
    if numeric { body += 1 }
    var end = body
    while end < text.count && end - body <= 24 && isASCIIAlphanumeric(text[end]) { end += 1 }
    let count = end - body
    guard count >= 1, count <= 24, end < text.count, text[end] == ";" else { return nil }
    let name = String(String.UnicodeScalarView(text[body..<end]))
    let length = end + 1 - start
    if !numeric {
      if let value = namedEntities[name] { return (length, value) }
      return nil
    }
    // html.unescape on "&#…;": only a complete decimal or hexadecimal reference is used, anything
    // that would leave part of the text (and so a ";") behind is kept as it was.
    guard let value = numericReference(name) else { return nil }
    return (length, value)
  }

  /// Python `html.unescape` of `&#body;` when `body` is all decimal digits or `x` + hex digits.
  static func numericReference(_ body: String) -> [Unicode.Scalar]? {
    var digits = Substring(body)
    var radix = 10
    if let first = digits.first, first == "x" || first == "X" {
      radix = 16
      digits = digits.dropFirst()
    }
    guard !digits.isEmpty,
      digits.allSatisfy({ radix == 16 ? $0.isHexDigit && $0.isASCII : ("0"..."9").contains($0) })
    else { return nil }
    // Values past U+10FFFF all give U+FFFD; clamp before parsing so 24 digits cannot overflow.
    let trimmed = digits.drop(while: { $0 == "0" })
    let code: UInt32
    if trimmed.count > 7 {
      code = 0x11_0000
    } else {
      code = UInt32(trimmed.isEmpty ? "0" : String(trimmed), radix: radix) ?? 0x11_0000
    }
    return charReference(code)
  }

  /// html `_replace_charref` for a numeric value.
  static func charReference(_ code: UInt32) -> [Unicode.Scalar] {
    if let mapped = invalidCharReferences[code] { return [mapped] }
    if (0xD800...0xDFFF).contains(code) || code > 0x10_FFFF { return ["\u{FFFD}"] }
    if (0x1...0x8).contains(code) || (0xE...0x1F).contains(code) || (0x7F...0x9F).contains(code)
      || (0xFDD0...0xFDEF).contains(code) || code == 0xB || (code & 0xFFFE) == 0xFFFE
    {
      return []
    }
    return Unicode.Scalar(code).map { [$0] } ?? ["\u{FFFD}"]
  }

  /// ftfy `fix_c1_controls`: U+0080…U+009F decoded as (sloppy) Windows-1252.
  static func fixC1Control(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
    guard (0x80...0x9F).contains(scalar.value) else { return scalar }
    return Unicode.Scalar(windows1252High[Int(scalar.value - 0x80)]) ?? scalar
  }

  /// ftfy `fix_latin_ligatures`.
  static func splitLigatures(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard text.contains(where: { ligatures[$0.value] != nil }) else { return text }
    var result = [Unicode.Scalar]()
    for scalar in text {
      if let replacement = ligatures[scalar.value] {
        result += replacement.unicodeScalars
      } else {
        result.append(scalar)
      }
    }
    return result
  }

  /// ftfy `fix_character_width`: U+3000 → space, U+FF01…U+FFEF → their NFKC forms.
  static func foldWidth(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard text.contains(where: { $0.value == 0x3000 || (0xFF01...0xFFEF).contains($0.value) })
    else { return text }
    var result = [Unicode.Scalar]()
    for scalar in text {
      result += widthFolded(scalar)
    }
    return result
  }

  static func widthFolded(_ scalar: Unicode.Scalar) -> [Unicode.Scalar] {
    let value = scalar.value
    var mapped: [UInt32]
    switch value {
    case 0x3000: mapped = [0x20]
    case 0xFF01...0xFF5E: mapped = [value - 0xFEE0]
    case 0xFF5F: mapped = [0x2985]
    case 0xFF60: mapped = [0x2986]
    case 0xFF61...0xFF9F: mapped = [halfwidthKatakana[Int(value - 0xFF61)]]
    case 0xFFA0...0xFFDC: mapped = [halfwidthHangul[Int(value - 0xFFA0)]]
    case 0xFFE0...0xFFEE: mapped = fullwidthSigns[Int(value - 0xFFE0)]
    default: mapped = []
    }
    if mapped.isEmpty || mapped == [0] { return [scalar] }
    return mapped.compactMap(Unicode.Scalar.init)
  }

  /// ftfy `uncurl_quotes`.
  static func uncurlQuote(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
    switch scalar.value {
    case 0x2BC, 0x2018...0x201B: return "'"
    case 0x201C...0x201F: return "\""
    default: return scalar
    }
  }

  /// ftfy `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and U+0085 become LF.
  static func unifyLineBreaks(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    var index = 0
    while index < text.count {
      let scalar = text[index]
      if scalar == "\r" {
        result.append("\n")
        if index + 1 < text.count && text[index + 1] == "\n" { index += 1 }
      } else if scalar.value == 0x2028 || scalar.value == 0x2029 || scalar.value == 0x85 {
        result.append("\n")
      } else {
        result.append(scalar)
      }
      index += 1
    }
    return result
  }

  /// ftfy `remove_terminal_escapes`: `ESC [ [0-9;]* [A-Za-z]`.
  static func removeTerminalEscapes(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard text.contains("\u{1B}") else { return text }
    var result = [Unicode.Scalar]()
    var index = 0
    while index < text.count {
      if text[index] == "\u{1B}", index + 1 < text.count, text[index + 1] == "[" {
        var end = index + 2
        // `\d` in Python matches any Unicode decimal digit.
        while end < text.count
          && (text[end] == ";" || text[end].properties.numericType == .decimal)
        {
          end += 1
        }
        if end < text.count && isASCIILetter(text[end]) {
          index = end + 1
          continue
        }
      }
      result.append(text[index])
      index += 1
    }
    return result
  }

  /// ftfy `remove_control_chars`.
  static func isRemovedControl(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x00...0x08, 0x0B, 0x0E...0x1F, 0x7F, 0x206A...0x206F, 0xFEFF, 0xFFF9...0xFFFC:
      return true
    default:
      return false
    }
  }

  /// Unicode NFC (Foundation's, plus the algorithmic Hangul LV+T composition it skips).
  static func nfc(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    if text.allSatisfy({ $0.isASCII }) { return text }
    let composed = String(String.UnicodeScalarView(text)).precomposedStringWithCanonicalMapping
    return composeHangul(Array(composed.unicodeScalars))
  }

  /// Hangul syllable composition (Unicode §3.12): L+V → LV, LV+T → LVT.
  static func composeHangul(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    for scalar in text {
      let value = scalar.value
      if let last = result.last {
        let previous = last.value
        if (0x1100...0x1112).contains(previous) && (0x1161...0x1175).contains(value) {
          let syllable = 0xAC00 + ((previous - 0x1100) * 21 + (value - 0x1161)) * 28
          if let composed = Unicode.Scalar(syllable) {
            result[result.count - 1] = composed
            continue
          }
        }
        if (0xAC00...0xD7A3).contains(previous) && (previous - 0xAC00) % 28 == 0
          && (0x11A8...0x11C2).contains(value)
        {
          if let composed = Unicode.Scalar(previous + (value - 0x11A7)) {
            result[result.count - 1] = composed
            continue
          }
        }
      }
      result.append(scalar)
    }
    return result
  }

  // MARK: - Python string helpers

  /// Python `html.unescape` (used twice by open_clip's `basic_clean`) on the entity table above:
  /// numeric references with or without `;`, named ones with `;`, and the legacy names HTML
  /// allows without `;` (`&amp`, `&lt`, `&gt`, `&quot`, `&nbsp`, `&copy`, `&reg`).
  static func htmlUnescape(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard text.contains("&") else { return text }
    var result = [Unicode.Scalar]()
    var index = 0
    while index < text.count {
      guard text[index] == "&", index + 1 < text.count else {
        result.append(text[index])
        index += 1
        continue
      }
      if text[index + 1] == "#" {
        var cursor = index + 2
        var hex = false
        if cursor < text.count && (text[cursor] == "x" || text[cursor] == "X") {
          hex = true
          cursor += 1
        }
        let digitsStart = cursor
        while cursor < text.count
          && (hex ? isASCIIHexDigit(text[cursor]) : isASCIIDigit(text[cursor]))
        {
          cursor += 1
        }
        if cursor > digitsStart {
          let digits = String(String.UnicodeScalarView(text[digitsStart..<cursor]))
          let trimmed = digits.drop(while: { $0 == "0" })
          let code =
            trimmed.count > 7
            ? 0x11_0000
            : UInt32(trimmed.isEmpty ? "0" : String(trimmed), radix: hex ? 16 : 10)
              ?? 0x11_0000
          result += charReference(code)
          if cursor < text.count && text[cursor] == ";" { cursor += 1 }
          index = cursor
          continue
        }
        result.append(text[index])
        index += 1
        continue
      }
      // Named: `[^\t\n\f <&#;]{1,32};?`, the whole name if known, else its longest known legacy
      // prefix (HTML's no-semicolon names), else left alone.
      var cursor = index + 1
      while cursor < text.count && cursor - index - 1 < 32
        && !["\t", "\n", "\u{0C}", " ", "<", "&", "#", ";"].contains(text[cursor])
      {
        cursor += 1
      }
      let name = String(String.UnicodeScalarView(text[(index + 1)..<cursor]))
      if cursor < text.count && text[cursor] == ";", let value = namedEntities[name] {
        result += value
        index = cursor + 1
        continue
      }
      var matched = false
      for prefixLength in stride(from: name.unicodeScalars.count, through: 2, by: -1) {
        let prefix = String(String.UnicodeScalarView(name.unicodeScalars.prefix(prefixLength)))
        if let value = legacyEntities[prefix] {
          result += value
          index += 1 + prefixLength
          matched = true
          break
        }
      }
      if !matched {
        result.append(text[index])
        index += 1
      }
    }
    return result
  }

  /// CLIP `whitespace_clean`: runs of Unicode white space (regex `\s`) become one space, then
  /// Python `str.strip()`.
  static func collapseWhitespace(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    var inSpace = false
    for scalar in text {
      if scalar.properties.isWhitespace {
        if !inSpace { result.append(" ") }
        inSpace = true
      } else {
        result.append(scalar)
        inSpace = false
      }
    }
    let isPythonSpace = { (scalar: Unicode.Scalar) in
      scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }
    var start = 0
    var end = result.count
    while start < end && isPythonSpace(result[start]) { start += 1 }
    while end > start && isPythonSpace(result[end - 1]) { end -= 1 }
    return Array(result[start..<end])
  }

  /// Python `str.lower()`: full lowercase mappings, with the Final_Sigma rule for Σ.
  static func pythonLower(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    for (index, scalar) in text.enumerated() {
      if scalar.value == 0x3A3 {
        result.append(isFinalSigma(text, at: index) ? "\u{3C2}" : "\u{3C3}")
      } else if scalar.isASCII {
        result.append(
          (0x41...0x5A).contains(scalar.value)
            ? Unicode.Scalar(scalar.value + 32) ?? scalar
            : scalar)
      } else {
        result += scalar.properties.lowercaseMapping.unicodeScalars
      }
    }
    return result
  }

  /// Per-character lowercase without context (Rust `char::to_lowercase`, the tokenizers library).
  static func characterLower(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var result = [Unicode.Scalar]()
    result.reserveCapacity(text.count)
    for scalar in text {
      if scalar.isASCII {
        result.append(
          (0x41...0x5A).contains(scalar.value)
            ? Unicode.Scalar(scalar.value + 32) ?? scalar
            : scalar)
      } else {
        result += scalar.properties.lowercaseMapping.unicodeScalars
      }
    }
    return result
  }

  /// CPython `handle_capital_sigma`: cased letter before (skipping case-ignorables) and none after.
  private static func isFinalSigma(_ text: [Unicode.Scalar], at index: Int) -> Bool {
    var before = index - 1
    while before >= 0 && text[before].properties.isCaseIgnorable { before -= 1 }
    guard before >= 0 && text[before].properties.isCased else { return false }
    var after = index + 1
    while after < text.count && text[after].properties.isCaseIgnorable { after += 1 }
    return after == text.count || !text[after].properties.isCased
  }

  private static func isASCIIAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
    isASCIIDigit(scalar) || isASCIILetter(scalar)
  }

  private static func isASCIILetter(_ scalar: Unicode.Scalar) -> Bool {
    (0x41...0x5A).contains(scalar.value) || (0x61...0x7A).contains(scalar.value)
  }

  private static func isASCIIDigit(_ scalar: Unicode.Scalar) -> Bool {
    (0x30...0x39).contains(scalar.value)
  }

  private static func isASCIIHexDigit(_ scalar: Unicode.Scalar) -> Bool {
    isASCIIDigit(scalar) || (0x41...0x46).contains(scalar.value)
      || (0x61...0x66).contains(scalar.value)
  }

  // MARK: - Tables (from Python 3.11's unicodedata, html.entities and codecs; ftfy 6.3)

  /// Windows-1252 for bytes 0x80…0x9F; the five bytes it leaves undefined map to themselves.
  static let windows1252High: [UInt32] = [
    0x20AC, 0x81, 0x201A, 0x192, 0x201E, 0x2026, 0x2020, 0x2021, 0x2C6, 0x2030, 0x160, 0x2039,
    0x152, 0x8D, 0x17D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x2DC, 0x2122, 0x161, 0x203A, 0x153, 0x9D, 0x17E, 0x178,
  ]

  /// ftfy's `LIGATURES`.
  static let ligatures: [UInt32: String] = [
    0x132: "IJ", 0x133: "ij", 0x149: "\u{2BC}n", 0x1F1: "DZ", 0x1F2: "Dz", 0x1F3: "dz",
    0x1C4: "D\u{17D}", 0x1C5: "D\u{17E}", 0x1C6: "d\u{17E}", 0x1C7: "LJ", 0x1C8: "Lj",
    0x1C9: "lj", 0x1CA: "NJ", 0x1CB: "Nj", 0x1CC: "nj", 0xFB00: "ff", 0xFB01: "fi",
    0xFB02: "fl", 0xFB03: "ffi", 0xFB04: "ffl", 0xFB05: "\u{17F}t", 0xFB06: "st",
  ]

  /// NFKC of U+FF61…U+FF9F (half-width katakana and punctuation).
  static let halfwidthKatakana: [UInt32] = [
    0x3002, 0x300C, 0x300D, 0x3001, 0x30FB, 0x30F2, 0x30A1, 0x30A3, 0x30A5, 0x30A7, 0x30A9,
    0x30E3, 0x30E5, 0x30E7, 0x30C3, 0x30FC, 0x30A2, 0x30A4, 0x30A6, 0x30A8, 0x30AA, 0x30AB,
    0x30AD, 0x30AF, 0x30B1, 0x30B3, 0x30B5, 0x30B7, 0x30B9, 0x30BB, 0x30BD, 0x30BF, 0x30C1,
    0x30C4, 0x30C6, 0x30C8, 0x30CA, 0x30CB, 0x30CC, 0x30CD, 0x30CE, 0x30CF, 0x30D2, 0x30D5,
    0x30D8, 0x30DB, 0x30DE, 0x30DF, 0x30E0, 0x30E1, 0x30E2, 0x30E4, 0x30E6, 0x30E8, 0x30E9,
    0x30EA, 0x30EB, 0x30EC, 0x30ED, 0x30EF, 0x30F3, 0x3099, 0x309A,
  ]

  /// NFKC of U+FFA0…U+FFDC (half-width Hangul jamo); 0 where the code point is unassigned.
  static let halfwidthHangul: [UInt32] = [
    0x1160, 0x1100, 0x1101, 0x11AA, 0x1102, 0x11AC, 0x11AD, 0x1103, 0x1104, 0x1105, 0x11B0,
    0x11B1, 0x11B2, 0x11B3, 0x11B4, 0x11B5, 0x111A, 0x1106, 0x1107, 0x1108, 0x1121, 0x1109,
    0x110A, 0x110B, 0x110C, 0x110D, 0x110E, 0x110F, 0x1110, 0x1111, 0x1112, 0, 0, 0,
    0x1161, 0x1162, 0x1163, 0x1164, 0x1165, 0x1166, 0, 0, 0x1167, 0x1168, 0x1169, 0x116A,
    0x116B, 0x116C, 0, 0, 0x116D, 0x116E, 0x116F, 0x1170, 0x1171, 0x1172, 0, 0, 0x1173,
    0x1174, 0x1175,
  ]

  /// NFKC of U+FFE0…U+FFEE (full-width signs, half-width forms); empty where unassigned.
  static let fullwidthSigns: [[UInt32]] = [
    [0xA2], [0xA3], [0xAC], [0x20, 0x304], [0xA6], [0xA5], [0x20A9], [], [0x2502], [0x2190],
    [0x2191], [0x2192], [0x2193], [0x25A0], [0x25CB],
  ]

  /// html `_invalid_charrefs`.
  static let invalidCharReferences: [UInt32: Unicode.Scalar] = {
    var table: [UInt32: Unicode.Scalar] = [0x00: "\u{FFFD}", 0x0D: "\r"]
    for byte in 0x80...0x9F {
      if let scalar = Unicode.Scalar(windows1252High[byte - 0x80]) { table[UInt32(byte)] = scalar }
    }
    return table
  }()

  /// Named entities decoded, with ftfy's upper-case variants (`&AMP;`, `&NBSP;`, …).
  static let namedEntities: [String: [Unicode.Scalar]] = {
    let table: [String: UInt32] = [
      "amp": 0x26, "lt": 0x3C, "gt": 0x3E, "quot": 0x22, "apos": 0x27, "nbsp": 0xA0,
      "copy": 0xA9, "reg": 0xAE, "trade": 0x2122, "hellip": 0x2026, "mdash": 0x2014,
      "ndash": 0x2013, "lsquo": 0x2018, "rsquo": 0x2019, "sbquo": 0x201A, "ldquo": 0x201C,
      "rdquo": 0x201D, "bdquo": 0x201E, "laquo": 0xAB, "raquo": 0xBB, "lsaquo": 0x2039,
      "rsaquo": 0x203A, "middot": 0xB7, "bull": 0x2022, "times": 0xD7, "divide": 0xF7,
      "deg": 0xB0, "plusmn": 0xB1, "micro": 0xB5, "para": 0xB6, "sect": 0xA7, "cent": 0xA2,
      "pound": 0xA3, "yen": 0xA5, "euro": 0x20AC, "larr": 0x2190, "rarr": 0x2192,
      "uarr": 0x2191, "darr": 0x2193, "harr": 0x2194, "hearts": 0x2665, "spades": 0x2660,
      "clubs": 0x2663, "diams": 0x2666, "star": 0x2606, "starf": 0x2605, "iexcl": 0xA1,
      "iquest": 0xBF, "shy": 0xAD, "ensp": 0x2002, "emsp": 0x2003, "thinsp": 0x2009,
      "zwj": 0x200D, "zwnj": 0x200C, "frac12": 0xBD, "frac14": 0xBC, "frac34": 0xBE,
      "sup1": 0xB9, "sup2": 0xB2, "sup3": 0xB3, "prime": 0x2032, "Prime": 0x2033,
      "infin": 0x221E, "ne": 0x2260, "le": 0x2264, "ge": 0x2265, "minus": 0x2212,
    ]
    var entities = [String: [Unicode.Scalar]]()
    for (name, code) in table {
      guard let scalar = Unicode.Scalar(code) else { continue }
      entities[name] = [scalar]
      // ftfy adds the all-caps spelling of lower-case names HTML5 does not define itself, mapped
      // to the upper-cased character; for the names above HTML5's own all-caps ones agree.
      if name == name.lowercased() {
        entities[name.uppercased()] = Array(String(scalar).uppercased().unicodeScalars)
      }
    }
    return entities
  }()

  /// HTML's legacy names that `html.unescape` also accepts without `;` (the subset above).
  static let legacyEntities: [String: [Unicode.Scalar]] = [
    "amp": ["&"], "AMP": ["&"], "lt": ["<"], "LT": ["<"], "gt": [">"], "GT": [">"],
    "quot": ["\""], "QUOT": ["\""], "nbsp": ["\u{A0}"], "copy": ["\u{A9}"], "COPY": ["\u{A9}"],
    "reg": ["\u{AE}"], "REG": ["\u{AE}"],
  ]
}
