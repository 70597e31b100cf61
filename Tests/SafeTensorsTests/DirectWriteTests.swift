import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// The bake's write path: direct I/O with several writes in flight, bytes written from the
/// producer's own page-aligned memory, and a header padded so the data starts on a page.
@Suite struct DirectWriteTests {
  /// A page-aligned buffer holding `count` bytes at `lead` bytes past its start.
  final class Aligned: @unchecked Sendable {
    let memory: UnsafeMutableRawBufferPointer
    let lead: Int
    let count: Int
    init(lead: Int, count: Int, seed: UInt8) {
      memory = .allocate(byteCount: lead + count, alignment: AtomicFile.pageSize)
      self.lead = lead
      self.count = count
      for i in 0..<count { memory[lead + i] = UInt8(truncatingIfNeeded: i &* 7 &+ Int(seed)) }
    }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: memory[lead..<(lead + count)]) }
    deinit { memory.deallocate() }
  }

  /// Counts `release` calls.
  final class Releases: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    func release(_ name: String) {
      lock.lock()
      counts[name, default: 0] += 1
      lock.unlock()
    }
    var snapshot: [String: Int] {
      lock.lock()
      defer { lock.unlock() }
      return counts
    }
  }

  /// How many injected-write hooks run at once (each holds on for a moment).
  final class Overlap: @unchecked Sendable {
    private let lock = NSLock()
    private var now = 0
    private(set) var most = 0
    func enter() {
      lock.lock()
      now += 1
      most = max(most, now)
      lock.unlock()
      usleep(20_000)  // long enough for the next write to be queued
      lock.lock()
      now -= 1
      lock.unlock()
    }
  }

  /// Tensors of odd sizes; the big ones are handed over with `release` from memory that lines up
  /// with the file when `aligned` (their page offset in the file is known from the sizes before
  /// them, the data starting on a page), one page off when not (then they are copied).
  func write(
    _ path: String, direct: Bool, aligned: Bool, releases: Releases, faults: AtomicFile.Faults? = nil
  ) throws {
    let sizes = [("a", 3 * 4096 + 10), ("b", 5), ("c", 9 << 20 | 6), ("d", 4097), ("e", 20 << 20)]
    var entries: [TensorEntry] = []
    var offset = 0
    for (index, (name, size)) in sizes.enumerated() {
      let lead = (offset + (aligned ? 0 : 1)) % AtomicFile.pageSize
      let buffer = Aligned(lead: lead, count: size, seed: UInt8(index))
      entries.append(
        TensorEntry(spec: TensorSpec(name: name, dtype: .u8, shape: [size])) { sink in
          try sink.write(buffer.bytes) { [buffer] in
            withExtendedLifetime(buffer) { releases.release(name) }
          }
        })
      offset += size
    }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    try SafeTensorsWriter.write(
      to: path, entries: entries, metadata: ["k": "v"], directIO: direct, dataAlignment: AtomicFile.pageSize)
  }

  @Test func alignedBuffersAreWrittenInPlaceWithTheSameBytes() throws {
    let directory = TestPaths.temporaryDirectory("direct-in-place")
    let releases = Releases()
    try write(directory + "/buffered.safetensors", direct: false, aligned: true, releases: releases)
    let reference = try #require(FileManager.default.contents(atPath: directory + "/buffered.safetensors"))
    for aligned in [true, false] {
      let path = directory + "/direct-\(aligned).safetensors"
      let overlap = Overlap()
      var faults = AtomicFile.Faults()
      faults.write = { _ in
        overlap.enter()
        return nil
      }
      try write(path, direct: true, aligned: aligned, releases: releases, faults: faults)
      #expect(FileManager.default.contents(atPath: path) == reference, "aligned \(aligned)")
      if Self.takesDirectIO(directory) {
        // Several writes at once (the 20 MiB tensor alone is two staging buffers and a page run).
        #expect(
          overlap.most > 1 && overlap.most <= AtomicFile.directWritesInFlight, "aligned \(aligned): \(overlap.most)")
      }
    }
    #expect(releases.snapshot == ["a": 3, "b": 3, "c": 3, "d": 3, "e": 3], "release is called once per write")
    // The data starts on a page: the header length and the 8 bytes before it fill whole pages.
    let length = reference.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    #expect((8 + Int(length)) % AtomicFile.pageSize == 0)
    let file = try SafeTensorsFile(path: directory + "/buffered.safetensors")
    #expect(file.metadata == ["k": "v"])
    #expect(file.tensors.map(\.name) == ["a", "b", "c", "d", "e"])
    #expect(Self.leftovers(in: directory).isEmpty)
  }

  @Test func bufferedWritesStayOneAtATime() throws {
    let directory = TestPaths.temporaryDirectory("buffered-serial")
    let overlap = Overlap()
    var faults = AtomicFile.Faults()
    faults.write = { _ in
      overlap.enter()
      return nil
    }
    try write(directory + "/out.safetensors", direct: false, aligned: true, releases: Releases(), faults: faults)
    #expect(overlap.most == 1)
  }

  /// A disk that fills up during a write from the producer's memory: the error is reported, every
  /// buffer is released once, and no partial file is left.
  @Test func diskFullDuringAnInPlaceWrite() throws {
    let directory = TestPaths.temporaryDirectory("direct-enospc")
    let path = directory + "/full.safetensors"
    let releases = Releases()
    var faults = AtomicFile.Faults()
    faults.write = { written in written > 12 << 20 ? ENOSPC : nil }
    #expect {
      try write(path, direct: true, aligned: true, releases: releases, faults: faults)
    } throws: { error in
      (error as? SafeTensorsError)?.description == "\(path): write failed: No space left on device"
    }
    #expect(releases.snapshot.values.allSatisfy { $0 == 1 })
    #expect(!FileManager.default.fileExists(atPath: path))
    #expect(Self.leftovers(in: directory).isEmpty)
  }

  static func leftovers(in directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".partial") }
  }

  static func takesDirectIO(_ directory: String) -> Bool {
    guard let file = try? AtomicFile(destination: directory + "/probe", directIO: true) else { return false }
    defer { file.abandon() }
    return file.direct
  }
}
