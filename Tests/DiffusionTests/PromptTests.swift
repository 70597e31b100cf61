import Foundation
import Testing

@testable import Diffusion

@Suite struct PromptParserTests {
  static let golden = (try? Goldens.json("prompts.json")) ?? [:]

  /// `[text, weight]` pairs (A1111's BREAK as `["BREAK", -1]`) from a golden list.
  static func pairs(_ list: [Any]) -> [PromptSegment] {
    list.compactMap { item in
      guard let pair = item as? [Any], pair.count == 2, let text = pair[0] as? String,
        let weight = goldenDouble(pair[1])
      else { return nil }
      return text == "BREAK" && weight == -1 ? .chunkBreak : .text(text, weight: weight)
    }
  }

  /// Equality with NaN weights equal to each other (Python's float("nan") from ComfyUI syntax).
  static func same(_ a: [PromptSegment], _ b: [PromptSegment]) -> Bool {
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) {
      switch (x, y) {
      case (.chunkBreak, .chunkBreak): continue
      case (.text(let t1, let w1), .text(let t2, let w2)):
        if t1 != t2 || !(w1 == w2 || (w1.isNaN && w2.isNaN)) { return false }
      default: return false
      }
    }
    return true
  }

  @Test func a1111DocstringExamples() {
    // From the docstring of A1111's parse_prompt_attention.
    #expect(
      PromptParser.parseA1111("an (important) word") == [
        .text("an ", weight: 1.0), .text("important", weight: 1.1), .text(" word", weight: 1.0),
      ])
    #expect(PromptParser.parseA1111("(unbalanced") == [.text("unbalanced", weight: 1.1)])
    #expect(
      PromptParser.parseA1111("(unnecessary)(parens)") == [.text("unnecessaryparens", weight: 1.1)])
    let house = PromptParser.parseA1111("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    let expected: [(String, Double)] = [
      ("a ", 1), ("house", 1.573), (" ", 1.1), ("on", 1), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641), (".", 1.1),
    ]
    #expect(house.count == expected.count)
    for (segment, (text, weight)) in zip(house, expected) {
      guard case .text(let actualText, let actualWeight) = segment else {
        Issue.record("unexpected \(segment)")
        continue
      }
      #expect(actualText == text && abs(actualWeight - weight) < 1e-12)
    }
    #expect(PromptParser.parseA1111("") == [.text("", weight: 1)])
  }

  @Test func comfyUISetsWeights() {
    #expect(PromptParser.parseComfyUI("((x:1.5))") == [.text("x", weight: 1.5)])
    #expect(PromptParser.parseComfyUI("[x]") == [.text("[x]", weight: 1)])
    #expect(
      PromptParser.parseComfyUI("a \\(b\\) (c)")
        == [.text("a (b) ", weight: 1), .text("c", weight: 1.1)])
  }

  @Test(arguments: PromptSyntax.allCases)
  func goldenParses(syntax: PromptSyntax) {
    let cases = Self.golden.array("parse")
    #expect(cases.count >= 10)
    for case let item as [String: Any] in cases {
      let prompt = item.string("prompt")
      let expected = Self.pairs(item.array(syntax.rawValue))
      let actual = PromptParser.parse(prompt, syntax: syntax)
      #expect(Self.same(actual, expected), "\(prompt.debugDescription)")
      #expect(!expected.isEmpty || (syntax == .comfyUI && prompt.isEmpty))
    }
  }

  @Test func pythonFloat() {
    let cases: [(String, Double?)] = [
      ("1.5", 1.5), (" 2 ", 2), ("+.25", 0.25), ("5.", 5), ("1_000", 1000), ("1e3", 1000),
      ("1.2.3", nil), (".", nil), ("", nil), ("1__0", nil), ("_1", nil), ("1.5)", nil),
      ("١٫٥", nil), ("١", 1), ("-inf", -.infinity), ("Infinity", .infinity), ("1e", nil),
    ]
    for (text, value) in cases {
      #expect(PromptParser.pythonFloat(text.unicodeScalars) == value, "\(text)")
    }
    #expect(PromptParser.pythonFloat("nan".unicodeScalars)?.isNaN == true)
  }

  /// A cheap in-process fuzz: random prompts built from the characters that drive the parsers
  /// must parse without trapping, and A1111's parse must keep every non-syntax character.
  @Test func randomPromptsNeverTrap() {
    var generator = TorchGenerator(seed: UInt64(99))
    let alphabet: [Character] = Array(
      "()[]:\\ BREAKbreak.0123456789+-_,x\n\u{0}\u{1}é👍🏽embedding:\u{3000}")
    for _ in 0..<800 {
      let length = Int(generator.rand(count: 1)[0] * 40)
      let picks = generator.rand(count: length)
      var prompt = ""
      for pick in picks {
        let index = min(Int(pick * Float(alphabet.count)), alphabet.count - 1)
        prompt.append(alphabet[index])
      }
      for syntax in PromptSyntax.allCases {
        let segments = PromptParser.parse(prompt, syntax: syntax)
        if syntax == .comfyUI { continue }
        #expect(!segments.isEmpty)
      }
    }
    // Deep nesting stays off the call stack.
    let deep = String(repeating: "(", count: 2_000) + "x" + String(repeating: ")", count: 2_000)
    #expect(PromptParser.parseComfyUI(deep).count == 1)
    #expect(PromptParser.parseA1111(deep).count == 1)
  }
}

