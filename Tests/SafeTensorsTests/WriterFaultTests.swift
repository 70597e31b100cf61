import Foundation
import TestSupport
import Testing

@testable import SafeTensors

/// Injected I/O failures: the destination keeps its old content (or stays absent), no temporary
/// file is left behind, and the error names the file and the failed step.
@Suite struct WriterFaultTests {
  static let payload: [Float] = Array(repeating: 1.5, count: 1 << 20)  // 4 MiB

  func entries() -> [TensorEntry] {
    [
      TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [Self.payload.count])) {
        try $0.write(contentsOf: Self.payload)
      }
    ]
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
    let entry = TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) {
      try $0.write(contentsOf: [Float(1)])
    }
    #expect(throws: SafeTensorsError.producerSizeMismatch(file: path, tensor: "w", expected: 16, written: 4)) {
      try SafeTensorsWriter.write(to: path, entries: [entry], metadata: nil)
    }
    #expect(leftovers(in: directory).isEmpty)
  }
}

/// A thread-safe counter for stateful fault hooks.
final class FaultCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var value = 0
  func next() -> Int {
    lock.lock()
    defer { lock.unlock() }
    value += 1
    return value
  }
}

/// The writer's own checks and the parts of the I/O path that must be invisible when they work.
@Suite struct WriterEdgeTests {
  static let payload: [Float] = (0..<(3 << 20)).map { Float($0 % 251) }  // 12 MiB: past the buffer

  func entries() -> [TensorEntry] {
    [
      TensorEntry(spec: TensorSpec(name: "big", dtype: .f32, shape: [Self.payload.count])) {
        try $0.write(contentsOf: Self.payload)
      },
      TensorEntry(spec: TensorSpec(name: "small", dtype: .i64, shape: [3])) {
        try $0.write(contentsOf: [Int64(1), 2, 3])
      },
    ]
  }

