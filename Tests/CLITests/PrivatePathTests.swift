import Foundation
import SafeTensors
import TestSupport
import Testing

/// Published files carry no private paths: whatever a command writes (merge, convert, GGUF,
/// diffusers folders, PNGs) never contains the folder its inputs came from; a merge's recipe
/// names inputs by file name and SHA-256, and `merge --recipe` finds them again.
@Suite struct PrivatePathTests {
  /// A private folder (standing in for /home/NAME/models) holding copies of the inputs.
  static func privateCopies(_ label: String, _ fixtures: [String]) throws -> (folder: String, paths: [String]) {
    let folder = TestPaths.temporaryDirectory("home-alice-models-\(label)")
    let paths = try fixtures.map { fixture in
      let path = folder + "/" + (fixture as NSString).lastPathComponent
      try FileManager.default.copyItem(atPath: TestPaths.fixture(fixture), toPath: path)
      return path
    }
    return (folder, paths)
  }

  /// Fails when any file under `path` (a file or a folder) contains `secret`'s bytes.
  static func expectNoTrace(of secret: String, in path: String) throws {
    var isFolder: ObjCBool = false
    #expect(FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), "\(path) is missing")
    let files =
      isFolder.boolValue
      ? (FileManager.default.subpaths(atPath: path) ?? []).map { path + "/" + $0 } : [path]
    #expect(!files.isEmpty)
    for file in files {
      guard let data = FileManager.default.contents(atPath: file) else { continue }
      #expect(data.range(of: Data(secret.utf8)) == nil, "\(file) contains the private path \(secret)")
    }
  }

  @Test func mergedMetadataHoldsNoAbsolutePath() throws {
    let (folder, inputs) = try Self.privateCopies("merge", ["merge/a.safetensors", "merge/b.safetensors"])
    let out = TestPaths.temporaryDirectory("published") + "/ab.safetensors"
    let run = try BinaryRun.run(["merge", inputs[0], inputs[1], "-o", out, "--alpha", "0.3", "--prediction", "eps"])
    #expect(run.status == 0, "\(run.stderr)")
    let metadata = try SafeTensorsFile(path: out).metadata
    for (key, value) in metadata {
      #expect(
        !value.contains(folder) && !value.contains("\"/") && !value.hasPrefix("/"), "\(key) holds a path: \(value)")
    }
    let recipe = try #require(metadata["rouwei.merge.recipe"])
    #expect(recipe.contains("\"a.safetensors\"") && recipe.contains("input_sha256"))
    try Self.expectNoTrace(of: folder, in: out)
  }

  @Test func convertGGUFAndDiffusersOutputsHoldNoAbsolutePath() throws {
    let (folder, inputs) = try Self.privateCopies("convert", ["tiny-sdxl/tiny-sdxl-vpred.safetensors"])
    let published = TestPaths.temporaryDirectory("published")
    for (arguments, output) in [
      (["--dtype", "fp16", "--replace-vae", inputs[0]], published + "/fp16.safetensors"),
      (["--dtype", "q8_0"], published + "/q8.gguf"),
      (["--layout", "diffusers"], published + "/pipeline"),
    ] {
      let run = try BinaryRun.run(["convert", inputs[0], "-o", output] + arguments)
      #expect(run.status == 0, "\(arguments): \(run.stderr)")
      try Self.expectNoTrace(of: folder, in: output)
    }
  }

  @Test func samplePNGHoldsNoAbsolutePath() throws {
    let (folder, inputs) = try Self.privateCopies("sample", ["trained/tiny-shapes-eps.safetensors"])
    let png = TestPaths.temporaryDirectory("published") + "/out.png"
    let run = try BinaryRun.run(["sample", inputs[0], "-p", "blue triangle", "--steps", "1", "-o", png])
    #expect(run.status == 0, "\(run.stderr)")
    try Self.expectNoTrace(of: folder, in: png)
  }

  @Test func recipeFindsInputsByNameOrHashElsewhere() throws {
    let (_, inputs) = try Self.privateCopies("recipe", ["merge/a.safetensors", "merge/b.safetensors"])
    let out = TestPaths.temporaryDirectory("published") + "/ab.safetensors"
    #expect(
      try BinaryRun.run(["merge", inputs[0], inputs[1], "-o", out, "--alpha", "0.3", "--prediction", "eps"]).status == 0
    )
    let recipeFolder = TestPaths.temporaryDirectory("recipe-only")
    let recipe = recipeFolder + "/recipe.json"
    try #require(try SafeTensorsFile(path: out).metadata["rouwei.merge.recipe"])
      .write(toFile: recipe, atomically: true, encoding: .utf8)

    // Not next to the recipe, no --search: exit 2 naming the input.
    let lost = try BinaryRun.run(["merge", "--recipe", recipe, "-o", recipeFolder + "/x.safetensors"])
    #expect(lost.status == 2 && lost.stderr.contains("'a.safetensors'"), "\(lost.stderr)")

    // Renamed copies elsewhere: found by SHA-256; the result has the same tensors.
    let renamed = TestPaths.temporaryDirectory("renamed")
    try FileManager.default.copyItem(atPath: inputs[0], toPath: renamed + "/first.safetensors")
    try FileManager.default.copyItem(atPath: inputs[1], toPath: renamed + "/second.safetensors")
    let again = recipeFolder + "/again.safetensors"
    let found = try BinaryRun.run(["merge", "--recipe", recipe, "--search", renamed, "-o", again])
    #expect(found.status == 0, "\(found.stderr)")
    let first = try SafeTensorsFile(path: out), second = try SafeTensorsFile(path: again)
    for tensor in first.tensors {
      #expect(Data(first.data(tensor)) == Data(try second.data(named: tensor.name)), "\(tensor.name)")
    }

    // A different model under A's name is refused, not merged.
    let impostor = TestPaths.temporaryDirectory("impostor")
    try FileManager.default.copyItem(
      atPath: TestPaths.fixture("merge/c.safetensors"), toPath: impostor + "/a.safetensors")
    try FileManager.default.copyItem(atPath: inputs[1], toPath: impostor + "/b.safetensors")
    let refused = try BinaryRun.run([
      "merge", "--recipe", recipe, "--search", impostor, "-o", recipeFolder + "/y.safetensors",
    ])
    #expect(refused.status == 2 && refused.stderr.contains("another SHA-256"), "\(refused.stderr)")
  }
}
