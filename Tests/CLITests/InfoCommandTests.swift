import Foundation
import TestSupport
import Testing

@Suite struct InfoCommandTests {
  @Test func humanViewOfFixture() throws {
    let run = try BinaryRun.run(["info", TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")])
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stdout.contains("SDXL topology, reduced widths"))
    #expect(run.stdout.contains("v-prediction + zero-terminal SNR"))
    #expect(run.stderr.isEmpty)
  }

  @Test func jsonDocument() throws {
    let run = try BinaryRun.run(["info", "--json", "--hash", TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")])
    #expect(run.status == 0, "\(run.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect(object["tensorCount"] as? Int == 929)
    #expect((object["architecture"] as? [String: Any])?["kind"] as? String == "sdxl-topology-reduced")
    #expect((object["prediction"] as? [String: Any])?["prediction"] as? String == "epsilon")
    let hashes = try #require(object["hashes"] as? [String: Any])
    #expect((hashes["sha256"] as? String)?.count == 64)
  }

  @Test func severalPathsGiveAnArray() throws {
    let run = try BinaryRun.run([
      "info", "--json", TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"),
      TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"),
    ])
    #expect(run.status == 0)
    let array = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: Any]])
    #expect(array.count == 2)
  }

  @Test func missingFileIsAnIOError() throws {
    let run = try BinaryRun.run(["info", "/nonexistent/model.safetensors"])
    #expect(run.status == 3)
    #expect(run.stderr.contains("/nonexistent/model.safetensors"))
  }

  @Test func garbageFileIsBadInput() throws {
    let path = TestPaths.temporaryDirectory("garbage") + "/bad.safetensors"
    _ = FileManager.default.createFile(atPath: path, contents: Data("hello world, not a model".utf8))
    let run = try BinaryRun.run(["info", path])
    #expect(run.status == 2)
    #expect(run.stderr.contains("bad.safetensors"))
  }

  @Test func usageErrorExitsTwo() throws {
    let run = try BinaryRun.run(["info", "--no-such-flag"])
    #expect(run.status == 2)
  }
}