@Suite struct PromptChunkerTests {
  static func chunks(_ list: [Any]) -> [TokenChunk] {
    list.compactMap { item in
      guard let chunk = item as? [String: Any] else { return nil }
      return TokenChunk(
        tokens: chunk.ints("tokens").map { Int32($0) }, weights: chunk.doubles("weights"))
    }
  }

  @Test(arguments: PromptStyle.allCases)
  func goldenChunks(style: PromptStyle) throws {
    let tokenizer = try CLIPTokenizer.bundled(cleaning: .ftfy)
    let cases = PromptParserTests.golden.array("chunks")
    #expect(cases.count >= 8)
    for case let item as [String: Any] in cases {
      let prompt = item.string("prompt")
      let expected = item.object(style.rawValue)
      let result = PromptChunker.sdxl(prompt, style: style, tokenizer: tokenizer)
      let l = Self.chunks(expected.array("clipL"))
      let g = Self.chunks(expected.array("clipG"))
      #expect(result.clipL == l, "\(style) L \(prompt.prefix(60))")
      #expect(result.clipG == g, "\(style) G \(prompt.prefix(60))")
      #expect(result.clipL.allSatisfy { $0.tokens.count == 77 && $0.weights.count == 77 })
      if style == .a1111 {
        let count = PromptChunker.a1111(
          PromptParser.parseA1111(prompt), tokenizer: tokenizer
        ).tokenCount
        #expect(count == expected.int("tokenCount"), "\(prompt.prefix(60))")
      }
    }
  }

  @Test func paddingConventions() throws {
    let tokenizer = try CLIPTokenizer.bundled()
    let empty = PromptChunker.sdxl("", style: .comfyUI, tokenizer: tokenizer)
    #expect(empty.clipL == [TokenChunk.empty(padToken: CLIPVocabulary.endToken)])
    #expect(empty.clipG == [TokenChunk.empty(padToken: 0)])
    let a1111 = PromptChunker.sdxl("", style: .a1111, tokenizer: tokenizer)
    #expect(a1111.clipL == empty.clipL && a1111.clipG == empty.clipG)
  }

  @Test func weightingGoldens() {
    let golden = PromptParserTests.golden.object("weighting")
    let width = golden.int("width") ?? 0
    let weights = golden.doubles("weights")
    let z = golden.floats("z")
    #expect(width > 0 && weights.count == 77 && z.count == 77 * width)
    var a1111 = z
    PromptWeighting.applyA1111(&a1111, multipliers: weights, width: width)
    #expect(worstRelativeError(a1111, golden.floats("a1111")) < 1e-6)
    var noNorm = z
    PromptWeighting.applyA1111(&noNorm, multipliers: weights, width: width, restoreMean: false)
    #expect(worstRelativeError(noNorm, golden.floats("a1111NoNorm")) < 1e-6)
    var comfy = z
    PromptWeighting.applyComfyUI(
      &comfy, empty: golden.floats("empty"), weights: weights, width: width)
    #expect(worstRelativeError(comfy, golden.floats("comfyUI")) < 1e-6)
  }

  @Test func encodeConcatenatesAndEncodesEmptyOnlyWhenWeighted() throws {
    var calls = [[Int32]]()
    let encoder = { (tokens: [Int32]) -> [Float] in
      calls.append(tokens)
      return tokens.map { Float($0 % 97) }
    }
    let plain = TokenChunk.empty(padToken: 0)
    var weighted = plain
    weighted.weights[1] = 2
    let unweighted = PromptWeighting.encode(
      [plain, plain], weighting: .comfyUI, padToken: 0, width: 1, encode: encoder)
    #expect(unweighted.count == 154 && calls.count == 2)
    calls.removeAll()
    let result = PromptWeighting.encode(
      [plain, weighted], weighting: .comfyUI, padToken: 0, width: 1, encode: encoder)
    #expect(calls.count == 3 && calls[0] == plain.tokens)
    // Same tokens as the empty prompt: interpolating away from it changes nothing.
    #expect(result == unweighted)
  }
}
