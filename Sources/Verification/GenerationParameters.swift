import Foundation
import SafeTensors

/// The generation parameters A1111 stores in a PNG's `parameters` text chunk ("infotext"), which
/// A1111's PNG Info tab, Civitai and most image browsers read.
///
/// The format is A1111's `processing.create_infotext`:
/// ```
/// <prompt>
/// Negative prompt: <negative>          (line left out when the negative prompt is empty)
/// Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 1024x1024, Model hash: abcdef1234, Model: name, Version: rouwei-ckpt 0.1
/// ```
/// with the parameters in A1111's order (Steps, Sampler, Schedule type, CFG scale, Seed, Size,
/// Model hash, Model, then extra entries, then Version), absent ones left out, and a value quoted
/// as a JSON string (non-ASCII kept) when it contains a comma, a colon or a newline
/// (`infotext_utils.quote`). The whole text is stripped of surrounding whitespace, as A1111 does.
public struct GenerationParameters: Sendable, Equatable {
  /// The positive prompt as typed (A1111 syntax, `BREAK` included).
  public var prompt: String
  /// The negative prompt ("" for none).
  public var negativePrompt: String
  /// Sampling steps.
  public var steps: Int
  /// A1111's sampler name: `Euler a`, `Euler`, `DPM++ 2M`, ….
  public var sampler: String
  /// A1111's schedule type (1.9+): `Automatic`, `Karras`, `Normal`, …; nil to leave it out.
  public var scheduleType: String?
  /// The CFG scale.
  public var cfgScale: Double
  /// The seed.
  public var seed: UInt64
  /// Image width and height in pixels.
  public var width: Int, height: Int
  /// A1111's model hash: the first 10 hex digits of the file's SHA-256 (AutoV2).
  public var modelHash: String?
  /// The model's name (A1111 uses the file name without extension).
  public var modelName: String?
  /// Further `key: value` entries, written after Model and before Version, in order.
  public var extra: [Entry]
  /// The program and version that made the image.
  public var version: String?

  /// One extra `key: value` entry.
  public struct Entry: Sendable, Equatable {
    /// The key (letters, digits, spaces, `-`, `/`, as A1111's parser expects).
    public var key: String
    /// The value (quoted on output when needed).
    public var value: String

    /// An entry.
    public init(_ key: String, _ value: String) {
      self.key = key
      self.value = value
    }
  }

  /// Parameters with the required fields; the optional ones start empty.
  public init(
    prompt: String, negativePrompt: String = "", steps: Int, sampler: String,
    scheduleType: String? = nil,
    cfgScale: Double, seed: UInt64, width: Int, height: Int, modelHash: String? = nil,
    modelName: String? = nil, extra: [Entry] = [], version: String? = nil
  ) {
    self.prompt = prompt
    self.negativePrompt = negativePrompt
    self.steps = steps
    self.sampler = sampler
    self.scheduleType = scheduleType
    self.cfgScale = cfgScale
    self.seed = seed
    self.width = width
    self.height = height
    self.modelHash = modelHash
    self.modelName = modelName
    self.extra = extra
    self.version = version
  }

  /// The `parameters` entries in A1111's order.
  public var entries: [Entry] {
    var result = [
      Entry("Steps", "\(steps)"), Entry("Sampler", sampler),
    ]
    if let scheduleType { result.append(Entry("Schedule type", scheduleType)) }
    result += [
      Entry("CFG scale", Self.number(cfgScale)), Entry("Seed", "\(seed)"),
      Entry("Size", "\(width)x\(height)"),
    ]
    if let modelHash { result.append(Entry("Model hash", modelHash)) }
    if let modelName { result.append(Entry("Model", modelName)) }
    result += extra
    if let version { result.append(Entry("Version", version)) }
    return result
  }

