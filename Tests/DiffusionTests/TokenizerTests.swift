import Foundation
import Testing

@testable import Diffusion

@Suite struct TokenizerTests {
  static let tokenizerGolden = (try? Goldens.json("tokenizer.json")) ?? [:]

  @Test func vocabularyShape() throws {
    let vocabulary = try CLIPVocabulary.bundled()
    #expect(vocabulary.count == 49_408)
    #expect(vocabulary.id(of: "<|startoftext|>") == 49_406)
    #expect(vocabulary.id(of: "<|endoftext|>") == 49_407)
    #expect(vocabulary.id(of: ",</w>") == PromptChunker.commaToken)
    #expect(vocabulary.id(of: "!") == 0)
    // The last merge is the last ordinary token.
    #expect(vocabulary.tokens[49_405] != "")
  }

  @Test func knownIDs() throws {
    // apple/ml-stable-diffusion's test vector (without start and end).
    let tokenizer = try CLIPTokenizer.bundled()
    #expect(
      tokenizer.encode("a photo of an astronaut riding a horse on mars")
        == [320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496])
    #expect(tokenizer.encode("") == [])
    #expect(tokenizer.encode("   \n\t ") == [])
  }

  @Test(arguments: CLIPTextCleaning.allCases)
  func goldenIDs(cleaning: CLIPTextCleaning) throws {
    let tokenizer = try CLIPTokenizer.bundled(cleaning: cleaning)
    let prompts = Self.tokenizerGolden.array("prompts").compactMap { $0 as? String }
    let expected = Self.tokenizerGolden.object("ids").array(cleaning.rawValue)
    #expect(prompts.count >= 15 && expected.count == prompts.count)
    for (prompt, ids) in zip(prompts, expected) {
      let golden = (ids as? [Any] ?? []).compactMap { goldenInt($0).map(Int32.init) }
      let actual = tokenizer.encode(prompt)
      #expect(actual == golden, "\(cleaning) \(prompt.debugDescription)")
    }
  }

  @Test func decodeRoundTrip() throws {
    let tokenizer = try CLIPTokenizer.bundled()
    let text = "karin (blue archive), 1girl, café 👍🏽"
    #expect(tokenizer.decode(tokenizer.encode(text)) == "karin ( blue archive ), 1 girl , café 👍🏽")
  }

  @Test func cleanUps() throws {
    let ftfy = try CLIPTokenizer.bundled(cleaning: .ftfy)
    #expect(ftfy.cleaned("  Tom &amp;  JERRY\u{2019}s ＡＢ ﬁ ") == "tom & jerry's ab fi")
    #expect(ftfy.cleaned("ΟΔΟΣ") == "οδος")
    let fast = try CLIPTokenizer.bundled(cleaning: .normalizeOnly)
    #expect(fast.cleaned("ΟΔΟΣ &amp;") == "οδοσ &amp;")
  }

  @Test func plainTextVocabularyAndErrors() throws {
    let folder = NSTemporaryDirectory() + "rouwei-vocab-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let bundled = try CLIPVocabulary.bundled()
    // Rebuild the plain text from the vocabulary's merges.
    let header = "\"bpe_simple_vocab_16e6.txt#version: 0.2"
    var lines = [header]
    var byID = [Int32: (Int32, Int32)]()
    for (key, merge) in bundled.merges {
      byID[merge.merged] = (Int32(truncatingIfNeeded: key >> 32), Int32(truncatingIfNeeded: key))
    }
    for id in 512..<(512 + CLIPVocabulary.mergeCount) {
      guard let (left, right) = byID[Int32(id)] else {
        Issue.record("merge \(id)")
        return
      }
      lines.append(bundled.tokens[Int(left)] + " " + bundled.tokens[Int(right)])
    }
    let plain = folder + "/merges.txt"
    try (lines.joined(separator: "\n") + "\n").write(
      toFile: plain, atomically: true, encoding: .utf8)
    let reloaded = try CLIPVocabulary(contentsOf: plain)
    #expect(reloaded.tokens == bundled.tokens)

    #expect(throws: DiffusionError.self) { try CLIPVocabulary(contentsOf: folder + "/missing") }
    let short = folder + "/short.txt"
    try lines.prefix(100).joined(separator: "\n").write(
      toFile: short, atomically: true, encoding: .utf8)
    #expect {
      try CLIPVocabulary(contentsOf: short)
    } throws: { error in
      guard case .invalidVocabulary(let file, _) = error as? DiffusionError else { return false }
      return file == short
    }
    let corrupt = folder + "/corrupt.zst"
    try Data(ZstdDecoder.magic + [0x00, 0x01, 0x02, 0x03, 0xFF]).write(
      to: URL(fileURLWithPath: corrupt))
    #expect {
      try CLIPVocabulary(contentsOf: corrupt)
    } throws: { error in
      guard case .vocabularyUnreadable(let file, let reason) = error as? DiffusionError else {
        return false
      }
      return file == corrupt && reason.hasPrefix("zstd")
    }
    let badMerge = folder + "/bad.txt"
    var broken = lines
    broken[10] = "onlyonesymbol"
    try broken.joined(separator: "\n").write(toFile: badMerge, atomically: true, encoding: .utf8)
    #expect(throws: DiffusionError.self) { try CLIPVocabulary(contentsOf: badMerge) }
  }

  @Test func resourceSearchIncludesBundleAndSourceTree() {
    let paths = CLIPVocabulary.searchPaths()
    let bundled = "rouwei-ckpt_Diffusion.resources/" + CLIPVocabulary.resourceName
    #expect(paths.contains { $0.hasSuffix(bundled) })
    #expect(paths.last?.hasSuffix("Sources/Diffusion/Resources/" + CLIPVocabulary.resourceName) == true)
    // SwiftPM's resource folder beside the built products is found before the source tree, so a
    // binary copied together with its `.resources` folder works without the checkout.
    let found = paths.first { FileManager.default.isReadableFile(atPath: $0) }
    #expect(found?.hasSuffix(bundled) == true)
  }

}
