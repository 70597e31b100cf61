/// A strict parser for safetensors header JSON.
///
/// Foundation's JSON reader silently keeps the last of duplicate keys, turns large integers into
/// doubles and accepts any nesting depth, so the header gets its own parser. It reads exactly the
/// schema: one object whose values are tensor entries `{dtype, shape, data_offsets}` or the
/// `__metadata__` string map; integers are exact `UInt64`; anything else is a typed error.
struct HeaderParser {
  let bytes: UnsafeRawBufferPointer
  let file: String
  var position = 0

  init(bytes: UnsafeRawBufferPointer, file: String) {
    self.bytes = bytes
    self.file = file
  }

  mutating func parseHeader() throws -> ([RawTensorEntry], [String: String]?) {
    try checkUTF8()
    skipWhitespace()
    guard peek() == UInt8(ascii: "{") else {
      throw jsonError(peek() == nil ? "the header is empty" : "the header must be a JSON object")
    }
    position += 1
    var entries: [RawTensorEntry] = []
    var seen = Set<String>()
    var metadata: [String: String]?
    try parseMembers { parser, key in
      guard seen.insert(key).inserted else {
        throw SafeTensorsError.duplicateKey(file: parser.file, key: key)
      }
      if key == "__metadata__" {
        metadata = try parser.parseMetadata()
      } else {
        guard !key.isEmpty else {
          throw SafeTensorsError.invalidHeader(file: parser.file, tensor: nil, reason: "a tensor has an empty name")
        }
        entries.append(try parser.parseTensor(named: key))
      }
    }
    skipWhitespace()
    guard position == bytes.count else {
      throw jsonError("unexpected bytes after the header object (only whitespace may pad it)")
    }
    return (entries, metadata)
  }

  // MARK: - Schema

  private mutating func parseTensor(named name: String) throws -> RawTensorEntry {
    guard peek() == UInt8(ascii: "{") else {
      throw SafeTensorsError.invalidHeader(file: file, tensor: name, reason: "entry is not a JSON object")
    }
    position += 1
    var dtype: DType?
    var shape: [UInt64]?
    var offsets: [UInt64]?
    var seen = Set<String>()
    try parseMembers { parser, field in
      guard seen.insert(field).inserted else {
        throw SafeTensorsError.duplicateKey(file: parser.file, key: "\(name).\(field)")
      }
      switch field {
      case "dtype":
        guard parser.peek() == UInt8(ascii: "\"") else {
          throw SafeTensorsError.invalidHeader(file: parser.file, tensor: name, reason: "dtype is not a string")
        }
        let text = try parser.parseString()
        guard let value = DType(rawValue: text) else {
          throw SafeTensorsError.unknownDType(file: parser.file, tensor: name, dtype: text)
        }
        dtype = value
      case "shape":
        shape = try parser.parseIntegerArray(tensor: name, field: field)
      case "data_offsets":
        offsets = try parser.parseIntegerArray(tensor: name, field: field)
      default:
        throw SafeTensorsError.invalidHeader(
          file: parser.file, tensor: name, reason: "unexpected field '\(SafeTensorsError.printable(field))'")
      }
    }
    guard let dtype else { throw missing("dtype", name) }
    guard let shape else { throw missing("shape", name) }
    guard let offsets else { throw missing("data_offsets", name) }
    guard offsets.count == 2 else {
      throw SafeTensorsError.invalidHeader(
        file: file, tensor: name, reason: "data_offsets must hold 2 numbers, not \(offsets.count)")
    }
    return RawTensorEntry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
  }

  private func missing(_ field: String, _ name: String) -> SafeTensorsError {
    .invalidHeader(file: file, tensor: name, reason: "missing '\(field)'")
  }

  private mutating func parseMetadata() throws -> [String: String] {
    guard peek() == UInt8(ascii: "{") else {
      throw SafeTensorsError.invalidHeader(file: file, tensor: nil, reason: "__metadata__ is not an object of strings")
    }
    position += 1
    var result: [String: String] = [:]
    try parseMembers { parser, key in
      guard result[key] == nil else {
        throw SafeTensorsError.duplicateKey(file: parser.file, key: "__metadata__.\(key)")
      }
      guard parser.peek() == UInt8(ascii: "\"") else {
        throw SafeTensorsError.invalidHeader(
          file: parser.file, tensor: nil,
          reason: "__metadata__ value for '\(SafeTensorsError.printable(key))' is not a string")
      }
      result[key] = try parser.parseString()
    }
    return result
  }

