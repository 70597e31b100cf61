import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// The GGUF fuzz target's seed corpus (Fixtures/fuzz/gguf, Scripts/fixtures/make_fuzz_seeds.py):
/// each malformed seed ends in the GGUFError its name promises, each one-type seed opens and
/// decodes. Crashers found by `Scripts/fuzz gguf` are added here with their expected error.
@Suite struct GGUFFuzzCorpusTests {
  static let directory = TestPaths.fixture("fuzz/gguf")

  /// Seed → a fragment of the error message.
  static let malformed: [String: String] = [
    "malformed-bad-magic.gguf": "bad magic",
    "malformed-version-1.gguf": "version 1 ",
    "malformed-tensor-count-huge.gguf": "declares 4611686018427387904 tensors",
    "malformed-kv-count-huge.gguf": "keys in a",
    "malformed-truncated-header.gguf": "truncated (at byte 56)",
    "malformed-truncated-data.gguf": "lies outside the file",
    "malformed-alignment-zero.gguf": "general.alignment must be a power-of-two",
    "malformed-alignment-not-power-of-two.gguf": "general.alignment must be a power-of-two",
    "malformed-array-length-huge.gguf": "array of 18446744073709551615 elements runs past the end",
    "malformed-five-dimensions.gguf": "has 5 dimensions",
    "malformed-dimension-overflow.gguf": "overflows",
    "malformed-unknown-ggml-type.gguf": "unknown ggml type 4242",
    "malformed-wrong-data-offset.gguf": "has data offset 64, expected 128",
  ]

  @Test func everyMalformedSeedIsATypedError() throws {
    let names = try FileManager.default.contentsOfDirectory(atPath: Self.directory).filter {
      $0.hasPrefix("malformed-")
    }
    #expect(Set(names) == Set(Self.malformed.keys), "every malformed seed has an expected error")
    for name in names.sorted() {
      let path = Self.directory + "/" + name
      do {
        _ = try GGUFFile(path: path)
        Issue.record("\(name) opened")
      } catch let error as GGUFError {
        let message = error.description
        #expect(message.contains(path), "\(name): names the file")
        #expect(message.contains(Self.malformed[name] ?? "?"), "\(name): \(message)")
      }
    }
  }

  @Test func everyTypeSeedOpensAndDecodes() throws {
    let names = try FileManager.default.contentsOfDirectory(atPath: Self.directory)
      .filter { $0.hasPrefix("type-") || $0.hasPrefix("valid-") }
    #expect(names.count == 14)
    for name in names {
      let file = try GGUFFile(path: Self.directory + "/" + name)
      #expect(!file.tensors.isEmpty, "\(name)")
      for tensor in file.tensors {
        let values = try TensorDecoder.resolve(gguf: file, tensor: tensor).decodeAll()
        #expect(values.count == tensor.elementCount, "\(name) \(tensor.name)")
      }
    }
  }
}
