import Checkpoint
import Foundation
import TestSupport
import Testing

/// The sniffer over one file per kind (Fixtures/torch/kinds, made by make_torch_fixtures.py).
@Suite struct FileKindTests {
  @Test func everyKindIsRecognised() throws {
    let path = TestPaths.fixture("torch/kinds/expected.json")
    let expected = try JSONDecoder().decode(
      [String: String].self, from: try #require(FileManager.default.contents(atPath: path)))
    #expect(expected.count >= 25)
    for (name, kind) in expected.sorted(by: { $0.key < $1.key }) {
      let sniffed = FileKind.sniff(path: TestPaths.fixture("torch/kinds/" + name))
      #expect(sniffed.name == kind, "\(name): \(sniffed.name), expected \(kind)")
    }
    #expect(FileKind.sniff(path: TestPaths.fixture("torch/kinds/no-such-file")) == .missing)
  }

  @Test func messagesSayWhatToLookAt() throws {
    let page = FileKind.sniff(path: TestPaths.fixture("torch/kinds/error-page.safetensors"))
    #expect(page == .html(firstLine: "<!DOCTYPE html>"))
    #expect(page.phrase == "an HTML page (a failed download?): first line '<!DOCTYPE html>'")
    let truncated = FileKind.sniff(path: TestPaths.fixture("torch/kinds/truncated.safetensors"))
    guard case .truncated("safetensors", let present, let claimed) = truncated else {
      Issue.record("not truncated: \(truncated)")
      return
    }
    #expect(claimed - present == 10)
    #expect(
      FileKind.sniff(path: TestPaths.fixture("torch/kinds/notes.safetensors"))
        == .text(firstLine: "Modell-Notizen: Größe 6,9 GB"))
  }

  @Test func theRealFixturesAreWhatTheyAre() throws {
    #expect(
      FileKind.sniff(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")).name == "safetensors/checkpoint")
    #expect(FileKind.sniff(path: TestPaths.fixture("codecs/comfy-style.gguf")) == .gguf)
    // Files beside a config, no model_index.json.
    #expect(FileKind.sniff(path: TestPaths.fixture("tiny-sdxl")) == .directory)
    #expect(FileKind.sniff(path: TestPaths.fixture("torch/legacy.pt")) == .torchLegacy)
    #expect(FileKind.sniff(path: TestPaths.fixture("torch/views-zip64.pt")) == .torchZip)
  }

  /// Every prefix of every kind's file, and random bytes, classify without trapping.
  @Test func prefixesAndNoiseNeverTrap() throws {
    let directory = TestPaths.fixture("torch/kinds")
    for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
      guard let data = FileManager.default.contents(atPath: directory + "/" + name) else { continue }
      let bytes = [UInt8](data.prefix(4096))
      for cut in stride(from: 0, through: bytes.count, by: max(1, bytes.count / 64)) {
        _ = FileKind.classify(prefix: Array(bytes.prefix(cut)), fileSize: data.count, path: nil)
      }
    }
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<2000 {
      let bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in
        UInt8.random(in: 0...255, using: &generator)
      }
      _ = FileKind.classify(prefix: bytes, fileSize: bytes.count, path: nil)
    }
  }
}
