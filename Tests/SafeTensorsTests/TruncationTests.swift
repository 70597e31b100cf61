import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// A file truncated by another program while we hold it mapped: touching the lost pages raises
/// SIGBUS. MapGuard turns that into zero pages plus a mark, and every consumer turns the mark
/// into `SafeTensorsError.fileChanged` instead of dying or using wrong bytes.
@Suite struct TruncationTests {
  static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

  /// Writes one F32 tensor of `count` ones (bytes 0x3f800000) and returns the path.
  func makeFile(_ label: String, count: Int) throws -> String {
    let path = TestPaths.temporaryDirectory(label) + "/in.safetensors"
    let ones = [Float](repeating: 1, count: count)
    try SafeTensorsWriter.write(
      to: path,
      entries: [
        TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [count])) { try $0.write(contentsOf: ones) }
      ],
      metadata: nil)
    return path
  }

  @Test func readingPagesOfATruncatedFileDoesNotCrash() throws {
    let path = try makeFile("sigbus-read", count: 64 * 1024)  // 256 KiB of data
    let file = try SafeTensorsFile(path: path)
    let info = try #require(file.info("w"))
    let keep = file.dataOffset + 2 * Self.page
    #expect(truncate(path, off_t(keep)) == 0)

    // Without the guard this loop dies of SIGBUS on the third page.
    let floats = file.data(info).bindMemory(to: Float.self)
    var ones = 0
    var zeros = 0
    for value in floats {
      if value == 1 { ones += 1 } else if value == 0 { zeros += 1 }
    }
    #expect(ones + zeros == floats.count)
    #expect(ones >= (2 * Self.page - file.dataOffset) / 4 && ones < floats.count)
    #expect(file.mapping.isDamaged)
    #expect(MappedFile.damagedPaths.contains(path))
    #expect {
      try file.checkIntact()
    } throws: { error in
      guard case .fileChanged(let name, _)? = error as? SafeTensorsError else { return false }
      return name == path && (error as? SafeTensorsError)?.isIOFailure == true
    }
  }

  @Test func shrinkingIsNoticedBeforeAnyPageIsTouched() throws {
    let path = try makeFile("shrink", count: 1024)
    let file = try SafeTensorsFile(path: path)
    try file.checkIntact()
    #expect(truncate(path, off_t(file.dataOffset)) == 0)
    #expect(!file.mapping.isDamaged)
    #expect(throws: SafeTensorsError.self) { try file.checkIntact() }
    #expect(throws: SafeTensorsError.self) { try MappedFile.checkIntact(paths: [path]) }
  }

  /// Copying a tensor out of a truncated input through the writer's buffer (small tensors) and
  /// straight from the map with write(2) (tensors larger than the 8 MiB buffer, where the kernel
  /// reports EFAULT instead of raising SIGBUS): the output is never committed.
  @Test(arguments: [16 * 1024, 3 * 1024 * 1024])
  func writerRefusesOutputMadeFromATruncatedInput(count: Int) throws {
    let input = try makeFile("sigbus-copy", count: count)
    let source = try SafeTensorsFile(path: input)
    let info = try #require(source.info("w"))
    let directory = TestPaths.temporaryDirectory("sigbus-out")
    let output = directory + "/out.safetensors"
    let entry = TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: info.shape)) { sink in
      // The input shrinks just before its bytes are copied.
      #expect(truncate(input, off_t(source.dataOffset + Self.page)) == 0)
      try sink.write(source.data(info))
    }
    #expect {
      try SafeTensorsWriter.write(to: output, entries: [entry], metadata: nil, inputs: [input])
    } throws: { error in
      guard case .fileChanged(let name, _)? = error as? SafeTensorsError else { return false }
      return name == input
    }
    #expect(!FileManager.default.fileExists(atPath: output))
    #expect(((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).isEmpty)
  }

  @Test func headerOfAFileTruncatedAfterMappingIsNotAFormatError() throws {
    // Truncated between mmap and parse: reported as a changed file, not as bad JSON.
    let path = try makeFile("sigbus-header", count: 8 * 1024)
    let mapping = try MappedFile(path: path)
    #expect(truncate(path, 0) == 0)
    let prefix = mapping.bytes(offset: 0, count: 8)
    #expect(prefix.allSatisfy { $0 == 0 })
    #expect(mapping.isDamaged)
    #expect(throws: SafeTensorsError.self) { try mapping.checkIntact() }
  }

  @Test func releasedMapsLeaveTheRegistry() throws {
    let path = try makeFile("registry", count: 16)
    for _ in 0..<2000 {  // more than the 1024 guard slots: slots must be reused
      let file = try SafeTensorsFile(path: path)
      #expect(!file.mapping.isDamaged)
    }
    #expect(!MapGuard.liveMappings().contains { $0.path == path })
    let file = try SafeTensorsFile(path: path)
    #expect(MapGuard.liveMappings().contains { $0 === file.mapping })
  }

  @Test func checkedBytesRefusesRangesOutsideTheFile() throws {
    let path = try makeFile("checked", count: 4)
    let mapping = try MappedFile(path: path)
    #expect(try mapping.checkedBytes(offset: 0, count: mapping.size).count == mapping.size)
    #expect(try mapping.checkedBytes(offset: mapping.size, count: 0).count == 0)
    for (offset, count) in [(-1, 1), (0, mapping.size + 1), (mapping.size, 1), (Int.max, Int.max), (1, Int.max)] {
      #expect(throws: SafeTensorsError.self) { try mapping.checkedBytes(offset: offset, count: count) }
    }
    // advise never fails, whatever the range.
    mapping.advise(offset: Int.max - 1, count: Int.max, willNeed: true)
    mapping.advise(offset: 1, count: Int.max, willNeed: false)
  }

  /// The guard only serves its own maps: any other SIGBUS still kills the process as before (the
  /// handler hands it to the previous disposition). Run in a child process: this test binary again,
  /// with only this test selected.
  @Test func faultsOutsideGuardedMapsStillKill() throws {
    if ProcessInfo.processInfo.environment["ROUWEI_FOREIGN_SIGBUS"] == "child" {
      let path = try makeFile("foreign", count: 256 * 1024)
      let guarded = try MappedFile(path: path)  // installs the handler
      let fd = open(path, O_RDONLY)
      let raw = try #require(mmap(nil, guarded.size, PROT_READ, MAP_PRIVATE, fd, 0))
      #expect(truncate(path, 0) == 0)
      FileHandle.standardError.write(Data("armed\n".utf8))
      let byte = raw.load(fromByteOffset: 65536, as: UInt8.self)  // not ours: SIGBUS kills us
      FileHandle.standardError.write(Data("survived \(byte)\n".utf8))
      exit(99)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try #require(Bundle.main.executablePath))
    process.arguments = [
      "--testing-library", "swift-testing", "--filter", "TruncationTests/faultsOutsideGuardedMapsStillKill",
    ]
    var environment = ProcessInfo.processInfo.environment
    environment["ROUWEI_FOREIGN_SIGBUS"] = "child"
    environment["SWIFT_BACKTRACE"] = "enable=no"
    process.environment = environment
    process.standardOutput = FileHandle.nullDevice
    let err = Pipe()
    process.standardError = err
    try process.run()
    let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(output.contains("armed") && !output.contains("survived"), "\(output)")
    // Killed by SIGBUS; under AddressSanitizer (whose handler came first) its report and exit 1.
    let killed = process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGBUS
    let sanitizer = process.terminationReason == .exit && output.contains("AddressSanitizer")
    #expect(killed || sanitizer, "child ended with status \(process.terminationStatus): \(output.suffix(500))")
  }
}
