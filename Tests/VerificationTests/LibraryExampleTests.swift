import Foundation
import TestSupport
import Testing
import Verification

// The example of Manuals/verify.md ("As a library call"), verbatim: keep the two in step (the
// test below fails when they drift).
func verifyMerge(model: String, reference: String, folder: String) throws -> Bool {
  var request = VerifyRequest(model: model, load: ModelLoadOptions(threads: 2))
  request.reference = reference
  request.change = .merge
  request.outputFolder = folder
  let report = try request.run { progress in
    print("\(progress.label): \(progress.done)/\(progress.total) steps")
  }
  print(report.text)
  return report.passed
}

/// The library call of the verify manual runs, and the manual shows the same code.
@Suite struct LibraryExampleTests {
  @Test func manualExampleIsThisCode() throws {
    let manual = try String(
      contentsOfFile: TestPaths.packageRoot.appendingPathComponent("Manuals/verify.md").path, encoding: .utf8)
    let start = try #require(manual.range(of: "```swift\nimport Verification\n\n"))
    let end = try #require(manual.range(of: "\n```", range: start.upperBound..<manual.endIndex))
    let example = String(manual[start.upperBound..<end.lowerBound])
    let source = try String(contentsOfFile: #filePath, encoding: .utf8)
    #expect(source.contains(example + "\n"), "Manuals/verify.md's example differs from verifyMerge here:\n\(example)")
  }

  @Test func manualExampleVerifiesTheTrainedFixture() throws {
    let folder = TestPaths.temporaryDirectory("library-example")
    let model = TestPaths.fixture("trained/tiny-shapes-vpred.safetensors")
    #expect(try verifyMerge(model: model, reference: model, folder: folder))
    let files = try FileManager.default.contentsOfDirectory(atPath: folder)
    #expect(files.contains("contact-sheet.png") && files.filter { $0.hasSuffix(".png") }.count == 3)
  }

  @Test func sampleRequestWritesThePNGAndReportsProgress() throws {
    let folder = TestPaths.temporaryDirectory("library-sample")
    var request = SampleRequest(
      model: TestPaths.fixture("trained/tiny-shapes-eps.safetensors"), prompt: "blue triangle, black background",
      output: folder + "/out.png")
    request.settings.steps = 3
    var events: [RenderProgress] = []
    let report = try request.run { events.append($0) }
    #expect(report.width == 64 && report.height == 64 && report.finite && report.prediction == "epsilon")
    #expect(events.first?.done == 0 && events.last == RenderProgress(label: "sampling", done: 3, total: 3))
    let png = try PNGReader.read(path: report.output)
    #expect(png.image.width == 64 && png.text(for: "parameters")?.contains("Steps: 3") == true)
  }
}