  private mutating func parseIntegerArray(tensor: String, field: String) throws -> [UInt64] {
    guard peek() == UInt8(ascii: "[") else {
      throw SafeTensorsError.invalidHeader(file: file, tensor: tensor, reason: "\(field) is not an array")
    }
    position += 1
    var values: [UInt64] = []
    skipWhitespace()
    if peek() == UInt8(ascii: "]") {
      position += 1
      return values
    }
    while true {
      skipWhitespace()
      values.append(try parseUnsignedInteger(tensor: tensor, field: field))
      // No real tensor has more than a handful of dimensions; this bounds hostile arrays.
      guard values.count <= 64 else {
        throw SafeTensorsError.invalidHeader(file: file, tensor: tensor, reason: "\(field) has more than 64 entries")
      }
      skipWhitespace()
      switch peek() {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "]"):
        position += 1
        return values
      default: throw jsonError("expected ',' or ']' in \(field) of '\(SafeTensorsError.printable(tensor))'")
      }
    }
  }

  private mutating func parseUnsignedInteger(tensor: String, field: String) throws -> UInt64 {
    let start = position
    guard let first = peek(), first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
      throw SafeTensorsError.invalidHeader(
        file: file, tensor: tensor, reason: "\(field) holds a value that is not a non-negative integer")
    }
    var value: UInt64 = 0
    while let digit = peek(), digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") {
      let (times10, o1) = value.multipliedReportingOverflow(by: 10)
      let (sum, o2) = times10.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
      guard !o1, !o2 else {
        throw SafeTensorsError.invalidHeader(
          file: file, tensor: tensor, reason: "\(field) holds a number of 2^64 or more")
      }
      value = sum
      position += 1
    }
    if first == UInt8(ascii: "0") && position - start > 1 {
      throw jsonError("number with a leading zero")
    }
    if let next = peek(), next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
      throw SafeTensorsError.invalidHeader(
        file: file, tensor: tensor, reason: "\(field) holds a value that is not a non-negative integer")
    }
    return value
  }

  // MARK: - JSON lexing

  /// Parses `"key": value` members up to the closing brace; the opening brace is already consumed.
  private mutating func parseMembers(_ member: (inout HeaderParser, String) throws -> Void) throws {
    skipWhitespace()
    if peek() == UInt8(ascii: "}") {
      position += 1
      return
    }
    while true {
      skipWhitespace()
      guard peek() == UInt8(ascii: "\"") else { throw jsonError("expected a string key") }
      let key = try parseString()
      skipWhitespace()
      guard peek() == UInt8(ascii: ":") else { throw jsonError("expected ':' after key") }
      position += 1
      skipWhitespace()
      try member(&self, key)
      skipWhitespace()
      switch peek() {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "}"):
        position += 1
        return
      default: throw jsonError("expected ',' or '}'")
      }
    }
  }

  mutating func parseString() throws -> String {
    position += 1  // opening quote
    var runStart = position
    var result = ""
    func flushRun(_ parser: HeaderParser, to result: inout String, until end: Int) {
      if end > runStart {
        result += String(decoding: UnsafeRawBufferPointer(rebasing: parser.bytes[runStart..<end]), as: UTF8.self)
      }
    }
    while true {
      guard let byte = peek() else { throw jsonError("unterminated string") }
      if byte == UInt8(ascii: "\"") {
        flushRun(self, to: &result, until: position)
        position += 1
        return result
      }
      if byte < 0x20 { throw jsonError("control character in a string") }
      if byte == UInt8(ascii: "\\") {
        flushRun(self, to: &result, until: position)
        position += 1
        guard let escape = peek() else { throw jsonError("unterminated escape") }
        position += 1
        switch escape {
        case UInt8(ascii: "\""): result += "\""
        case UInt8(ascii: "\\"): result += "\\"
        case UInt8(ascii: "/"): result += "/"
        case UInt8(ascii: "b"): result += "\u{08}"
        case UInt8(ascii: "f"): result += "\u{0C}"
        case UInt8(ascii: "n"): result += "\n"
        case UInt8(ascii: "r"): result += "\r"
        case UInt8(ascii: "t"): result += "\t"
        case UInt8(ascii: "u"):
          var code = try parseHex4()
          if (0xD800...0xDBFF).contains(code) {
            guard peek() == UInt8(ascii: "\\"), position + 1 < bytes.count,
              bytes[position + 1] == UInt8(ascii: "u")
            else { throw jsonError("unpaired surrogate in \\u escape") }
            position += 2
            let low = try parseHex4()
            guard (0xDC00...0xDFFF).contains(low) else { throw jsonError("unpaired surrogate in \\u escape") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          } else if (0xDC00...0xDFFF).contains(code) {
            throw jsonError("unpaired surrogate in \\u escape")
          }
          guard let scalar = Unicode.Scalar(code) else { throw jsonError("invalid \\u escape") }
          result.unicodeScalars.append(scalar)
        default: throw jsonError("invalid escape character")
        }
        runStart = position
        continue
      }
      position += 1
    }
  }

  private mutating func parseHex4() throws -> UInt32 {
    guard position + 4 <= bytes.count else { throw jsonError("truncated \\u escape") }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let byte = bytes[position]
      let digit: UInt32
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
      default: throw jsonError("invalid hex digit in \\u escape")
      }
      value = value << 4 | digit
      position += 1
    }
    return value
  }

  private func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

  private mutating func skipWhitespace() {
    while let byte = peek(),
      byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    {
      position += 1
    }
  }

  private func jsonError(_ reason: String) -> SafeTensorsError {
    .invalidJSON(file: file, byteOffset: position, reason: reason)
  }

  /// Rejects invalid UTF-8 before parsing, so strings can be decoded without replacement characters.
  private func checkUTF8() throws {
    var index = 0
    let count = bytes.count
    while index < count {
      let lead = bytes[index]
      if lead < 0x80 {
        index += 1
        continue
      }
      let length: Int
      let minimum: UInt32
      switch lead {
      case 0xC2...0xDF: length = 2; minimum = 0x80
      case 0xE0...0xEF: length = 3; minimum = 0x800
      case 0xF0...0xF4: length = 4; minimum = 0x10000
      default: throw SafeTensorsError.headerNotUTF8(file: file, byteOffset: index)
      }
      guard index + length <= count else { throw SafeTensorsError.headerNotUTF8(file: file, byteOffset: index) }
      var code = UInt32(lead) & (0xFF >> (length + 1))
      for k in 1..<length {
        let byte = bytes[index + k]
        guard byte & 0xC0 == 0x80 else { throw SafeTensorsError.headerNotUTF8(file: file, byteOffset: index) }
        code = code << 6 | UInt32(byte & 0x3F)
      }
      guard code >= minimum, code <= 0x10FFFF, !(0xD800...0xDFFF).contains(code) else {
        throw SafeTensorsError.headerNotUTF8(file: file, byteOffset: index)
      }
      index += length
    }
  }
}
