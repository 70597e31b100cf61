import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct FixtureInspectionTests {
  @Test func tinyEpsilonFixture() throws {
    let report = try Inspector.inspect(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"))
    #expect(report.architecture.kind == .sdxlReduced)
    #expect(report.architecture.unet?.transformerDepth == [0, 1, 2])
    #expect(report.architecture.unet?.contextDimension == 32)
    #expect(report.prediction.prediction == .epsilon)
    #expect(report.prediction.conflicts.isEmpty)
    // The Python generator writes keys independently of the Swift template: they must agree.
    let check = try #require(report.keyCheck)
    #expect(check.missing.isEmpty, "missing: \(check.missing.prefix(5))")
    #expect(check.extra.isEmpty, "extra: \(check.extra.prefix(5))")
    #expect(check.wrongShape.isEmpty, "shape: \(check.wrongShape.prefix(5))")
    #expect(report.anomalies.filter { $0.severity != "info" }.isEmpty)
  }

  @Test func tinyVPredictionFixture() throws {
    let report = try Inspector.inspect(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"))
    #expect(report.prediction.prediction == .v)
    #expect(report.prediction.zeroTerminalSNR)
    #expect(report.prediction.evidence.map(\.key).contains("v_pred"))
    let markers = try #require(report.components.first { $0.component == .markers })
    #expect(markers.tensors == 2 && markers.parameters == 0)
  }

  @Test func hashesMatchIndependentSHA256() throws {
    // A file whose digests are known: 2 MiB of a repeating byte pattern, hashed by coreutils.
    let directory = TestPaths.temporaryDirectory("hash")
    let path = directory + "/pattern.bin"
    var bytes = [UInt8](repeating: 0, count: 2 << 20)
    for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
    #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    let mapping = try MappedFile(path: path)
    let hashes = ModelHasher.hashes(of: mapping, dataOffset: 1000)
    // Expected digests from Python hashlib over the same bytes (whole file, 64 KiB at 1 MiB, bytes after 1000).
    #expect(hashes.sha256 == "15d80ba308304e391a817479e20a3922787105dfdff12e2251e83d80f8c32195")
    #expect(hashes.autoV2 == "15d80ba308")
    #expect(hashes.autoV1 == "ef463692")
    #expect(hashes.dataSHA256 == "6fbcf37256ef9787d14ab88e7cc36404f07a5722d55bcbabcc349127289f57ee")
    #expect(hashes.autoV3 == "6fbcf37256ef")
  }
}
