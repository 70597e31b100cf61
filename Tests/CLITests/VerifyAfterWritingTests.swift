import Checkpoint
import Foundation
import SafeTensors
import TestSupport
import Testing
import Verification

/// `convert --verify` and `merge --verify`: the output is rendered and checked once written, and a
/// broken artifact fails the command that made it.
@Suite struct VerifyAfterWritingTests {
  let vModel = TestPaths.fixture("trained/tiny-shapes-vpred.safetensors")

  /// The combined JSON document: the command's own report beside the verification.
  struct Combined: Decodable {
    struct Output: Decodable { let output: String }
    let result: Output
    let verification: VerifyReport
  }

  @Test func convertVerifiesAgainstItsInput() throws {
    let directory = TestPaths.temporaryDirectory("convert-verify")
    let output = directory + "/bf16.safetensors"
    let run = try BinaryRun.run([
      "convert", vModel, "-o", output, "--dtype", "bf16", "--verify-reference", vModel,
      "--verify-out", directory + "/renders", "--json",
    ])
    #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
    let combined = try JSONDecoder().decode(Combined.self, from: Data(run.stdout.utf8))
    #expect(combined.result.output == output)
    #expect(combined.verification.passed && combined.verification.change == .bf16)
    #expect(combined.verification.images.allSatisfy { ($0.comparison?.ssim ?? 0) > 0.97 })
    #expect(FileManager.default.fileExists(atPath: directory + "/renders/contact-sheet.png"))
  }

  @Test func convertThatLosesTheMarkersFails() throws {
    // Marking a v model epsilon is what a careless conversion does: the probe catches it.
    let directory = TestPaths.temporaryDirectory("convert-verify-bad")
    let output = directory + "/eps.safetensors"
    let run = try BinaryRun.run([
      "convert", vModel, "-o", output, "--set-prediction", "eps", "--verify",
      "--verify-out", directory + "/renders",
    ])
    #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
    #expect(run.stdout.contains("FAILED: \(output)"))
    #expect(run.stdout.contains("behaves like v-prediction"))
    #expect(run.stderr.contains("verification failed"))
    // The artifact is kept for inspection.
    #expect(FileManager.default.fileExists(atPath: output))
  }

  @Test func mergeComparisonIsReportedNotFailed() throws {
    let directory = TestPaths.temporaryDirectory("merge-verify")
    let epsModel = TestPaths.fixture("trained/tiny-shapes-eps.safetensors")
    let output = directory + "/merged.safetensors"
    let run = try BinaryRun.run([
      "merge", vModel, epsModel, "-o", output, "--alpha", "0.2", "--prediction", "v", "--ztsnr",
      "--verify-reference", vModel, "--verify-out", directory + "/renders", "--json",
    ])
    let combined = try JSONDecoder().decode(Combined.self, from: Data(run.stdout.utf8))
    #expect(combined.verification.change == .merge)
    // The renders differ from A's (a merge is meant to change them), and that alone never fails.
    #expect(combined.verification.images.allSatisfy { $0.comparison != nil })
    let referenceFailures = combined.verification.failures.filter { $0.contains("reference") }
    #expect(referenceFailures.isEmpty, "\(combined.verification.failures)")
    #expect(run.status == (combined.verification.passed ? 0 : 1))
  }

  @Test func verifyNeedsAnOutputWithAUNet() throws {
    // GGUF, diffusers and UNet-only outputs are verified (VerifyEveryArtifactTests); an output
    // without a UNet cannot be rendered, and verify options need --verify.
    let directory = TestPaths.temporaryDirectory("convert-verify-usage")
    for extra in [
      ["-o", directory + "/vae.safetensors", "--components", "vae", "--verify"],
      ["-o", directory + "/model.safetensors", "--verify-preset", "quick"],
    ] {
      let run = try BinaryRun.run(["convert", vModel] + extra)
      #expect(run.status == 2, "\(extra): \(run.stderr)")
      #expect(run.stderr.contains("verify"))
    }
  }
}

/// `info --probe`: the behavioural probe beside what the file declares.
@Suite struct InfoProbeTests {
  struct Document: Decodable {
    struct Probe: Decodable { let verdict: PredictionVerdict }
    let format: String
    let probe: Probe?
  }

  @Test func theVModelProbesAsVAndTheEpsilonModelAsEpsilon() throws {
    for (name, behaviour) in [("vpred", PredictionType.v), ("eps", .epsilon)] {
      let path = TestPaths.fixture("trained/tiny-shapes-\(name).safetensors")
      let run = try BinaryRun.run(["info", path, "--probe", "--json"])
      #expect(run.status == 0, "\(run.stderr)")
      let document = try JSONDecoder().decode(Document.self, from: Data(run.stdout.utf8))
      #expect(document.format == "safetensors")
      let verdict = try #require(document.probe?.verdict)
      #expect(verdict.behaviour == behaviour && verdict.passed, "\(name): \(verdict.explanation)")
    }
  }

  @Test func lostMarkersAreShownInTheHumanView() throws {
    let directory = TestPaths.temporaryDirectory("info-probe")
    let stripped = directory + "/stripped.safetensors"
    let convert = try BinaryRun.run([
      "convert", TestPaths.fixture("trained/tiny-shapes-vpred.safetensors"), "-o", stripped,
      "--set-prediction", "eps",
    ])
    #expect(convert.status == 0, "\(convert.stderr)")
    let run = try BinaryRun.run(["info", stripped, "--probe"])
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stdout.contains("Probe (how the UNet behaves)"))
    #expect(run.stdout.contains("FAIL declared epsilon, behaves v"))
    // Without --probe nothing is loaded and no probe section appears.
    let plain = try BinaryRun.run(["info", stripped, "--json"])
    #expect(!plain.stdout.contains("\"probe\""))
  }
}
