import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import TorchImport

/// The import against `torch.load(weights_only=True)` + `safetensors.torch.save_file`
/// (Fixtures/torch, made by Scripts/fixtures/make_torch_fixtures.py): same names, dtypes, shapes
/// and bytes, for every dtype, strided and shared views, SD-style nesting, legacy and zip64 files.
@Suite struct TorchImportTests {
  static func golden() throws -> [String: [String]] {
    let data = try #require(FileManager.default.contents(atPath: TestPaths.fixture("torch/index.json")))
    return try JSONDecoder().decode([String: [String]].self, from: data)
  }

  /// Imports `name` and compares it with `golden`, tensor for tensor, byte for byte.
  @discardableResult
  static func importAndCompare(_ name: String, golden: String, keepEMA: Bool = false) throws -> TorchImportReport {
    let directory = TestPaths.temporaryDirectory("torch-import")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let output = directory + "/out.safetensors"
    let report = try TorchImporter.convert(input: TestPaths.fixture("torch/" + name), output: output, keepEMA: keepEMA)
    let ours = try SafeTensorsFile(path: output)
    let reference = try SafeTensorsFile(path: TestPaths.fixture("torch/" + golden))
    #expect(Set(ours.tensors.map(\.name)) == Set(reference.tensors.map(\.name)), "\(name): names differ")
    for expected in reference.tensors {
      let actual = try #require(ours.info(expected.name), "\(name): missing \(expected.name)")
      #expect(actual.dtype == expected.dtype, "\(name) \(expected.name): dtype \(actual.dtype) vs \(expected.dtype)")
      #expect(actual.shape == expected.shape, "\(name) \(expected.name): shape \(actual.shape) vs \(expected.shape)")
      #expect(Array(ours.data(actual)) == Array(reference.data(expected)), "\(name) \(expected.name): bytes differ")
    }
    #expect(report.tensorsWritten == reference.tensors.count)
    return report
  }

  @Test func everyFixtureEqualsTorchLoad() throws {
    let golden = try Self.golden()
    #expect(golden.count >= 7)
    for name in golden.keys.sorted() {
      try Self.importAndCompare(name, golden: name + ".golden.safetensors")
    }
  }

  @Test func everyDTypeTorchCanStore() throws {
    let checkpoint = try TorchCheckpoint(path: TestPaths.fixture("torch/every-dtype.ckpt"))
    let dtypes = Set(checkpoint.tensors.map(\.dtype))
    // Every dtype with a safetensors equivalent (complex128 and complex32 have none: see below).
    #expect(dtypes == Set(TorchDType.allCases.filter { $0.safeTensors != nil }))
  }

  @Test func viewsAreMadeContiguousAndSharedStoragesCopied() throws {
    let report = try Self.importAndCompare("views.pt", golden: "views.pt.golden.safetensors")
    // transposed, column_slice, stepped, shared_c, expanded, half_transposed, bf16_permuted, fp8_sliced, bool_strided
    #expect(report.tensorsMadeContiguous == 9)
    let zip64 = try TorchCheckpoint(path: TestPaths.fixture("torch/views-zip64.pt"))
    #expect(zip64.tensors.count == 13)
  }

  @Test func sdNestingDropsEMAAndTrainingStateUnlessAsked() throws {
    let report = try Self.importAndCompare("sd-nested.ckpt", golden: "sd-nested.ckpt.golden.safetensors")
    #expect(report.emaTensorsDropped == 3)
    #expect(report.trainingStateTensorsDropped == 2)  // optimizer exp_avg, callbacks EMA state
    #expect(report.scalars["global_step"] == "470000")
    #expect(report.scalars["pytorch-lightning_version"] == "1.4.2")
    let kept = try Self.importAndCompare("sd-nested.ckpt", golden: "sd-nested.ckpt.keep-ema.safetensors", keepEMA: true)
    #expect(kept.emaTensorsDropped == 0)
  }

