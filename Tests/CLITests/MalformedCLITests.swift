import Foundation
import TestSupport
import Testing

/// `rouwei-ckpt info` over the whole malformed corpus (Fixtures/malformed), with the real binary:
/// every bad file exits 2 with one line naming the file and the reason, every good one exits 0,
/// and nothing ever crashes (a trap would exit with a signal and a backtrace).
@Suite struct MalformedCLITests {
  struct Expectation: Decodable {
    let expect: String
    let message: String?
  }

  static func corpus() throws -> [(String, Expectation)] {
    let path = TestPaths.fixture("malformed/expected.json")
    let data = try #require(FileManager.default.contents(atPath: path))
    return try JSONDecoder().decode([String: Expectation].self, from: data).sorted { $0.key < $1.key }
  }

  /// Files the sniffer (`FileKind`) diagnoses before the reader runs: its message replaces the reader's.
  static let sniffed = [
    "empty-file.safetensors": "is an empty file (0 bytes",
    "header-longer-than-file.safetensors": "is a truncated safetensors file: 10 bytes present, its header claims 1008",
    "truncated-data.safetensors": "is a truncated safetensors file: 70 bytes present, its header claims 72",
  ]

  @Test func everyCorpusFileExitsCleanly() throws {
    let directory = TestPaths.fixture("malformed")
    let corpus = try Self.corpus()
    #expect(corpus.filter { $0.1.expect != "ok" }.count >= 45)
    for (name, expectation) in corpus {
      let run = try BinaryRun.run(["info", directory + "/" + name])
      #expect(!run.stderr.contains("Fatal error") && !run.stderr.contains("Backtrac"), "\(name) crashed: \(run.stderr)")
      #expect(!run.stderr.unicodeScalars.contains { $0.value == 0x1B }, "\(name): raw escape on stderr")
      if expectation.expect == "ok" {
        #expect(run.status == 0, "\(name): exit \(run.status), stderr: \(run.stderr)")
        #expect(run.stderr.isEmpty, "\(name): \(run.stderr)")
        continue
      }
      #expect(run.status == 2, "\(name): exit \(run.status), stderr: \(run.stderr)")
      #expect(run.stderr.hasPrefix("rouwei-ckpt: ") && run.stderr.contains(name), "\(name): \(run.stderr)")
      if let fragment = Self.sniffed[name] ?? expectation.message {
        #expect(run.stderr.contains(fragment), "\(name): expected '\(fragment)' in \(run.stderr)")
      }
      #expect(run.stderr.split(separator: "\n").count == 1, "\(name): more than one line: \(run.stderr)")
      #expect(run.stdout.isEmpty)
    }
  }

  /// With several paths, a bad file does not stop the others: each is reported, the exit is 2.
  @Test func badFileAmongGoodOnes() throws {
    let directory = TestPaths.fixture("malformed")
    let run = try BinaryRun.run([
      "info", directory + "/ok-zero-size.safetensors", directory + "/gap-between-tensors.safetensors",
      directory + "/ok-rank0-scalar.safetensors",
    ])
    #expect(run.status == 2)
    #expect(run.stdout.contains("ok-zero-size.safetensors") && run.stdout.contains("ok-rank0-scalar.safetensors"))
    #expect(run.stderr.contains("gap-between-tensors.safetensors"))
  }

  /// Names and metadata from a valid file are printed with control characters escaped.
  @Test func hostileNamesInAValidFileAreEscaped() throws {
    let header =
      #"{"__metadata__":{"k\u001b]0;x\u0007":"v\u001b[2J"},"\u001b[31mred":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
    var bytes = Array(header.utf8)
    bytes += Array(repeating: UInt8(ascii: " "), count: (8 - bytes.count % 8) % 8)
    var file = withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { Array($0) } + bytes
    file += [0, 0, 0, 0]
    let path = TestPaths.temporaryDirectory("escape") + "/names.safetensors"
    #expect(FileManager.default.createFile(atPath: path, contents: Data(file)))
    let run = try BinaryRun.run(["info", "--keys", path])
    #expect(run.status == 0, "\(run.stderr)")
    #expect(!run.stdout.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
    #expect(run.stdout.contains(#"\u{1b}[31mred"#))
    #expect(run.stdout.contains(#"v\u{1b}[2J"#))
  }
}
