import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// Every file of Fixtures/malformed must produce exactly its documented error (or open cleanly
/// with exactly its documented tensors). Table: Fixtures/malformed/README.md.
@Suite struct MalformedCorpusTests {
  struct Expectation: Decodable {
    let expect: String
    let what: String
    let message: String?
    let tensors: [String]?
  }

  static let expectations: [(String, Expectation)] = {
    let path = TestPaths.fixture("malformed/expected.json")
    guard let data = FileManager.default.contents(atPath: path),
      let table = try? JSONDecoder().decode([String: Expectation].self, from: data)
    else { return [] }
    return table.sorted { $0.key < $1.key }
  }()

  /// The enum case name of an error (`invalidOffsets` for `.invalidOffsets(file:tensor:reason:)`).
  static func caseName(_ error: SafeTensorsError) -> String {
    Mirror(reflecting: error).children.first?.label ?? "\(error)"
  }

  @Test func corpusIsLargeEnoughAndCoversEveryReaderCase() {
    let bad = Self.expectations.filter { $0.1.expect != "ok" }
    #expect(bad.count >= 45)
    #expect(Self.expectations.count - bad.count >= 5)
    // Every error the reader can raise on a file's content has at least one file.
    let readerCases: Set = [
      "fileTooSmall", "headerTooLarge", "headerOutOfBounds", "headerNotUTF8", "invalidJSON",
      "invalidHeader", "duplicateKey", "unknownDType", "shapeOverflow", "misalignedElements",
      "sizeMismatch", "invalidOffsets", "dataSectionMismatch",
    ]
    #expect(readerCases.subtracting(bad.map(\.1.expect)).isEmpty)
    #expect(Set(bad.map(\.1.expect)).subtracting(readerCases).isEmpty)
  }

  @Test(arguments: expectations.map(\.0))
  func fileProducesItsError(name: String) throws {
    let expectation = try #require(Self.expectations.first { $0.0 == name }?.1)
    let path = TestPaths.fixture("malformed/" + name)
    do {
      let file = try SafeTensorsFile(path: path)
      #expect(expectation.expect == "ok", "\(name) (\(expectation.what)) was accepted, expected \(expectation.expect)")
      // Accepted files must be fully readable and list exactly the documented tensors.
      #expect(Set(file.tensors.map(\.name)) == Set(expectation.tensors ?? []))
      var total = 0
      for tensor in file.tensors {
        total += file.data(tensor).count
        #expect(file.info(tensor.name) == tensor)
        #expect(tensor.byteCount == tensor.elementCount * tensor.dtype.bitWidth / 8)
      }
      #expect(total == file.header.dataByteCount)
      #expect(file.dataOffset + file.header.dataByteCount == file.fileSize)
      try file.checkIntact()
    } catch let error as SafeTensorsError {
      let description = error.description
      #expect(Self.caseName(error) == expectation.expect, "\(name) (\(expectation.what)): \(description)")
      #expect(!error.isIOFailure)
      #expect(description.contains(name), "the message must name the file: \(description)")
      if let fragment = expectation.message {
        #expect(description.contains(fragment), "\(name): expected '\(fragment)' in: \(description)")
      }
      // Hostile names cannot reach the terminal raw, nor flood it.
      #expect(!description.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
      #expect(!description.unicodeScalars.contains { (0x202A...0x202E).contains($0.value) })
      #expect(description.count < 1000, "\(name): a \(description.count)-character message")
    }
  }

  /// The error must not depend on how the file is spelled: the message names the path given.
  @Test func messageNamesThePathAsGiven() throws {
    let directory = TestPaths.temporaryDirectory("spelling")
    let path = directory + "/with space\u{1b}[1m.safetensors"
    try FileManager.default.copyItem(
      atPath: TestPaths.fixture("malformed/gap-between-tensors.safetensors"), toPath: path)
    #expect {
      _ = try SafeTensorsFile(path: path)
    } throws: { error in
      let text = (error as? SafeTensorsError)?.description ?? ""
      return text.contains("with space\\u{1b}[1m.safetensors") && !text.contains("\u{1b}")
    }
  }

  /// Headers parsed from bytes in memory, without a file: the same checks apply.
  @Test func parserRejectsDimensionsThatDoNotFitInt() throws {
    let json = #"{"w":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}}"#
    let bytes = Array(json.utf8)
    #expect(throws: SafeTensorsError.shapeOverflow(file: "mem", tensor: "w", shape: [0, 1 << 63])) {
      try bytes.withUnsafeBytes { try SafeTensorsHeader.parse($0, dataSectionLength: 0, file: "mem") }
    }
    // A data section larger than Int.max cannot be indexed on this machine: refused, not trapped.
    let empty = Array("{}".utf8)
    #expect(throws: SafeTensorsError.self) {
      try empty.withUnsafeBytes { try SafeTensorsHeader.parse($0, dataSectionLength: .max, file: "mem") }
    }
  }

  /// Not regular files: refused with a typed error, without blocking on a FIFO.
  @Test func refusesDirectoriesAndPipes() throws {
    let directory = TestPaths.temporaryDirectory("special")
    #expect(throws: SafeTensorsError.notRegularFile(file: directory, kind: "a directory")) {
      _ = try SafeTensorsFile(path: directory)
    }
    let fifo = directory + "/pipe.safetensors"
    #expect(mkfifo(fifo, 0o600) == 0)
    #expect(throws: SafeTensorsError.notRegularFile(file: fifo, kind: "a pipe")) {
      _ = try SafeTensorsFile(path: fifo)
    }
    #expect(throws: SafeTensorsError.notRegularFile(file: "/dev/zero", kind: "a character device")) {
      _ = try SafeTensorsFile(path: "/dev/zero")
    }
  }
}