  @Test func dtypesWithoutASafetensorsEquivalentAreNamed() throws {
    let directory = TestPaths.temporaryDirectory("torch-import")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let output = directory + "/out.safetensors"
    #expect {
      try TorchImporter.convert(input: TestPaths.fixture("torch/complex128.pt"), output: output)
    } throws: { "\($0)".contains("'c128': complex128 has no safetensors dtype") }
    #expect(!FileManager.default.fileExists(atPath: output))
  }

  @Test func infoReportsTheModelNotItsTrainingState() throws {
    let report = try TorchImporter.inspect(path: TestPaths.fixture("torch/sd-nested.ckpt"))
    #expect(report.format == "pytorch-zip")
    #expect(report.tensorCount == 8)  // 5 model + 3 EMA, not the optimizer's
    #expect(report.metadata["global_step"] == "470000")
    #expect(report.anomalies.contains { $0.code == "ema-weights" && $0.message.hasPrefix("3 EMA") })
    #expect(report.anomalies.contains { $0.code == "training-state" && $0.message.hasPrefix("2 ") })
  }

  /// A download corrupted in place (same length): the CRC-32 torch records catches it, in the
  /// pickle when the file opens, in a storage before its bytes are written.
  @Test func corruptedEntriesFailTheirChecksum() throws {
    #expect(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926)
    let original = [UInt8](
      try #require(FileManager.default.contents(atPath: TestPaths.fixture("torch/sd-nested.ckpt"))))
    let directory = TestPaths.temporaryDirectory("torch-crc")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/corrupt.ckpt"
    let clean = try TorchCheckpoint(path: TestPaths.fixture("torch/sd-nested.ckpt"))
    let storage = try #require(clean.tensors.first { $0.name == "model.diffusion_model.input_blocks.0.0.weight" })
    let storageOffset = clean.storageBytes(storage).baseAddress! - clean.mapping.bytes(offset: 0, count: 1).baseAddress!

    var bytes = original
    bytes[storageOffset + 5] ^= 0x40
    #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    let checkpoint = try TorchCheckpoint(path: path)  // opens: storages are checked when used
    #expect(checkpoint.tensors.count == clean.tensors.count)
    #expect {
      try TorchImporter.convert(input: path, output: directory + "/out.safetensors")
    } throws: { "\($0)".contains("fails its CRC-32 check") && "\($0)".contains("the file is corrupted") }
    #expect(!FileManager.default.fileExists(atPath: directory + "/out.safetensors"))

    bytes = original
    let pickle = try #require(
      (0..<(bytes.count - 8)).first { bytes[$0..<($0 + 8)].elementsEqual(Array("data.pkl".utf8)) })
    bytes[pickle + 8 + 40] ^= 0x01  // a byte inside the pickle (the local header is 30 bytes + name + padding)
    #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    #expect(throws: TorchImportError.self) { try TorchCheckpoint(path: path) }
  }

  // MARK: - Hostile input

  @Test func everyHostileFileIsRefusedByName() throws {
    let path = TestPaths.fixture("torch/hostile/expected.json")
    let corpus = try JSONDecoder().decode(
      [String: String].self, from: try #require(FileManager.default.contents(atPath: path)))
    #expect(corpus.count >= 40)
    for (name, fragment) in corpus.sorted(by: { $0.key < $1.key }) {
      let file = TestPaths.fixture("torch/hostile/" + name)
      if name.hasPrefix("control-") {
        #expect(try TorchCheckpoint(path: file).tensors.count == 1)
        continue
      }
      do {
        let checkpoint = try TorchCheckpoint(path: file)
        // A few are well-formed pickles without tensors: they open with nothing to import.
        #expect(fragment.isEmpty && checkpoint.tensors.isEmpty, "\(name) was accepted")
      } catch let error as TorchImportError {
        #expect("\(error)".contains(fragment), "\(name): '\(fragment)' not in \(error)")
        #expect("\(error)".hasPrefix(file), "\(name): the message does not start with the file")
      } catch {
        Issue.record("\(name): untyped error \(error)")
      }
    }
  }

  @Test func refusedGlobalsAreNamedBeforeAnythingCouldRun() throws {
    for (module, name) in [
      ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
      ("subprocess", "Popen"), ("torch", "load"), ("torch", "Tensor"), ("__builtin__", "getattr"),
      ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("collections", "defaultdict"),
    ] {
      #expect(PickleGlobal.resolve(module: module, name: name) == nil, "\(module).\(name) is allowed")
    }
    #expect(PickleGlobal.resolve(module: "torch", name: "BFloat16Storage") == .storageType(.bfloat16))
    #expect(PickleGlobal.resolve(module: "torch", name: "float8_e4m3fn") == .dtype(.float8_e4m3fn))
  }

  /// A million lists, each inside the previous one, built through the memo: refused when the tree
  /// is walked, and freed without recursion (a recursive free this deep overflows the stack).
  @Test func millionDeepListChainIsRefusedAndFreedIteratively() throws {
    var bytes: [UInt8] = [0x80, 0x02, 0x7D] + [0x58, 1, 0, 0, 0, 0x61] + [0x5D, 0x72, 1, 0, 0, 0] + [0x73]
    for index in UInt32(1)..<1_000_000 {
      bytes.append(0x6A)
      withUnsafeBytes(of: index.littleEndian) { bytes.append(contentsOf: $0) }
      bytes += [0x5D, 0x72]
      withUnsafeBytes(of: (index + 1).littleEndian) { bytes.append(contentsOf: $0) }
      bytes += [0x61, 0x30]
    }
    bytes.append(0x2E)
    var machine = PickleMachine(file: "chain")
    defer { machine.tearDown() }
    let (value, _) = try bytes.withUnsafeBytes { try machine.run($0) }
    #expect {
      try TorchCheckpoint.flatten(value, file: "chain")
    } throws: { "\($0)".contains("nested more than 32") }
  }

  @Test func memoAndStackBombsHitTheirLimits() throws {
    var bytes: [UInt8] = [0x80, 0x02]
    bytes += [UInt8](repeating: 0x4E, count: PickleMachine.maximumStack + 1)  // NONE × (limit + 1)
    bytes.append(0x2E)
    var machine = PickleMachine(file: "bomb")
    defer { machine.tearDown() }
    #expect {
      try bytes.withUnsafeBytes { try machine.run($0) }
    } throws: { "\($0)".contains("stack passed") }
  }

  /// Random mutations of a real checkpoint end in a checkpoint or a typed error, never a trap.
  @Test func mutatedCheckpointsNeverCrash() throws {
    let original = try #require(FileManager.default.contents(atPath: TestPaths.fixture("torch/sd-nested.ckpt")))
    let directory = TestPaths.temporaryDirectory("torch-mutations")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var generator = SystemRandomNumberGenerator()
    var opened = 0
    for round in 0..<300 {
      var bytes = [UInt8](original)
      for _ in 0..<(1 + round % 4) {
        let position = Int.random(in: 0..<bytes.count, using: &generator)
        bytes[position] =
          round % 3 == 0 ? [0x00, 0xFF, 0x7F, 0x80][round % 4] : UInt8.random(in: 0...255, using: &generator)
      }
      if round % 10 == 0 { bytes.removeLast(Int.random(in: 1..<bytes.count, using: &generator)) }
      let path = directory + "/m\(round).ckpt"
      #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
      do {
        let checkpoint = try TorchCheckpoint(path: path)
        for tensor in checkpoint.tensors where tensor.role == .model {
          _ = checkpoint.storageBytes(tensor)
        }
        opened += 1
      } catch is TorchImportError {
      } catch is SafeTensorsError {
      }
    }
    #expect(opened > 0)
  }
}