  /// The infotext, as A1111 writes it into the `parameters` chunk.
  public var infotext: String {
    let line = entries.map { "\($0.key): \(Self.quote($0.value))" }.joined(separator: ", ")
    let negative = negativePrompt.isEmpty ? "" : "\nNegative prompt: \(negativePrompt)"
    return "\(prompt)\(negative)\n\(line)".trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// The PNG text entry `parameters` holding `infotext`.
  public var pngText: PNGTextEntry { PNGTextEntry(keyword: "parameters", text: infotext) }

  /// 7 → "7", 5.5 → "5.5" (integral values without a fraction, as most infotexts show them).
  static func number(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
    return "\(value)"
  }

  /// A1111's `infotext_utils.quote`: the value itself, or `json.dumps(value, ensure_ascii=False)`
  /// when it holds a comma, a colon or a newline.
  static func quote(_ value: String) -> String {
    guard value.contains(",") || value.contains(":") || value.contains("\n") else { return value }
    return JSONText.quoted(value)
  }

  /// Reads an infotext back (A1111's `parse_generation_parameters`, for the fields above): the last
  /// line is the parameter line when it holds at least three `key: value` pairs; lines before it
  /// are the prompt, and from a line starting `Negative prompt:` on, the negative prompt. Returns
  /// nil when a required field (Steps, Sampler, CFG scale, Seed, Size) is missing or unreadable.
  public static func parse(_ text: String) -> GenerationParameters? {
    var lines = text.trimmingCharacters(in: .whitespacesAndNewlines).components(separatedBy: "\n")
    guard let last = lines.last else { return nil }
    let pairs = parsePairs(last)
    guard pairs.count >= 3 else { return nil }
    lines.removeLast()
    var prompt: [String] = []
    var negative: [String] = []
    var inNegative = false
    for line in lines {
      if !inNegative && line.hasPrefix("Negative prompt:") {
        inNegative = true
        negative.append(
          String(line.dropFirst("Negative prompt:".count)).trimmingCharacters(in: .whitespaces))
      } else if inNegative {
        negative.append(line)
      } else {
        prompt.append(line)
      }
    }
    var values: [String: String] = [:]
    var extra: [Entry] = []
    let known: Set<String> = [
      "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
      "Version",
    ]
    for pair in pairs {
      if known.contains(pair.key) { values[pair.key] = pair.value } else { extra.append(pair) }
    }
    let size = values["Size"]?.split(separator: "x").compactMap { Int($0) } ?? []
    guard let steps = values["Steps"].flatMap({ Int($0) }), let sampler = values["Sampler"],
      let cfg = values["CFG scale"].flatMap({ Double($0) }),
      let seed = values["Seed"].flatMap({ UInt64($0) }),
      size.count == 2
    else { return nil }
    return GenerationParameters(
      prompt: prompt.joined(separator: "\n"), negativePrompt: negative.joined(separator: "\n"),
      steps: steps,
      sampler: sampler, scheduleType: values["Schedule type"], cfgScale: cfg, seed: seed,
      width: size[0],
      height: size[1], modelHash: values["Model hash"], modelName: values["Model"], extra: extra,
      version: values["Version"])
  }

  /// `key: value` pairs of a parameter line; a value is a JSON string or runs to the next comma.
  static func parsePairs(_ line: String) -> [Entry] {
    var result: [Entry] = []
    var rest = Substring(line)
    while true {
      rest = rest.drop { $0 == " " }
      guard let colon = rest.firstIndex(of: ":") else { break }
      let key = rest[..<colon].trimmingCharacters(in: .whitespaces)
      guard !key.isEmpty, !key.contains(",") else { break }
      rest = rest[rest.index(after: colon)...].drop { $0 == " " }
      var value: String
      if rest.first == "\"", let (decoded, after) = decodeJSONString(rest) {
        value = decoded
        rest = after
        if rest.first == "," { rest = rest.dropFirst() }
      } else if let comma = rest.firstIndex(of: ",") {
        value = String(rest[..<comma])
        rest = rest[rest.index(after: comma)...]
      } else {
        value = String(rest)
        rest = ""
      }
      value = value.trimmingCharacters(in: .whitespaces)
      result.append(Entry(key, value))
      if rest.isEmpty { break }
    }
    return result
  }

  /// A JSON string literal at the start of `text` and what follows it.
  static func decodeJSONString(_ text: Substring) -> (String, Substring)? {
    var index = text.index(after: text.startIndex)
    var escaped = false
    while index < text.endIndex {
      let character = text[index]
      if escaped {
        escaped = false
      } else if character == "\\" {
        escaped = true
      } else if character == "\"" {
        let literal = String(text[text.startIndex...index])
        guard let data = literal.data(using: .utf8),
          let decoded = try? JSONDecoder().decode(String.self, from: data)
        else { return nil }
        return (decoded, text[text.index(after: index)...])
      }
      index = text.index(after: index)
    }
    return nil
  }
}
