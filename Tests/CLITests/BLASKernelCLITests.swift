import Foundation
import Tensors
import TestSupport
import Testing

/// The binary runs the OpenBLAS kernels the CPU supports even where OpenBLAS's own detection falls
/// back (BLASCore.relaunchIfMisdetected), and a user's OPENBLAS_CORETYPE is honoured.
@Suite struct BLASKernelCLITests {
  static func kernels(_ environment: [String: String]) throws -> String? {
    let run = try BinaryRun.run(["--version"], environment: environment)
    #expect(run.status == 0, "\(run.stderr)")
    let text = run.stdout
    guard let start = text.range(of: "OpenBLAS kernels: ")?.upperBound, let end = text[start...].firstIndex(of: ")")
    else { return nil }
    return String(text[start..<end])
  }

  @Test func versionNamesKernelsThatMatchTheCPU() throws {
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "OPENBLAS_CORETYPE")
    let core = try #require(try Self.kernels(environment))
    #expect(BLASCore.better(than: core, flags: BLASCore.cpuFlags()) == nil, "runs \(core) on a CPU that has more")
  }

  @Test func anExplicitCoreTypeIsKept() throws {
    var environment = ProcessInfo.processInfo.environment
    environment["OPENBLAS_CORETYPE"] = "Prescott"
    #expect(try Self.kernels(environment) == "Prescott")
  }
}
