import Foundation
import Testing
import TestSupport

@testable import SafeTensors

/// Injected I/O failures: the destination keeps its old content (or stays absent), no temporary
/// file is left behind, and the error names the file and the failed step.
@Suite struct WriterFaultTests {
  static let payload: [Float] = Array(repeating: 1.5, count: 1 << 20)  // 4 MiB

  func entries() -> [TensorEntry] {
    [TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [Self.payload.count])) { try $0.write(contentsOf: Self.payload) }]
  }

  func leftovers(in directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".partial") }
  }

  @Test(arguments: ["write", "fsync", "rename"])
  func failureKeepsOldFile(step: String) throws {
    let directory = TestPaths.temporaryDirectory("fault")
    let path = directory + "/out.safetensors"
    try SafeTensorsWriter.write(to: path, entries: [], metadata: ["old": "yes"])
    let before = try #require(FileManager.default.contents(atPath: path))
    var faults = AtomicFile.Faults()
    switch step {
    case "write": faults.write = { written in written > 1 << 20 ? ENOSPC : nil }  // disk full mid-way
    case "fsync": faults.fsync = { EIO }
    default: faults.rename = { EXDEV }
    }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    do {
      try SafeTensorsWriter.write(to: path, entries: entries(), metadata: nil)
      Issue.record("the injected \(step) failure was not reported")
    } catch let error as SafeTensorsError {
      #expect(error.isIOFailure)
      #expect(error.description.contains(path) && error.description.contains(step), "\(error)")
    }
    #expect(FileManager.default.contents(atPath: path) == before)
    #expect(leftovers(in: directory).isEmpty)
  }

  @Test func failureLeavesNoNewFile() throws {
    let directory = TestPaths.temporaryDirectory("fault")
    let path = directory + "/new.safetensors"
    var faults = AtomicFile.Faults()
    faults.write = { _ in ENOSPC }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    #expect(throws: SafeTensorsError.self) { try SafeTensorsWriter.write(to: path, entries: entries(), metadata: nil) }
    #expect(!FileManager.default.fileExists(atPath: path))
    #expect(leftovers(in: directory).isEmpty)
  }

  @Test func producerErrorLeavesNothing() throws {
    struct Boom: Error {}
    let directory = TestPaths.temporaryDirectory("fault")
    let path = directory + "/p.safetensors"
    let entry = TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) { _ in throw Boom() }
    #expect(throws: Boom.self) { try SafeTensorsWriter.write(to: path, entries: [entry], metadata: nil) }
    #expect(!FileManager.default.fileExists(atPath: path))
    #expect(leftovers(in: directory).isEmpty)
  }

  @Test func shortProducerIsRejected() throws {
    let directory = TestPaths.temporaryDirectory("fault")
    let path = directory + "/short.safetensors"
    let entry = TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) { try $0.write(contentsOf: [Float(1)]) }
    #expect(throws: SafeTensorsError.producerSizeMismatch(file: path, tensor: "w", expected: 16, written: 4)) {
      try SafeTensorsWriter.write(to: path, entries: [entry], metadata: nil)
    }
    #expect(leftovers(in: directory).isEmpty)
  }
}
