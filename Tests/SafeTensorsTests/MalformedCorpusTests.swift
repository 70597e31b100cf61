import Foundation
import Testing
import TestSupport

@testable import SafeTensors

/// Every file of Fixtures/malformed must produce exactly its documented error (or open cleanly).
@Suite struct MalformedCorpusTests {
  struct Expectation: Decodable {
    let expect: String
    let what: String
  }

  static let expectations: [(String, Expectation)] = {
    let path = TestPaths.fixture("malformed/expected.json")
    guard let data = FileManager.default.contents(atPath: path),
      let table = try? JSONDecoder().decode([String: Expectation].self, from: data)
    else { return [] }
    return table.sorted { $0.key < $1.key }
  }()

  @Test func corpusIsLargeEnough() {
    #expect(Self.expectations.filter { $0.1.expect != "ok" }.count >= 45)
  }

  @Test(arguments: expectations.map(\.0))
  func fileProducesItsError(name: String) throws {
    let expectation = try #require(Self.expectations.first { $0.0 == name }?.1)
    let path = TestPaths.fixture("malformed/" + name)
    do {
      let file = try SafeTensorsFile(path: path)
      #expect(expectation.expect == "ok", "\(name) (\(expectation.what)) was accepted, expected \(expectation.expect)")
      // Accepted files must be fully readable.
      for tensor in file.tensors { _ = file.data(tensor).count }
    } catch let error as SafeTensorsError {
      let caseName = Mirror(reflecting: error).children.first?.label ?? "\(error)"
      #expect(caseName == expectation.expect, "\(name) (\(expectation.what)): \(error)")
      #expect(error.description.contains(name), "the message must name the file: \(error)")
    }
  }
}
