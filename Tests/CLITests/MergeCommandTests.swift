import Foundation
import TestSupport
import Testing

@Suite struct MergeCommandTests {
  let a = TestPaths.fixture("merge/a.safetensors")
  let b = TestPaths.fixture("merge/b.safetensors")
  let c = TestPaths.fixture("merge/c.safetensors")

  @Test func mergesWithFlagsAndRecipe() throws {
    let directory = TestPaths.temporaryDirectory("cli-merge")
    let out = directory + "/ab.safetensors"
    let run = try BinaryRun.run(["merge", a, b, "-o", out, "--comfy-ratio", "0.7", "--prediction", "eps", "--json"])
    #expect(run.status == 0, "\(run.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect(report["tensorsMerged"] as? Int == 8)
    // The recorded recipe repeats the merge exactly.
    let info = try BinaryRun.run(["info", "--json", out])
    let object = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
    let recipe = try #require((object["metadata"] as? [String: String])?["rouwei.merge.recipe"])
    try recipe.write(toFile: directory + "/recipe.json", atomically: true, encoding: .utf8)
    let again = try BinaryRun.run([
      "merge", "--recipe", directory + "/recipe.json", "--search", TestPaths.fixture("merge"), "-o",
      directory + "/again.safetensors",
    ])
    #expect(again.status == 0, "\(again.stderr)")
    let first = try BinaryRun.run(["info", "--hash", "--json", out])
    let second = try BinaryRun.run(["info", "--hash", "--json", directory + "/again.safetensors"])
    func dataHash(_ text: String) throws -> String? {
      let report = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
      return (report?["hashes"] as? [String: Any])?["dataSHA256"] as? String
    }
    #expect(try dataHash(first.stdout) == dataHash(second.stdout), "same recipe, same tensors")
  }

  @Test func disagreementAndBadRequestsExitTwo() throws {
    let out = TestPaths.temporaryDirectory("cli-merge-bad") + "/x.safetensors"
    let disagreement = try BinaryRun.run(["merge", a, b, "-o", out])
    #expect(disagreement.status == 2)
    #expect(disagreement.stderr.contains("--prediction"))
    #expect(
      try BinaryRun.run(["merge", a, b, c, "-o", out, "--method", "weighted-sum", "--prediction", "eps"]).status == 2)
    #expect(try BinaryRun.run(["merge", a, b, "-o", out, "--blocks", "1,2,3", "--prediction", "eps"]).status == 2)
    #expect(try BinaryRun.run(["merge", a, b, c, "-o", out, "--method", "sum", "--prediction", "eps"]).status == 2)
    #expect(try BinaryRun.run(["merge", a, "/nonexistent.safetensors", "-o", out]).status == 3)
    #expect(try BinaryRun.run(["merge", a, b, "-o", a, "--prediction", "eps"]).status == 2)
    #expect(!FileManager.default.fileExists(atPath: out))
  }
}
