import Checkpoint
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

  @Test func conversionsAgainstTheirReference() throws {
    let directory = TestPaths.temporaryDirectory("verify-reference")
    let reference = directory + "/fp32.safetensors"
    for (dtype, path) in [
      ("fp32", reference), ("bf16", directory + "/bf16.safetensors"),
      ("fp8-e4m3fn", directory + "/fp8.safetensors"),
    ] {
      let run = try BinaryRun.run(["convert", vModel, "-o", path, "--dtype", dtype])
      #expect(run.status == 0, "\(dtype): \(run.stderr)")
    }
    func verify(_ model: String, _ extra: [String] = []) throws -> (Int32, VerifyReport?) {
      let run = try BinaryRun.run(
        [
          "verify", model, "--reference", reference, "--head-dim", "16", "--no-probe", "--json",
          "--out", directory + "/out",
        ]
          + extra)
      return (run.status, try? JSONDecoder().decode(VerifyReport.self, from: Data(run.stdout.utf8)))
    }
    // The fp16 file against its fp32 widening: the same numbers, identical images.
    let (fp16Status, fp16) = try verify(vModel)
    #expect(fp16Status == 0 && fp16?.change == .fp16)
    #expect(
      fp16?.images.allSatisfy { $0.comparison?.psnr == nil && $0.referenceCheck?.passed == true }
        == true)
    // bf16 loses a few 8-bit levels and passes its own thresholds.
    let (bf16Status, bf16) = try verify(directory + "/bf16.safetensors")
    #expect(bf16Status == 0 && bf16?.change == .bf16, "\(String(describing: bf16?.failures))")
    #expect(bf16?.images.allSatisfy { ($0.comparison?.psnr ?? 0) > 35 } == true)
    // fp8 judged as if it were an fp16 conversion: the renders are too far from the reference.
    let (fp8Status, fp8) = try verify(directory + "/fp8.safetensors", ["--change", "fp16"])
    #expect(fp8Status == 1)
    #expect(fp8?.failures.contains { $0.contains("reference: PSNR") } == true)
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
