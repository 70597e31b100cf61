import Checkpoint
import Crypto
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// The chunked decode/encode API (`TensorDecoder`, `ChunkEncoder`, `Transcoder`) against the torch
/// and gguf-py goldens, and the GGUF reader on a file gguf-py wrote in ComfyUI-GGUF's style
/// (Scripts/fixtures/make_gguf_reader_goldens.py).
@Suite struct TensorCodecTests {
  static let ggufPath = TestPaths.fixture("codecs/comfy-style.gguf")
  static let expectedPath = TestPaths.fixture("codecs/comfy-style-expected.safetensors")

  func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
    let info = try #require(file.info(name))
    return try TensorDecoder.resolve(file: file, tensor: info).decodeAll()
  }

  @Test func ggmlTypeSizesMatchGGUFPy() throws {
    let expected = try SafeTensorsFile(path: Self.expectedPath)
    let table = Array(try expected.data(named: "type_sizes").bindMemory(to: Int64.self))
    var seen = Set<GGMLType>()
    for row in stride(from: 0, to: table.count, by: 3) {
      let type = try #require(GGMLType(rawValue: UInt32(table[row])), "ggml type \(table[row])")
      #expect(type.blockSize == Int(table[row + 1]) && type.blockBytes == Int(table[row + 2]), "\(type.name)")
      seen.insert(type)
    }
    #expect(seen == Set(GGMLType.allCases), "every type we name is in gguf-py's table")
  }

  @Test func readsComfyStyleMetadata() throws {
    let file = try GGUFFile(path: Self.ggufPath)
    #expect(file.architecture == "sdxl")
    #expect(file.version == 3 && file.alignment == 32)
    #expect(file.values["general.quantization_version"] == .uint32(2))
    #expect(file.values["test.u8"] == .uint8(200) && file.values["test.i8"] == .int8(-100))
    #expect(file.values["test.u16"] == .uint16(60000) && file.values["test.i16"] == .int16(-30000))
    #expect(file.values["test.u32"] == .uint32(4_000_000_000) && file.values["test.i32"] == .int32(-2_000_000_000))
    #expect(file.values["test.f32"] == .float32(1.5) && file.values["test.f64"] == .float64(-0.125))
    #expect(file.values["test.bool"] == .bool(true))
    #expect(file.values["test.u64"] == .uint64(1 << 63 + 5) && file.values["test.i64"] == .int64(-(1 << 62)))
    #expect(file.values["test.strings"] == .array(elementType: .string, [.string("a"), .string("bb"), .string("ünï")]))
    #expect(
      file.values["test.nested"]
        == .array(elementType: .array, [.int32Array([1, 2]), .int32Array([3])]))
    #expect(file.keys.first == "general.architecture")
    #expect(file.metadata["general.architecture"] == "sdxl" && file.metadata["test.u8"] == nil)
    let conv = try #require(file.tensor(named: "input_blocks.1.0.in_layers.2.weight"))
    #expect(conv.shape == [18, 256], "stored reshaped")
    #expect(try file.originalShape(of: conv) == [32, 16, 3, 3])
  }

  @Test func decodesEveryTensorLikeGGUFPy() throws {
    let file = try GGUFFile(path: Self.ggufPath)
    let expected = try SafeTensorsFile(path: Self.expectedPath)
    #expect(file.tensors.count == expected.tensors.count - 1)
    var types = Set<GGMLType>()
    for tensor in file.tensors {
      let decoder = try TensorDecoder.resolve(gguf: file, tensor: tensor)
      let reference = try floats(expected, tensor.name)
      let ours = decoder.decodeAll()
      #expect(ours.map(\.bitPattern) == reference.map(\.bitPattern), "\(tensor.name) (\(tensor.type.name))")
      // Chunks that cut blocks anywhere give the same values.
      var pieced = [Float]()
      decoder.forEachChunk(chunkElements: 37) { range, values in
        #expect(range.lowerBound == pieced.count)
        pieced += values
      }
      #expect(pieced.map(\.bitPattern) == reference.map(\.bitPattern), "\(tensor.name) in chunks of 37")
      types.insert(tensor.type)
    }
    #expect(
      types.isSuperset(of: [.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .f16, .f32, .bf16]))
  }

  @Test func importRestoresOriginalShapes() throws {
    let output = TestPaths.temporaryDirectory("gguf-import") + "/out.safetensors"
    _ = try GGUFImport.convert(input: Self.ggufPath, output: output, dtype: .f32)
    let restored = try SafeTensorsFile(path: output)
    let expected = try SafeTensorsFile(path: Self.expectedPath)
    for tensor in restored.tensors {
      let reference = try #require(expected.info(tensor.name))
      #expect(tensor.shape == reference.shape, "\(tensor.name)")
      #expect(Array(restored.data(tensor)) == Array(expected.data(reference)), "\(tensor.name)")
    }
    #expect(restored.info("input_blocks.1.0.in_layers.2.weight")?.shape == [32, 16, 3, 3])
    // GGUF's own keys describe the GGUF file, not the checkpoint: they do not follow it home.
    #expect(!restored.metadata.keys.contains { $0.hasPrefix("general.") })
    #expect(restored.metadata["rouwei.convert"]?.contains("\"from\":\"gguf\"") == true)
  }

  @Test func unsupportedGGMLTypeIsATypedError() throws {
    // A header-only file with one IQ4_NL tensor: readable (for `info`), not decodable.
    var bytes = Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(1)) + le(UInt64(0))
    bytes += le(UInt64(1)) + Array("w".utf8) + le(UInt32(1)) + le(UInt64(32)) + le(UInt32(20)) + le(UInt64(0))
    bytes += [UInt8](repeating: 0, count: (32 - bytes.count % 32) % 32 + 18)
    let path = try write(bytes)
    let file = try GGUFFile(path: path)
    let tensor = try #require(file.tensors.first)
    #expect(tensor.type == .iq4_nl && tensor.byteCount == 18)
    #expect(throws: GGUFError.self) { try TensorDecoder.resolve(gguf: file, tensor: tensor) }
    #expect(throws: GGUFError.self) {
      _ = try GGUFImport.convert(
        input: path, output: TestPaths.temporaryDirectory("iq") + "/x.safetensors", dtype: .f16)
    }
  }

  // MARK: - safetensors quantized layouts

  func layerFile(_ entries: [TensorEntry], metadata: [String: String]? = nil) throws -> SafeTensorsFile {
    let path = TestPaths.temporaryDirectory("codec") + "/m.safetensors"
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: metadata)
    return try SafeTensorsFile(path: path)
  }

  func copy(_ golden: SafeTensorsFile, _ from: String, as name: String, shape: [Int]? = nil) throws -> TensorEntry {
    let info = try #require(golden.info(from))
    return TensorEntry(
      spec: TensorSpec(name: name, dtype: info.dtype, shape: shape ?? info.shape), bytes: golden.data(info))
  }

  @Test func decodesInt8RowsLikeTorch() throws {
    let golden = try SafeTensorsFile(path: TestPaths.fixture("codecs/int8-rows.safetensors"))
    let layer = "model.diffusion_model.input_blocks.4.1.proj_in"
    let json = Array(#"{"format":"int8_tensorwise"}"#.utf8)
    for scaleShape in [[8], [8, 1]] {
      let file = try layerFile([
        try copy(golden, "weight", as: layer + ".weight"),
        try copy(golden, "weight_scale", as: layer + ".weight_scale", shape: scaleShape),
        TensorEntry(spec: TensorSpec(name: layer + ".comfy_quant", dtype: .u8, shape: [json.count])) {
          try $0.write(contentsOf: json)
        },
      ])
      let decoder = try TensorDecoder.resolve(file: file, tensor: try #require(file.info(layer + ".weight")))
      guard case .int8Rows(let scales, 48) = decoder.encoding else {
        Issue.record("not int8 rows: \(decoder.encoding)")
        continue
      }
      #expect(scales.count == 8)
      let reference = Array(try golden.data(named: "dequantized").bindMemory(to: Float.self))
      #expect(
        decoder.decodeAll().map(\.bitPattern) == reference.map(\.bitPattern),
        "q·s as torch computes it, scale \(scaleShape)")
      var partial = [Float](repeating: 0, count: 50)
      partial.withUnsafeMutableBufferPointer { decoder.decode(30..<80, into: $0) }
      #expect(partial == Array(reference[30..<80]), "a range across rows")
    }
  }

  @Test func refusesLayoutsItWouldDecodeWrongly() throws {
    let golden = try SafeTensorsFile(path: TestPaths.fixture("codecs/int8-rows.safetensors"))
    let layer = "model.diffusion_model.input_blocks.4.1.proj_in"
    func file(comfyQuant: String?, header: String? = nil, scale: Bool = true) throws -> SafeTensorsFile {
      var entries = [try copy(golden, "weight", as: layer + ".weight")]
      if scale { entries.append(try copy(golden, "weight_scale", as: layer + ".weight_scale")) }
      if let comfyQuant {
        let json = Array(comfyQuant.utf8)
        entries.append(
          TensorEntry(spec: TensorSpec(name: layer + ".comfy_quant", dtype: .u8, shape: [json.count])) {
            try $0.write(contentsOf: json)
          })
      }
      return try layerFile(entries, metadata: header.map { ["_quantization_metadata": $0] })
    }
    let cases: [(SafeTensorsFile, String)] = [
      (try file(comfyQuant: #"{"format":"int8_tensorwise","convrot":true,"convrot_groupsize":256}"#), "ConvRot"),
      (try file(comfyQuant: #"{"format":"int8_blockwise","group_size":128}"#), "int8_blockwise"),
      (try file(comfyQuant: "not json"), "JSON"),
      (
        try file(
          comfyQuant: nil, header: #"{"format_version":"1.0","layers":{"\#(layer)":{"format":"convrot_w4a4"}}}"#),
        "convrot_w4a4"
      ),
      (try file(comfyQuant: nil, scale: false), "weight_scale"),
    ]
    for (file, fragment) in cases {
      do {
        _ = try TensorDecoder.resolve(file: file, tensor: try #require(file.info(layer + ".weight")))
        Issue.record("accepted a file with \(fragment)")
      } catch let error as CodecError {
        #expect(error.description.contains(fragment) && error.description.contains(layer), "\(error)")
        #expect(!error.isIOFailure)
      }
    }
  }

  @Test func decodesScaledFP8LikeComfyUI() throws {
    let golden = try SafeTensorsFile(path: TestPaths.fixture("codecs/scaled-fp8.safetensors"))
    let layer = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.ff.net.2"
    let reference = Array(try golden.data(named: "dequantized").bindMemory(to: Float.self))
    let marker = TensorEntry(spec: TensorSpec(name: MarkerKey.scaledFP8, dtype: .f8e4m3, shape: [0])) { _ in }
    let scaled = try layerFile([
      try copy(golden, "weight", as: layer + ".weight"), try copy(golden, "scale_weight", as: layer + ".scale_weight"),
      marker,
    ])
    let decoder = try TensorDecoder.resolve(file: scaled, tensor: try #require(scaled.info(layer + ".weight")))
    #expect(decoder.decodeAll().map(\.bitPattern) == reference.map(\.bitPattern))
    // comfy_quant tensorwise fp8 (scalar weight_scale, no marker) means the same thing.
    let tensorwise = try layerFile([
      try copy(golden, "weight", as: layer + ".weight"), try copy(golden, "scale_weight", as: layer + ".weight_scale"),
    ])
    let second = try TensorDecoder.resolve(file: tensorwise, tensor: try #require(tensorwise.info(layer + ".weight")))
    #expect(second.decodeAll().map(\.bitPattern) == reference.map(\.bitPattern))
    // Without the marker a scale_weight is not applied: plain fp8.
    let plain = try layerFile([
      try copy(golden, "weight", as: layer + ".weight"), try copy(golden, "scale_weight", as: layer + ".scale_weight"),
    ])
    #expect(
      try TensorDecoder.resolve(file: plain, tensor: try #require(plain.info(layer + ".weight"))).encoding
        == .float(.f8e4m3))
  }

  // MARK: - encoding in chunks

  @Test func chunkedTranscodeMatchesOneShotAndRefusesByName() throws {
    let casts = try SafeTensorsFile(path: TestPaths.fixture("codecs/casts.safetensors"))
    let input = try #require(casts.info("input"))
    let decoder = try TensorDecoder.resolve(file: casts, tensor: input)
    for target in [DType.f16, .bf16, .f8e4m3, .f8e5m2] {
      let directory = TestPaths.temporaryDirectory("transcode")
      var stats = EncodeStatistics()
      try SafeTensorsWriter.write(
        to: directory + "/c.safetensors",
        entries: [
          TensorEntry(spec: TensorSpec(name: "x", dtype: target, shape: input.shape)) { sink in
            stats = try Transcoder.transcode(
              decoder, to: target, policy: .clamp, sink: sink, file: "casts", chunkElements: 1000)
          }
        ], metadata: nil)
      let written = try SafeTensorsFile(path: directory + "/c.safetensors")
      let all = decoder.decodeAll()
      var oneShot = [UInt8](repeating: 0, count: all.count * target.bitWidth / 8)
      let expected = all.withUnsafeBufferPointer { values in
        oneShot.withUnsafeMutableBytes { FloatCodec.encode(values, to: target, into: $0, policy: .clamp) }
      }
      #expect(Array(try written.data(named: "x")) == oneShot, "\(target)")
      #expect(stats == expected, "\(target): statistics accumulate over chunks")
      #expect(try Transcoder.count(decoder, to: target, chunkElements: 777) == expected)
      if expected.overflowed > 0 {
        do {
          try SafeTensorsWriter.write(
            to: directory + "/refused.safetensors",
            entries: [
              TensorEntry(spec: TensorSpec(name: "x", dtype: target, shape: input.shape)) { sink in
                try Transcoder.transcode(decoder, to: target, policy: .refuse, sink: sink, file: "casts.safetensors")
              }
            ], metadata: nil)
          Issue.record("\(target): overflow was not refused")
        } catch CodecError.outOfRange(let file, let tensor, let dtype, let count) {
          #expect(file == "casts.safetensors" && tensor == "input" && dtype == target && count == expected.overflowed)
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/refused.safetensors"), "no partial output")
      }
    }
  }

  @Test func clampSaturatesAtTheDocumentedLimits() throws {
    let values: [Float] = [1e6, -1e6, 65504, 65520, 448, 464, 57344, 61440]
    func encode(_ target: DType) throws -> [UInt8] {
      var encoder = try ChunkEncoder(target: target, policy: .clamp)
      var out = [UInt8](repeating: 0, count: values.count * encoder.width)
      values.withUnsafeBufferPointer { v in out.withUnsafeMutableBytes { _ = encoder.encode(v, into: $0) } }
      return out
    }
    func decode(_ bytes: [UInt8], _ dtype: DType) -> [Float] {
      var out = [Float](repeating: 0, count: values.count)
      bytes.withUnsafeBytes { raw in
        out.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: dtype, into: $0) }
      }
      return out
    }
    #expect(decode(try encode(.f16), .f16) == [65504, -65504, 65504, 65504, 448, 464, 57344, 61440])
    #expect(decode(try encode(.f8e4m3), .f8e4m3) == [448, -448, 448, 448, 448, 448, 448, 448])
    #expect(decode(try encode(.f8e5m2), .f8e5m2) == [57344, -57344, 57344, 57344, 448, 448, 57344, 57344])
    #expect(throws: CodecError.self) { try ChunkEncoder(target: .i8, policy: .clamp) }
  }

  // MARK: - hostile GGUF

  func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

  func write(_ bytes: [UInt8]) throws -> String {
    let path = TestPaths.temporaryDirectory("gguf-hostile") + "/bad.gguf"
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
  }

  func header(tensors: UInt64 = 1, kv: [[UInt8]] = [], infos: [[UInt8]]) -> [UInt8] {
    var bytes = Array("GGUF".utf8) + le(UInt32(3)) + le(tensors) + le(UInt64(kv.count))
    for entry in kv { bytes += entry }
    for info in infos { bytes += info }
    return bytes + [UInt8](repeating: 0, count: 256)
  }

  func info(_ name: String, _ dims: [UInt64], type: UInt32, offset: UInt64 = 0) -> [UInt8] {
    le(UInt64(name.utf8.count)) + Array(name.utf8) + le(UInt32(dims.count)) + dims.flatMap { le($0) } + le(type)
      + le(offset)
  }

  func key(_ name: String, type: UInt32, _ payload: [UInt8]) -> [UInt8] {
    le(UInt64(name.utf8.count)) + Array(name.utf8) + le(type) + payload
  }

  @Test func hostileHeadersGiveTypedErrors() throws {
    let cases: [(String, [UInt8])] = [
      ("byte size overflow (2^31 × 2^31 F64)", header(infos: [info("w", [1 << 31, 1 << 31], type: 28)])),
      ("byte size overflow (2^62 × 8)", header(infos: [info("w", [1 << 62, 2], type: 0)])),
      ("dimension beyond Int", header(infos: [info("w", [UInt64.max], type: 0)])),
      ("shape product overflow", header(infos: [info("w", [1 << 40, 1 << 40], type: 0)])),
      ("offset not where ggml expects it", header(infos: [info("w", [8], type: 0, offset: 32)])),
      ("offset far beyond the file", header(infos: [info("w", [8], type: 0, offset: UInt64.max - 7)])),
      ("row not whole blocks", header(infos: [info("w", [33], type: 8)])),
      ("unknown ggml type", header(infos: [info("w", [8], type: 31)])),
      ("5 dimensions", header(infos: [info("w", [1, 1, 1, 1, 1], type: 0)])),
      ("duplicate tensor", header(tensors: 2, infos: [info("w", [8], type: 0), info("w", [8], type: 0, offset: 32)])),
      (
        "alignment not a power of two",
        header(kv: [key("general.alignment", type: 4, le(UInt32(48)))], infos: [info("w", [8], type: 0)])
      ),
      (
        "alignment of the wrong type",
        header(kv: [key("general.alignment", type: 10, le(UInt64(32)))], infos: [info("w", [8], type: 0)])
      ),
      ("bool that is not 0/1", header(tensors: 0, kv: [key("b", type: 7, [2])], infos: [])),
      ("unknown value type", header(tensors: 0, kv: [key("b", type: 13, [0])], infos: [])),
      (
        "array of 2^60 strings",
        header(tensors: 0, kv: [key("a", type: 9, le(UInt32(8)) + le(UInt64(1 << 60)))], infos: [])
      ),
      (
        "array of 2^60 u64",
        header(tensors: 0, kv: [key("a", type: 9, le(UInt32(10)) + le(UInt64(1 << 60)))], infos: [])
      ),
      (
        "arrays nested 5 deep",
        header(
          tensors: 0,
          kv: [
            key(
              "a", type: 9, (0..<5).flatMap { _ in le(UInt32(9)) + le(UInt64(1)) } + le(UInt32(0)) + le(UInt64(1)) + [0]
            )
          ], infos: [])
      ),
      ("duplicate key", header(tensors: 0, kv: [key("k", type: 0, [1]), key("k", type: 0, [1])], infos: [])),
      ("string longer than the file", header(tensors: 0, kv: [key("k", type: 8, le(UInt64(1 << 40)))], infos: [])),
      (
        "name longer than the limit",
        header(
          tensors: 0, kv: [le(UInt64(70000)) + [UInt8](repeating: 0x61, count: 70000) + le(UInt32(0)) + [1]], infos: [])
      ),
      (
        "non-UTF-8 name",
        header(infos: [le(UInt64(2)) + [0xC3, 0x28] + le(UInt32(1)) + le(UInt64(8)) + le(UInt32(0)) + le(UInt64(0))])
      ),
      ("tensor count beyond the file", Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(1 << 50)) + le(UInt64(0))),
    ]
    for (label, bytes) in cases {
      let path = try write(bytes)
      do {
        let file = try GGUFFile(path: path)
        Issue.record("\(label): accepted (\(file.tensors.count) tensors)")
      } catch let error as GGUFError {
        #expect(error.description.contains("bad.gguf"), "\(label): \(error)")
      }
    }
  }

  @Test func mutatedFilesNeverCrash() throws {
    // A seeded mutation pass over a real file: every variant must open cleanly or fail with a
    // GGUFError, and whatever opens must decode without trapping.
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.ggufPath)))
    let headerEnd = try GGUFFile(path: Self.ggufPath).dataOffset
    var generator = SplitMix(seed: 42)
    var opened = 0, rejected = 0
    for round in 0..<300 {
      var bytes = original
      switch round % 4 {
      case 0:  // flip a few header bytes
        for _ in 0..<(1 + Int(generator.next() % 4)) {
          bytes[Int(generator.next() % UInt64(headerEnd))] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
        }
      case 1:  // truncate anywhere
        bytes.removeLast(Int(generator.next() % UInt64(bytes.count)))
      case 2:  // overwrite a 64-bit field with an extreme value
        let at = Int(generator.next() % UInt64(headerEnd - 8))
        let extremes: [UInt64] = [0, 1, UInt64.max, UInt64(Int64.max), 1 << 32, 1 << 63, 0xFFFF_FFFF]
        let value = extremes[Int(generator.next() % UInt64(extremes.count))]
        for k in 0..<8 { bytes[at + k] = UInt8(truncatingIfNeeded: value >> UInt64(8 * k)) }
      default:  // overwrite a 32-bit field (types, dims counts) with small or large values
        let at = Int(generator.next() % UInt64(headerEnd - 4))
        let value = UInt32(truncatingIfNeeded: generator.next() % 2 == 0 ? generator.next() % 48 : generator.next())
        for k in 0..<4 { bytes[at + k] = UInt8(truncatingIfNeeded: value >> UInt32(8 * k)) }
      }
      let path = try write(bytes)
      do {
        let file = try GGUFFile(path: path)
        opened += 1
        for tensor in file.tensors {
          guard let decoder = try? TensorDecoder.resolve(gguf: file, tensor: tensor) else { continue }
          var sum: Float = 0
          decoder.forEachChunk(chunkElements: 100) { _, values in sum += values.reduce(0, +) }
          _ = sum
          _ = try? file.originalShape(of: tensor)
        }
      } catch is GGUFError {
        rejected += 1
      }
    }
    #expect(opened + rejected == 300)
    #expect(rejected > 100, "most mutations are caught (\(rejected))")
  }
}

/// A tiny deterministic generator for the mutation test.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// Our GGUF writer with every metadata value type, read back by our reader and (at golden time) by
/// gguf-py: `Scripts/fixtures/make_gguf_reader_goldens.py --check FILE` records the SHA-256 of the
/// file gguf-py accepted in Fixtures/codecs/gguf-values-check.json.
@Suite struct GGUFWriterValuesTests {
  static let metadata: [(String, GGUFValue)] = [
    ("general.architecture", .string("sdxl")),
    ("general.quantization_version", .uint32(2)),
    ("test.u8", .uint8(200)), ("test.i8", .int8(-100)), ("test.u16", .uint16(60000)), ("test.i16", .int16(-30000)),
    ("test.u32", .uint32(4_000_000_000)), ("test.i32", .int32(-2_000_000_000)), ("test.f32", .float32(1.5)),
    ("test.bool", .bool(true)), ("test.u64", .uint64(1 << 63 + 5)), ("test.i64", .int64(-(1 << 62))),
    ("test.f64", .float64(-0.125)),
    ("test.strings", .array(elementType: .string, [.string("a"), .string("bb"), .string("ünï")])),
    ("test.nested", .array(elementType: .array, [.int32Array([1, 2]), .int32Array([3])])),
    ("comfy.gguf.orig_shape.conv.weight", .int32Array([4, 2, 2, 2])),
  ]

  static func write(to path: String) throws {
    let values = (0..<64).map { Float($0 % 7) * 0.25 - 0.75 }
    var q8 = [UInt8](repeating: 0, count: GGMLType.q8_0.byteCount(elements: 64))
    values.withUnsafeBufferPointer { v in q8.withUnsafeMutableBytes { GGMLQuantizer.quantize(v, type: .q8_0, into: $0) }
    }
    try GGUFWriter.write(
      to: path, metadata: metadata,
      tensors: [
        GGUFWriter.Tensor(name: "linear.weight", shape: [2, 32], type: .q8_0) { try $0.write(contentsOf: q8) },
        GGUFWriter.Tensor(name: "conv.weight", shape: [1, 32], type: .f32) {
          try $0.write(contentsOf: Array(values[0..<32]))
        },
        GGUFWriter.Tensor(name: "bias", shape: [3], type: .f32) { try $0.write(contentsOf: [Float(1), 2, 3]) },
      ], inputs: [])
  }

  @Test func roundTripsAndMatchesTheFileGGUFPyRead() throws {
    let path = TestPaths.temporaryDirectory("gguf-values") + "/values.gguf"
    try Self.write(to: path)
    let file = try GGUFFile(path: path)
    for (key, value) in Self.metadata { #expect(file.values[key] == value, "\(key)") }
    #expect(file.keys == Self.metadata.map(\.0))
    #expect(file.tensors.map(\.name) == ["linear.weight", "conv.weight", "bias"])
    let conv = try #require(file.tensor(named: "conv.weight"))
    #expect(try file.originalShape(of: conv) == [4, 2, 2, 2])
    #expect(
      try TensorDecoder.resolve(gguf: file, tensor: try #require(file.tensor(named: "bias"))).decodeAll() == [1, 2, 3])
    let data = try #require(FileManager.default.contents(atPath: TestPaths.fixture("codecs/gguf-values-check.json")))
    let check = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let bytes = try #require(FileManager.default.contents(atPath: path))
    // Regenerating: ROUWEI_GGUF_VALUES_OUT=/tmp/values.gguf swift test --filter GGUFWriterValuesTests,
    // then make_gguf_reader_goldens.py --check /tmp/values.gguf.
    if let out = ProcessInfo.processInfo.environment["ROUWEI_GGUF_VALUES_OUT"] {
      _ = FileManager.default.createFile(atPath: out, contents: bytes)
    }
    let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    #expect(digest == check["sha256"] as? String, "our GGUF bytes changed since gguf-py checked them; rerun the script")
  }

  @Test func refusesWhatGGMLWouldReject() {
    let cases: [[GGUFWriter.Tensor]] = [
      [GGUFWriter.Tensor(name: "w", shape: [2, 33], type: .q8_0) { _ in }],
      [GGUFWriter.Tensor(name: "w", shape: [1, 1, 1, 1, 1], type: .f32) { _ in }],
      [
        GGUFWriter.Tensor(name: "w", shape: [1], type: .f32) { _ in },
        GGUFWriter.Tensor(name: "w", shape: [1], type: .f32) { _ in },
      ],
    ]
    let directory = TestPaths.temporaryDirectory("gguf-refuse")
    for tensors in cases {
      #expect(throws: GGUFError.self) {
        try GGUFWriter.write(to: directory + "/x.gguf", metadata: [], tensors: tensors, inputs: [])
      }
      #expect(!FileManager.default.fileExists(atPath: directory + "/x.gguf"))
    }
    #expect(throws: GGUFError.self) {
      try GGUFWriter.write(
        to: directory + "/x.gguf", metadata: [("k", .uint8(1)), ("k", .uint8(2))], tensors: [], inputs: [])
    }
  }
}
