import Testing

@testable import Diffusion

@Suite struct TokenizerSmokeTests {
  @Test func astronaut() throws {
    let tokenizer = try CLIPTokenizer.bundled()
    #expect(
      tokenizer.encode("a photo of an astronaut riding a horse on mars")
        == [320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496])
  }
}