  func leftovers(in directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".partial") }
  }

  /// Short writes (as pipes, signals and network file systems produce) and EINTR are retried:
  /// the file is byte-identical to one written without them.
  @Test func shortWritesAndEINTRAreInvisible() throws {
    let directory = TestPaths.temporaryDirectory("short")
    let reference = directory + "/reference.safetensors"
    try SafeTensorsWriter.write(to: reference, entries: entries(), metadata: ["a": "b"])
    let path = directory + "/short.safetensors"
    var faults = AtomicFile.Faults()
    faults.shortWrite = { requested in min(requested, 4093) }  // odd sizes, never page-aligned
    let calls = FaultCounter()
    faults.write = { _ in calls.next() % 7 == 0 ? EINTR : nil }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    try SafeTensorsWriter.write(to: path, entries: entries(), metadata: ["a": "b"])
    #expect(calls.next() > 3000)  // the hooks really ran, thousands of short writes
    #expect(FileManager.default.contents(atPath: path) == FileManager.default.contents(atPath: reference))
    #expect(leftovers(in: directory).isEmpty)
  }

  /// Direct I/O (the bake's writes): odd-sized tensors larger and smaller than the staging buffer,
  /// a header patched at the end, and short writes that force the buffered fallback, all give the
  /// same bytes as a buffered write.
  @Test func directWritesGiveTheSameFile() throws {
    let directory = TestPaths.temporaryDirectory("direct")
    let big = (0..<(5 << 20) + 3).map { Float($0 % 977) }  // 20 MiB + 12 bytes: 2½ staging buffers
    let odd = (0..<12345).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let entries = [
      TensorEntry(spec: TensorSpec(name: "big", dtype: .f32, shape: [big.count])) { try $0.write(contentsOf: big) },
      TensorEntry(spec: TensorSpec(name: "odd", dtype: .u8, shape: [odd.count])) { try $0.write(contentsOf: odd) },
      TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [Self.payload.count])) {
        try $0.write(contentsOf: Self.payload)
      },
    ]
    let metadata = ["hash": "0000000000"]
    func write(_ name: String, direct: Bool, faults: AtomicFile.Faults? = nil) throws -> Data? {
      let path = directory + "/\(name).safetensors"
      AtomicFile.injectFaults(faults, forDestination: path)
      defer { AtomicFile.injectFaults(nil, forDestination: path) }
      try SafeTensorsWriter.write(
        to: path, entries: entries, metadata: metadata, directIO: direct, finalMetadata: { ["hash": "1234567890"] })
      return FileManager.default.contents(atPath: path)
    }
    let reference = try #require(try write("buffered", direct: false))
    #expect(try write("direct", direct: true) == reference)
    var faults = AtomicFile.Faults()
    faults.shortWrite = { requested in requested > 4 << 20 ? requested - 4093 : requested }
    #expect(try write("direct-short", direct: true, faults: faults) == reference)
    #expect(leftovers(in: directory).isEmpty)
    #if os(Linux)
      // On ext4 (which takes O_DIRECT) the flag is really set and whole buffers keep it.
      let file = try AtomicFile(destination: directory + "/probe.safetensors", directIO: true)
      let probe = Process()
      let pipe = Pipe()
      probe.executableURL = URL(fileURLWithPath: "/usr/bin/stat")
      probe.arguments = ["-f", "-c", "%T", directory]
      probe.standardOutput = pipe
      try probe.run()
      probe.waitUntilExit()
      let type = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      let ext4 = type.hasPrefix("ext2/ext3")  // how stat names ext4 too
      let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 4096)
      defer { aligned.deallocate() }
      aligned.initializeMemory(as: UInt8.self, repeating: 7)
      try file.write(UnsafeRawBufferPointer(aligned))
      try file.write(UnsafeRawBufferPointer(aligned))
      if ext4 { #expect(file.direct) }
      try file.commit()
      #expect(FileManager.default.contents(atPath: directory + "/probe.safetensors")?.count == 16 << 20)
    #endif
  }

  /// Disk full after a partial write of the big tensor's bytes straight from the producer's
  /// buffer (not through the 8 MiB staging buffer).
  @Test func diskFullDuringADirectWrite() throws {
    let directory = TestPaths.temporaryDirectory("enospc")
    let path = directory + "/full.safetensors"
    var faults = AtomicFile.Faults()
    faults.shortWrite = { requested in min(requested, 1 << 20) }
    faults.write = { written in written > 4 << 20 ? ENOSPC : nil }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    #expect {
      try SafeTensorsWriter.write(to: path, entries: entries(), metadata: nil)
    } throws: { error in
      (error as? SafeTensorsError)?.description == "\(path): write failed: No space left on device"
    }
    #expect(!FileManager.default.fileExists(atPath: path))
    #expect(leftovers(in: directory).isEmpty)
  }

  @Test func producerWritingTooMuchIsStoppedAtOnce() throws {
    let directory = TestPaths.temporaryDirectory("long")
    let path = directory + "/long.safetensors"
    let entry = TensorEntry(spec: TensorSpec(name: "w", dtype: .f32, shape: [4])) { sink in
      try sink.write(contentsOf: [Float](repeating: 1, count: 3))
      try sink.write(contentsOf: [Float](repeating: 1, count: 3))  // 24 bytes of 16: refused here
      Issue.record("the second write should have thrown")
    }
    #expect(throws: SafeTensorsError.producerSizeMismatch(file: path, tensor: "w", expected: 16, written: 24)) {
      try SafeTensorsWriter.write(to: path, entries: [entry], metadata: nil)
    }
    #expect(!FileManager.default.fileExists(atPath: path))
    #expect(leftovers(in: directory).isEmpty)
  }

  /// Entries that cannot be written are refused before any file is created; sizes are computed
  /// with overflow checks, never trapping.
  @Test(arguments: [
    ([TensorSpec(name: "w", dtype: .f32, shape: [-1])], "negative dimension"),
    ([TensorSpec(name: "w", dtype: .f32, shape: [Int.max, 2])], "element count overflow"),
    ([TensorSpec(name: "w", dtype: .f64, shape: [1 << 60])], "bit count overflow"),
    (
      [TensorSpec(name: "w", dtype: .u8, shape: [Int.max]), TensorSpec(name: "v", dtype: .u8, shape: [Int.max])],
      "total overflow"
    ),
    ([TensorSpec(name: "w", dtype: .f4, shape: [3])], "sub-byte misaligned"),
    ([TensorSpec(name: "w", dtype: .f32, shape: [1]), TensorSpec(name: "w", dtype: .f16, shape: [1])], "duplicate"),
    ([TensorSpec(name: "", dtype: .f32, shape: [1])], "empty name"),
    ([TensorSpec(name: "__metadata__", dtype: .f32, shape: [1])], "reserved name"),
  ])
  func invalidEntriesAreRefusedUpFront(specs: [TensorSpec], what: String) throws {
    let directory = TestPaths.temporaryDirectory("invalid")
    let path = directory + "/x.safetensors"
    let entries = specs.map { spec in
      TensorEntry(spec: spec) { _ in Issue.record("\(what): a producer ran") }
    }
    #expect(throws: SafeTensorsError.self, "\(what)") {
      try SafeTensorsWriter.write(to: path, entries: entries, metadata: nil)
    }
    #expect(((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).isEmpty)
    #expect(specs.allSatisfy { $0.checkedByteCount == nil || $0.checkedByteCount! >= 0 })
  }

  @Test func checkedByteCounts() {
    #expect(TensorSpec(name: "a", dtype: .f4, shape: [2, 3]).checkedByteCount == 3)
    #expect(TensorSpec(name: "a", dtype: .f6e2m3, shape: [4]).checkedByteCount == 3)
    #expect(TensorSpec(name: "a", dtype: .bf16, shape: []).checkedByteCount == 2)
    #expect(TensorSpec(name: "a", dtype: .f32, shape: [0, Int.max]).checkedByteCount == 0)
    #expect(TensorSpec(name: "a", dtype: .f32, shape: [Int.max, 2, 0]).checkedByteCount == nil)
    #expect(TensorSpec(name: "a", dtype: .u8, shape: [-2, -2]).checkedByteCount == nil)
  }

  @Test func refusesADirectoryAsDestination() throws {
    let directory = TestPaths.temporaryDirectory("dirdest")
    #expect(throws: SafeTensorsError.io(file: directory, operation: "write over a directory", errno: EISDIR)) {
      try SafeTensorsWriter.write(to: directory, entries: [], metadata: nil)
    }
  }

  /// The output is refused when it is an input under another name: a hard link or a symlink.
  @Test func refusesInputsUnderOtherNames() throws {
    let directory = TestPaths.temporaryDirectory("alias")
    let input = directory + "/in.safetensors"
    try SafeTensorsWriter.write(to: input, entries: entries(), metadata: nil)
    let before = FileManager.default.contents(atPath: input)
    #expect(link(input, directory + "/hard.safetensors") == 0)
    #expect(symlink(input, directory + "/soft.safetensors") == 0)
    for output in [directory + "/hard.safetensors", directory + "/soft.safetensors", directory + "/./in.safetensors"] {
      #expect(throws: SafeTensorsError.outputIsInput(output: output, input: input)) {
        try SafeTensorsWriter.write(to: output, entries: [], metadata: nil, inputs: [input])
      }
    }
    #expect(FileManager.default.contents(atPath: input) == before)
  }

  @Test func misuseAfterCommitIsAnError() throws {
    let directory = TestPaths.temporaryDirectory("misuse")
    let file = try AtomicFile(destination: directory + "/a")
    try file.write([1, 2, 3])
    try file.commit()
    #expect(throws: SafeTensorsError.self) { try file.write([4]) }
    #expect(throws: SafeTensorsError.self) { try file.commit() }
    file.abandon()  // after a commit: must not remove the committed file
    #expect(FileManager.default.contents(atPath: directory + "/a") == Data([1, 2, 3]))
  }

  @Test func temporaryNamesStayBesideTheDestination() {
    #expect(AtomicFile.temporaryNameParts("/x.safetensors") == ("/", ".x.safetensors."))
    #expect(AtomicFile.temporaryNameParts("x.safetensors") == ("", ".x.safetensors."))
    #expect(AtomicFile.temporaryNameParts("a/b/x") == ("a/b/", ".x."))
    let long = String(repeating: "é", count: 150)  // 300 bytes: must be cut on a character
    let (_, stem) = AtomicFile.temporaryNameParts("/d/" + long)
    #expect(stem == "." + String(repeating: "é", count: 100) + ".")
    let (_, cut) = AtomicFile.temporaryNameParts("/d/x" + long)  // byte 200 is mid-character
    #expect(cut == ".x" + String(repeating: "é", count: 99) + ".")
  }

  @Test func writesWithLongNames() throws {
    let directory = TestPaths.temporaryDirectory("long-name")
    let path = directory + "/" + String(repeating: "n", count: 250) + ".st"  // 253-byte name
    try SafeTensorsWriter.write(to: path, entries: entries(), metadata: nil)
    #expect(try SafeTensorsFile(path: path).tensors.count == 2)
    #expect(leftovers(in: directory).isEmpty)
  }

  /// Partial files of dead writers (SIGKILL, power loss) are swept by the next write to the same
  /// destination; those of live processes and of other destinations are left alone.
  @Test func stalePartialsOfDeadWritersAreRemoved() throws {
    let directory = TestPaths.temporaryDirectory("stale")
    let path = directory + "/out.safetensors"
    let dead = directory + "/.out.safetensors.4194305.deadbeef.partial"  // above PID_MAX_LIMIT
    let live = directory + "/.out.safetensors.1.12ab.partial"  // pid 1 always exists
    let other = directory + "/.other.safetensors.4194305.deadbeef.partial"
    let odd = directory + "/.out.safetensors.notapid.partial"
    for file in [dead, live, other, odd] { #expect(FileManager.default.createFile(atPath: file, contents: Data([1]))) }
    try SafeTensorsWriter.write(to: path, entries: [], metadata: nil)
    #expect(!FileManager.default.fileExists(atPath: dead))
    for file in [live, other, odd] { #expect(FileManager.default.fileExists(atPath: file)) }
  }

  @Test func metadataNilAndEmptyDiffer() throws {
    let specs = [TensorSpec(name: "a", dtype: .f32, shape: [1])]
    let none = String(decoding: SafeTensorsWriter.headerBytes(ordered: specs, metadata: nil), as: UTF8.self)
    let empty = String(decoding: SafeTensorsWriter.headerBytes(ordered: specs, metadata: [:]), as: UTF8.self)
    #expect(none == #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  "#)
    #expect(empty == #"{"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#)
  }

  /// File order: dtype descending in the format's declaration order, then names bytewise (so
  /// "B" < "a" < "é", unlike Swift's String ordering).
  @Test func fileOrderMatchesSafetensorsRs() {
    let specs = DType.allCases.map { TensorSpec(name: $0.rawValue, dtype: $0, shape: [0]) }
    #expect(SafeTensorsWriter.fileOrder(specs.shuffled()).map(\.dtype) == DType.allCases.reversed())
    let names = ["é", "a", "B", "a.b", "a_b", "A", "a0"]
    let ordered = SafeTensorsWriter.fileOrder(names.map { TensorSpec(name: $0, dtype: .f16, shape: [1]) }).map(\.name)
    #expect(ordered == ["A", "B", "a", "a.b", "a0", "a_b", "é"])
  }

  /// serde_json escaping: only `"`, `\` and C0 controls (short forms where JSON has them,
  /// otherwise \u00XX in lowercase hex); DEL, `/` and U+2028 verbatim.
  @Test func quotingMatchesSerdeJSON() {
    #expect(JSONText.quoted("a\"b\\c/d") == #""a\"b\\c/d""#)
    #expect(JSONText.quoted("\u{08}\u{0C}\n\r\t") == #""\b\f\n\r\t""#)
    #expect(JSONText.quoted("\u{00}\u{01}\u{1f}\u{7f}\u{2028}é") == "\"\\u0000\\u0001\\u001f\u{7f}\u{2028}é\"")
  }
}
