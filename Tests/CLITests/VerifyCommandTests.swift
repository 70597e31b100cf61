import Foundation
import SafeTensors
import TestSupport
import Testing
import Verification

/// `rouwei-ckpt verify` on the trained tiny models: exit codes, files, report.
@Suite struct VerifyCommandTests {
  let vModel = TestPaths.fixture("trained/tiny-shapes-vpred.safetensors")

  @Test func goodModelPassesAndWritesImagesSheetAndReport() throws {
    let directory = TestPaths.temporaryDirectory("verify-good")
    let run = try BinaryRun.run([
      "verify", vModel, "--head-dim", "16", "--out", directory, "--json",
    ])
    #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
    let report = try JSONDecoder().decode(VerifyReport.self, from: Data(run.stdout.utf8))
    #expect(report.passed && report.failures.isEmpty)
    #expect(report.images.count == 2 && report.images.allSatisfy(\.passed))
    #expect(report.prediction?.behaviour == .v && report.prediction?.passed == true)
    for image in report.images {
      let file = try #require(image.file)
      let png = try PNGReader.read(path: file)
      #expect(png.image.width == 64)
      let text = try #require(png.text(for: "parameters"))
      let parameters = try #require(GenerationParameters.parse(text))
      #expect(parameters.prompt == image.prompt && parameters.seed == image.seed)
    }
    let sheetPath = try #require(report.contactSheet)
    let sheet = try PNGReader.read(path: sheetPath).image
    #expect(sheet.width > 128)
  }

  @Test func strippedMarkersFailWithTheReason() throws {
    // The v model re-saved without `v_pred`/`ztsnr` and metadata, as a careless merge leaves it.
    let directory = TestPaths.temporaryDirectory("verify-stripped")
    let source = try SafeTensorsFile(path: vModel)
    let stripped = directory + "/stripped.safetensors"
    let entries = source.tensors.filter { $0.name != "v_pred" && $0.name != "ztsnr" }.map { info in
      TensorEntry(spec: TensorSpec(name: info.name, dtype: info.dtype, shape: info.shape)) { sink in
        try sink.write(source.data(info))
      }
    }
    try SafeTensorsWriter.write(to: stripped, entries: entries, metadata: [:])
    let run = try BinaryRun.run([
      "verify", stripped, "--head-dim", "16", "--out", directory + "/out",
    ])
    #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
    #expect(run.stdout.hasPrefix("FAILED"))
    #expect(
      run.stdout.contains("marked epsilon (no `v_pred` key) but the UNet behaves like v-prediction")
    )
    #expect(run.stderr.contains("verification failed"))
  }

  @Test func badInputExitsTwo() throws {
    let directory = TestPaths.temporaryDirectory("verify-bad")
    for arguments in [
      ["verify", vModel, "--head-dim", "16", "--size", "big", "--out", directory],
      ["verify", vModel, "--head-dim", "16", "--negative", "x", "--out", directory],
      ["verify", TestPaths.fixture("malformed/README.md"), "--out", directory],
      ["verify", vModel, "--head-dim", "16", "--preset", "huge", "--out", directory],
    ] {
      let run = try BinaryRun.run(arguments)
      #expect(run.status == 2, "\(arguments): \(run.status) \(run.stderr)")
    }
  }
}
