import Foundation
import TestSupport
import Testing

/// The real binary, interrupted or undermined while it works: a writer signalled mid-way, and an
/// input truncated while it is mapped. Inputs are sparse files (a header and a hole), so they are
/// large without costing disk or time.
@Suite struct InterruptionCLITests {
  /// A safetensors file with one F32 tensor of `megabytes` MiB, the data a hole.
  static func sparseInput(_ directory: String, megabytes: Int) throws -> String {
    let count = megabytes << 18
    let header = #"{"w":{"dtype":"F32","shape":[\#(count)],"data_offsets":[0,\#(count * 4)]}}"#
    var bytes = Array(header.utf8)
    bytes += Array(repeating: UInt8(ascii: " "), count: (8 - bytes.count % 8) % 8)
    let path = directory + "/input.safetensors"
    let prefix = withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { Array($0) }
    #expect(FileManager.default.createFile(atPath: path, contents: Data(prefix + bytes)))
    #expect(truncate(path, off_t(8 + bytes.count + count * 4)) == 0)
    return path
  }

  static func launch(_ arguments: [String]) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: BinaryRun.executable)
    process.arguments = arguments
    process.environment = BinaryRun.environment()
    let err = Pipe()
    process.standardError = err
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    return (process, err)
  }

  /// Polls (up to 20 s) until `condition` holds; false if the process ended first.
  static func wait(for process: Process, until condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(20)
    while Date() < deadline {
      if condition() { return true }
      if !process.isRunning { return condition() }
      usleep(200)
    }
    return false
  }

  static func partials(in directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".partial") }
  }

  /// SIGINT, SIGTERM and SIGHUP in the middle of a write: the process dies of the signal, the
  /// temporary file is gone and the destination was never created.
  @Test(arguments: [SIGINT, SIGTERM, SIGHUP])
  func signalRemovesThePartialFile(signal: Int32) throws {
    let directory = TestPaths.temporaryDirectory("signal")
    let input = try Self.sparseInput(directory, megabytes: 16)
    let output = directory + "/out.safetensors"
    let (process, _) = try Self.launch(["convert", input, "-o", output, "--dtype", "fp16"])
    let started = Self.wait(for: process) { !Self.partials(in: directory).isEmpty }
    #expect(started, "the writer never created its temporary file")
    kill(process.processIdentifier, signal)
    process.waitUntilExit()
    #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == signal)
    #expect(Self.partials(in: directory).isEmpty)
    #expect(!FileManager.default.fileExists(atPath: output))
  }

  /// SIGKILL cannot be caught: the `.partial` file stays (never the destination). The next write
  /// to the same destination removes it, because its process is gone.
  @Test func sigkillLeavesAPartialThatTheNextWriteRemoves() throws {
    let directory = TestPaths.temporaryDirectory("sigkill")
    let input = try Self.sparseInput(directory, megabytes: 16)
    let output = directory + "/out.safetensors"
    let (process, _) = try Self.launch(["convert", input, "-o", output, "--dtype", "fp16"])
    #expect(Self.wait(for: process) { !Self.partials(in: directory).isEmpty })
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL)
    let left = Self.partials(in: directory)
    #expect(left.count == 1 && left[0].hasPrefix(".out.safetensors.\(process.processIdentifier)."))
    #expect(!FileManager.default.fileExists(atPath: output))

    let small = TestPaths.fixture("malformed/ok-zero-size.safetensors")
    let run = try BinaryRun.run(["convert", small, "-o", output])
    #expect(run.status == 0, "\(run.stderr)")
    #expect(FileManager.default.fileExists(atPath: output))
    #expect(Self.partials(in: directory).isEmpty)
  }

  /// `info --hash` while another program truncates the file it has mapped: without the SIGBUS
  /// guard the process dies; with it, the command fails with exit 3 and says what happened.
  @Test func inputTruncatedWhileMappedIsAnIOError() throws {
    let directory = TestPaths.temporaryDirectory("truncate")
    let input = try Self.sparseInput(directory, megabytes: 512)
    let (process, err) = try Self.launch(["info", "--hash", input])
    let maps = "/proc/\(process.processIdentifier)/maps"
    let mapped = Self.wait(for: process) {
      (try? String(contentsOfFile: maps, encoding: .utf8))?.contains(input) ?? false
    }
    #expect(mapped, "the input was never mapped")
    // Stop the reader so the truncation lands while it still has most of the file to read.
    kill(process.processIdentifier, SIGSTOP)
    #expect(truncate(input, 1 << 20) == 0)
    kill(process.processIdentifier, SIGCONT)
    let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationReason == .exit, "killed by signal \(process.terminationStatus): \(message)")
    #expect(process.terminationStatus == 3, "\(message)")
    #expect(message.contains("input.safetensors") && message.contains("changed while it was being read"), "\(message)")
  }
}
