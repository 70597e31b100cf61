import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// A real full disk: a 256 KiB tmpfs. Mounting needs root (CAP_SYS_ADMIN); elsewhere the suite is
/// skipped and the injected-fault tests (WriterFaultTests) cover the same paths.
@Suite struct RealDiskFullTests {
  /// Mounts a fresh tmpfs of `size`, runs `body` in it, unmounts. Nil when mounting is not allowed.
  static func withTmpfs<T>(size: String, _ body: (String) throws -> T) rethrows -> T? {
    let directory = TestPaths.temporaryDirectory("tmpfs")
    guard mount("tmpfs", directory, "tmpfs", 0, "size=\(size)") == 0 else { return nil }
    defer {
      umount2(directory, Int32(MNT_DETACH))
      rmdir(directory)
    }
    return try body(directory)
  }

  static let canMount: Bool = withTmpfs(size: "64k") { _ in true } ?? false

  static func freeBytes(_ path: String) -> UInt64 {
    var stats = statvfs()
    guard statvfs(path, &stats) == 0 else { return 0 }
    return UInt64(stats.f_bavail) * UInt64(stats.f_frsize)
  }

  @Test(.enabled(if: canMount, "mounting a tmpfs needs root"))
  func diskFullKeepsTheOldFileAndFreesTheSpace() throws {
    try Self.withTmpfs(size: "256k") { directory in
      let path = directory + "/model.safetensors"
      let small: [Float] = [1, 2, 3, 4]
      try SafeTensorsWriter.write(
        to: path,
        entries: [
          TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) { try $0.write(contentsOf: small) }
        ],
        metadata: ["version": "old"])
      let before = try #require(FileManager.default.contents(atPath: path))
      let free = Self.freeBytes(directory)

      let big = [Float](repeating: 0.5, count: 256 * 1024)  // 1 MiB on a 256 KiB disk
      #expect(throws: SafeTensorsError.io(file: path, operation: "write", errno: ENOSPC)) {
        try SafeTensorsWriter.write(
          to: path,
          entries: [
            TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [big.count])) { try $0.write(contentsOf: big) }
          ],
          metadata: ["version": "new"])
      }
      #expect(FileManager.default.contents(atPath: path) == before)
      #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["model.safetensors"])
      #expect(Self.freeBytes(directory) == free)  // the temporary file's blocks were released

      // And a write that fits still replaces the file.
      try SafeTensorsWriter.write(
        to: path,
        entries: [
          TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) { try $0.write(contentsOf: small) }
        ],
        metadata: ["version": "new"])
      #expect(try SafeTensorsFile(path: path).metadata == ["version": "new"])
    }
  }
}
