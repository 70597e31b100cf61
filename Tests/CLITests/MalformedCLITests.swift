import Foundation
import Testing
import TestSupport

/// `rouwei-ckpt info` on every malformed file: exit 2, a message naming the file, never a crash.
@Suite struct MalformedCLITests {
  @Test func everyMalformedFileExitsTwo() throws {
    let directory = TestPaths.fixture("malformed")
    let data = try #require(FileManager.default.contents(atPath: directory + "/expected.json"))
    let table = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String: String]])
    let bad = table.filter { $0.value["expect"] != "ok" }.keys.sorted()
    #expect(bad.count >= 45)
    for name in bad {
      let run = try BinaryRun.run(["info", directory + "/" + name])
      #expect(run.status == 2, "\(name): exit \(run.status), stderr: \(run.stderr)")
      #expect(run.stderr.contains(name), "\(name): \(run.stderr)")
      #expect(run.stdout.isEmpty)
    }
  }
}
