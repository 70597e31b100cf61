import Foundation
import SafeTensors
import TestSupport
import Testing

/// Every exit code, from the real binary: 0 success, 1 verification failed, 2 bad input or usage,
/// 3 I/O failure (an output that cannot be written, a full disk, a vanished input).
@Suite struct ExitCodeTests {
  let tiny = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")
  let trained = TestPaths.fixture("trained/tiny-shapes-vpred.safetensors")

  func expect(_ arguments: [String], exits status: Int32, stderr fragment: String? = nil) throws {
    let run = try BinaryRun.run(arguments)
    #expect(run.status == status, "\(arguments.joined(separator: " ")):\n\(run.stdout)\n\(run.stderr)")
    if let fragment { #expect(run.stderr.contains(fragment), "\(run.stderr)") }
  }

  @Test func zeroOnSuccess() throws {
    try expect(["info", tiny], exits: 0)
    try expect(["--help"], exits: 0)
  }

  @Test func oneWhenAVerificationCheckFails() throws {
    // The v model sampled as epsilon: washed-out images, and the probe contradicts the override.
    let directory = TestPaths.temporaryDirectory("exit-1")
    try expect(
      ["verify", trained, "--prediction", "eps", "--out", directory, "--no-probe"], exits: 1,
      stderr: "verification failed")
  }

  @Test func twoOnBadInputOrUsage() throws {
    try expect(["info", TestPaths.fixture("malformed/aliased-tensors.safetensors")], exits: 2)
    try expect(["convert", tiny], exits: 2, stderr: "Missing expected argument")
    try expect(["sample", tiny, "-p", "x", "-o", "/tmp/x.png", "--size", "12"], exits: 2)
  }

  @Test func threeWhenAPNGCannotBeWritten() throws {
    let missing = TestPaths.temporaryDirectory("exit-3-png") + "/no/such/folder/out.png"
    try expect(["sample", trained, "-p", "blue triangle", "--steps", "1", "-o", missing], exits: 3, stderr: "out.png")
    #expect(!FileManager.default.fileExists(atPath: missing))
  }

  @Test func threeWhenTheReportFolderCannotBeMade() throws {
    // --out below a regular file: the folder for the PNGs cannot be created.
    let file = TestPaths.temporaryDirectory("exit-3-folder") + "/plain-file"
    #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
    try expect(["verify", trained, "--out", file + "/renders"], exits: 3)
  }

  @Test func threeWhenAnInputVanished() throws {
    let gone = TestPaths.temporaryDirectory("exit-3-gone") + "/gone.safetensors"
    try expect(["info", gone], exits: 3, stderr: "gone.safetensors")
    try expect(["merge", "--recipe", gone + ".json", "-o", gone + "-out.safetensors"], exits: 3, stderr: "cannot read")
  }

  @Test(.enabled(if: RootCheck.canMount, "mounting a tmpfs needs root"))
  func threeWhenTheDiskIsFull() throws {
    // A 64 KiB tmpfs cannot hold the 100+ KiB tiny model.
    let directory = TestPaths.temporaryDirectory("exit-3-full")
    guard mount("tmpfs", directory, "tmpfs", 0, "size=64k") == 0 else { return }
    defer {
      umount2(directory, Int32(MNT_DETACH))
      rmdir(directory)
    }
    let output = directory + "/out.safetensors"
    try expect(["convert", tiny, "-o", output, "--dtype", "fp32"], exits: 3)
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "no half file is left")
  }
}

/// Whether this process may mount a tmpfs (root in a container that allows it).
enum RootCheck {
  static let canMount: Bool = {
    let directory = TestPaths.temporaryDirectory("tmpfs-probe")
    defer { rmdir(directory) }
    guard mount("tmpfs", directory, "tmpfs", 0, "size=64k") == 0 else { return false }
    umount2(directory, Int32(MNT_DETACH))
    return true
  }()
}
