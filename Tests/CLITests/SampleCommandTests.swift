import Foundation
import SafeTensors
import TestSupport
import Testing
import Verification

@Suite struct SampleCommandTests {
  let model = TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")

  @Test func writesAPNGWithA1111Parameters() throws {
    let directory = TestPaths.temporaryDirectory("sample")
    let output = directory + "/out.png", latents = directory + "/latents.safetensors"
    let run = try BinaryRun.run([
      "sample", model, "-p", "red circle, (white background:1.2)", "-n", "blurry", "--steps", "4",
      "--cfg", "6", "--sampler", "euler_a", "--scheduler", "karras", "--seed", "1234", "--head-dim", "16",
      "-o", output, "--save-latents", latents, "--json",
    ])
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stdout.contains("\"prediction\" : \"v\""))
    #expect(run.stdout.contains("\"zeroTerminalSNR\" : true"))
    let png = try PNGReader.read(path: output)
    #expect(png.image.width == 64 && png.image.height == 64)
    let text = try #require(png.text(for: "parameters"))
    let parsed = try #require(GenerationParameters.parse(text))
    #expect(parsed.prompt == "red circle, (white background:1.2)")
    #expect(parsed.negativePrompt == "blurry")
    #expect(parsed.steps == 4 && parsed.seed == 1234 && parsed.cfgScale == 6)
    #expect(parsed.sampler == "Euler a" && parsed.scheduleType == "Karras")
    #expect(parsed.modelHash?.count == 10)
    let file = try SafeTensorsFile(path: latents)
    #expect(file.contains("noise") && file.contains("step3.x") && file.contains("final"))
    #expect(!file.contains("step4.x"))
  }

  @Test func sameSeedSameImageAndNoiseFromFile() throws {
    let directory = TestPaths.temporaryDirectory("sample-seed")
    // Euler (not ancestral): with --noise-from only the initial noise must come from the file.
    let common = ["sample", model, "-p", "blue square", "--steps", "3", "--sampler", "euler", "--head-dim", "16"]
    #expect(
      try BinaryRun.run(
        common + ["--seed", "5", "-o", directory + "/a.png", "--save-latents", directory + "/a.safetensors"]
      ).status == 0)
    #expect(try BinaryRun.run(common + ["--seed", "5", "-o", directory + "/b.png"]).status == 0)
    #expect(
      try BinaryRun.run(
        common + ["--seed", "9", "--noise-from", directory + "/a.safetensors", "-o", directory + "/c.png"]
      ).status == 0)
    let a = try PNGReader.read(path: directory + "/a.png").image
    #expect(a == (try PNGReader.read(path: directory + "/b.png").image))
    #expect(a == (try PNGReader.read(path: directory + "/c.png").image), "noise from a's file reproduces a")
  }

  @Test func badInputsExitTwoAndWriteNothing() throws {
    let directory = TestPaths.temporaryDirectory("sample-bad")
    let output = directory + "/never.png"
    for arguments in [
      ["sample", model, "-p", "x", "--size", "48x48", "--head-dim", "16", "-o", output],  // not a multiple of 32
      ["sample", model, "-p", "x", "--size", "big", "-o", output],
      ["sample", model, "-p", "x", "--head-dim", "48", "-o", output],  // widths not multiples of 48
      ["sample", TestPaths.fixture("malformed/README.md"), "-p", "x", "-o", output],
      ["sample", model, "-p", "x", "--ztsnr", "-o", output],
    ] {
      let run = try BinaryRun.run(arguments)
      #expect(run.status == 2, "\(arguments): \(run.status) \(run.stderr)")
      #expect(!run.stderr.isEmpty)
    }
    #expect(!FileManager.default.fileExists(atPath: output))
  }
}
