import Foundation
import TestSupport
import Testing

/// `convert` reports the bytes a diffusers folder really occupies (it said "0 B").
@Suite struct ConvertSizeTests {
  static func folderSize(_ path: String) -> Int {
    (FileManager.default.subpaths(atPath: path) ?? []).reduce(0) { total, relative in
      var isFolder: ObjCBool = false
      #expect(FileManager.default.fileExists(atPath: path + "/" + relative, isDirectory: &isFolder))
      let size = (try? FileManager.default.attributesOfItem(atPath: path + "/" + relative)[.size] as? NSNumber)??
        .intValue
      return total + (isFolder.boolValue ? 0 : size ?? 0)
    }
  }

  @Test func diffusersFolderSizeIsReportedBothWays() throws {
    let directory = TestPaths.temporaryDirectory("convert-size")
    let folder = directory + "/pipeline"
    let out = try BinaryRun.run([
      "convert", TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors"), "-o", folder, "--layout", "diffusers",
      "--json",
    ])
    #expect(out.status == 0, "\(out.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
    let size = Self.folderSize(folder)
    #expect(size > 1_000_000 && report["bytesOut"] as? Int == size, "\(report)")

    let back = try BinaryRun.run(["convert", folder, "-o", directory + "/single.safetensors"])
    #expect(back.status == 0, "\(back.stderr)")
    #expect(!back.stdout.contains("0 B →") && !back.stdout.contains("→ 0 B"), "\(back.stdout)")
  }
}
