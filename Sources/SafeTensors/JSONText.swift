/// JSON text written by hand where the exact bytes matter (a safetensors header, A1111's infotext).
public enum JSONText {
  /// `text` as a JSON string literal, escaped as serde_json and Python's `json.dumps(…,
  /// ensure_ascii=False)` escape it: `"` `\` and control characters (`\n`, `\r`, `\t`, `\b`, `\f`,
  /// else `\u00xx`); everything else verbatim UTF-8.
  public static func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }
}
