import Foundation
import SafeTensors
import TestSupport
import Testing
import Transforms
import Weights
import Workers

/// K-quant encoders against ggml's own reference quantizers, and the error-minimising search
/// against the reference on every type (Scripts/fixtures/make_kquant_goldens.py).
@Suite struct KQuantTests {
  static let golden = try? SafeTensorsFile(path: TestPaths.fixture("codecs/kquant-blocks.safetensors"))
  static let legacyGolden = try? SafeTensorsFile(path: TestPaths.fixture("codecs/gguf-blocks.safetensors"))

  static func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
    let info = try #require(file.info(name))
    var values = [Float](repeating: 0, count: info.elementCount)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(file.data(info), dtype: .f32, into: $0) }
    return values
  }

  static func quantize(_ values: [Float], _ type: GGMLType, _ method: GGMLQuantizerMethod) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: type.byteCount(elements: values.count))
    values.withUnsafeBufferPointer { v in
      out.withUnsafeMutableBytes { GGMLQuantizer.quantize(v, type: type, method: method, into: $0) }
    }
    return out
  }

  static func dequantize(_ bytes: [UInt8], _ type: GGMLType, count: Int) -> [Float] {
    var restored = [Float](repeating: 0, count: count)
    bytes.withUnsafeBytes { raw in
      restored.withUnsafeMutableBufferPointer { GGMLQuantizer.dequantize(raw, type: type, into: $0) }
    }
    return restored
  }

  static func squaredError(_ a: [Float], _ b: [Float], block: Int) -> [Double] {
    stride(from: 0, to: a.count, by: block).map { start in
      (start..<(start + block)).reduce(0.0) { $0 + pow(Double(a[$1]) - Double(b[$1]), 2) }
    }
  }

  @Test(arguments: [GGMLType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K])
  func referenceMatchesGGML(type: GGMLType) throws {
    let file = try #require(Self.golden)
    let values = try Self.floats(file, "input")
    let ours = Self.quantize(values, type, .reference)
    let theirs = Array(try file.data(named: type.name.lowercased()))
    #expect(ours.count == theirs.count)
    let first = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
    #expect(first == nil, "\(type.name): first differing byte \(first ?? -1) (block \((first ?? 0) / type.blockBytes))")
    // Our dequantization of ggml's bytes is gguf-py's, bit for bit.
    let restored = Self.dequantize(theirs, type, count: values.count)
    let expected = try Self.floats(file, "dequant_" + type.name.lowercased())
    #expect(restored.map(\.bitPattern) == expected.map(\.bitPattern), "\(type.name) dequantization")
  }

  /// stable-diffusion.cpp's bytes: ggml's importance-matrix quantizers with a matrix of ones
  /// (`quantize_<type>(src, dst, nrows, n_per_row, ones)`), rows of 512.
  @Test(arguments: [GGMLType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q4_0, .q4_1, .q5_0, .q5_1])
  func unitImportanceMatchesGGML(type: GGMLType) throws {
    let file = try #require(Self.golden)
    let values = try Self.floats(file, "input")
    var ours = [UInt8](repeating: 0, count: type.byteCount(elements: values.count))
    values.withUnsafeBufferPointer { v in
      ours.withUnsafeMutableBytes {
        GGMLQuantizer.quantize(v, type: type, method: .unitImportance, rowLength: 512, into: $0)
      }
    }
    let theirs = Array(try file.data(named: "unit_" + type.name.lowercased()))
    let first = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
    #expect(ours.count == theirs.count)
    #expect(first == nil, "\(type.name): first differing byte \(first ?? -1) (block \((first ?? 0) / type.blockBytes))")
  }

  /// Per block the search is never worse than the reference, and over the tensor it is better.
  @Test(arguments: [GGMLType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q4_0, .q4_1, .q5_0, .q5_1])
  func searchNeverLosesToReference(type: GGMLType) throws {
    var values = try Self.floats(try #require(Self.golden), "input")
    // Plus trained-weight-like rows: Laplace-distributed with a few outliers.
    var rng = SplitMix(seed: 16)
    for _ in 0..<(8 * 512) {
      let u = Double(rng.next() >> 11) / Double(1 << 53) - 0.5
      values.append(-0.02 * Float(u < 0 ? -1 : 1) * Float(log(1 - 2 * abs(u) + 1e-12)))
    }
    let reference = Self.quantize(values, type, .reference)
    let searched = Self.quantize(values, type, .search)
    let unit = Self.quantize(values, type, .unitImportance)
    let refError = Self.squaredError(
      values, Self.dequantize(reference, type, count: values.count), block: type.blockSize)
    let searchError = Self.squaredError(
      values, Self.dequantize(searched, type, count: values.count), block: type.blockSize)
    let unitError = Self.squaredError(values, Self.dequantize(unit, type, count: values.count), block: type.blockSize)
    for (block, (s, r)) in zip(searchError, refError).enumerated() {
      #expect(
        s <= r && s <= unitError[block],
        "\(type.name) block \(block): search \(s) > reference \(r) or unit \(unitError[block])")
    }
    // On the trained-weight-like rows the search gains at least 1 % in squared error.
    let laplace = (16 * 512 / type.blockSize)...
    let total = (searchError[laplace].reduce(0, +), refError[laplace].reduce(0, +))
    #expect(total.0 < total.1 * 0.99, "\(type.name): search \(total.0) vs reference \(total.1)")
  }

  @Test func q8_0SearchIsTheReference() throws {
    let values = try Self.floats(try #require(Self.legacyGolden), "input")
    #expect(Self.quantize(values, .q8_0, .search) == Self.quantize(values, .q8_0, .reference))
  }
}

/// GGUF export with K-quants and mixtures: which tensor gets which type, the metadata consumers
/// read, the error report, and bytes independent of the thread count.
@Suite(.serialized) struct GGUFMixtureTests {
  static let tiny = TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")

  @Test func q4KMixtureFollowsTheDocumentedRules() throws {
    let output = TestPaths.temporaryDirectory("gguf-mix") + "/q4km.gguf"
    let report = try GGUFExport.export(
      input: Self.tiny, output: output, quantization: GGUFQuantization(type: .q4_K, preset: .q4_K_M, measure: true),
      components: nil, dropEMA: false)
    let file = try GGUFFile(path: output)
    #expect(file.architecture == "sdxl")
    #expect(file.values["general.file_type"] == .uint32(15))
    #expect(file.values["general.quantization_version"] == .uint32(2))
    var counts: [String: Int] = [:]
    for tensor in file.tensors {
      counts[tensor.type.name, default: 0] += 1
      let name = tensor.name, inner = tensor.shape.last ?? 0
      if name.hasPrefix("first_stage_model.") || name.contains("time_embed.") || name.contains("label_emb.")
        || name.hasPrefix("model.diffusion_model.input_blocks.0.") || name.hasPrefix("model.diffusion_model.out.")
        || tensor.shape.count < 2
      {
        #expect(!tensor.type.isQuantized, "\(name) must stay float")
      } else if name.hasPrefix("conditioner.") && tensor.type.isQuantized {
        #expect(tensor.type == .q8_0, "\(name): text encoders at Q8_0")
      } else if name.hasPrefix("model.diffusion_model."), tensor.type.isQuantized {
        let raised = name.hasSuffix(".to_v.weight") || name.hasSuffix(".ff.net.2.weight")
        let wanted: GGMLType = raised ? .q6_K : .q4_K
        // Rows that are not whole 256-value super-blocks fall back (Q6_K → Q8_0, Q4_K → Q5_0).
        #expect(
          tensor.type == (inner % 256 == 0 ? wanted : GGUFExport.fallback(for: wanted)), "\(name) \(tensor.shape)")
      }
    }
    #expect(report.types == counts)
    #expect((counts["q6_K"] ?? 0) > 0 && (counts["q5_0"] ?? 0) > 0 && (counts["q8_0"] ?? 0) > 0)
    // The report: one entry per block-quantized tensor, worst first, figures recomputable.
    let errors = try #require(report.quantization)
    #expect(errors.count == file.tensors.filter { $0.type.isQuantized }.count)
    #expect(zip(errors, errors.dropFirst()).allSatisfy { $0.relativeMaxError >= $1.relativeMaxError })
    let source = try SafeTensorsFile(path: Self.tiny)
    let worst = errors[0]
    let info = try #require(source.info(worst.name)),
      stored = try #require(file.tensors.first { $0.name == worst.name })
    var values = [Float](repeating: 0, count: info.elementCount), restored = values
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(source.data(info), dtype: info.dtype, into: $0) }
    restored.withUnsafeMutableBufferPointer { GGMLQuantizer.dequantize(file.data(stored), type: stored.type, into: $0) }
    let rmse = (zip(values, restored).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) } / Double(values.count))
      .squareRoot()
    let maxError = zip(values, restored).map { abs(Double($0) - Double($1)) }.max() ?? 0
    #expect(abs(rmse - worst.rmse) <= 1e-9 * max(1, rmse))
    #expect(maxError == worst.maxError)
    let range = Double(values.max()!) - Double(values.min()!)
    #expect(abs(worst.relativeMaxError - maxError / range) < 1e-12)
  }

  @Test func searchBeatsReferenceOnEveryTensorAndBytesDoNotDependOnThreads() throws {
    let directory = TestPaths.temporaryDirectory("gguf-search")
    for type in [GGMLType.q5_1, .q4_K] {
      var rmse: [GGMLQuantizerMethod: [String: Double]] = [:]
      for method in GGMLQuantizerMethod.allCases {
        let report = try GGUFExport.export(
          input: Self.tiny, output: directory + "/\(method.rawValue).gguf",
          quantization: GGUFQuantization(type: type, method: method, measure: true),
          components: [.unet], dropEMA: false)
        rmse[method] = Dictionary(uniqueKeysWithValues: (report.quantization ?? []).map { ($0.name, $0.rmse) })
      }
      for (name, searched) in rmse[.search] ?? [:] {
        let reference = try #require(rmse[.reference]?[name]), unit = try #require(rmse[.unitImportance]?[name])
        #expect(
          searched <= reference && searched <= unit,
          "\(type.name) \(name): search \(searched), reference \(reference), unit \(unit)")
      }
      let before = ThreadPool.shared.threadCount
      ThreadPool.useShared(threadCount: 1)
      _ = try GGUFExport.export(
        input: Self.tiny, output: directory + "/one-thread.gguf",
        quantization: GGUFQuantization(type: type, method: .search),
        components: [.unet], dropEMA: false)
      ThreadPool.useShared(threadCount: max(before, 2))
      let one = FileManager.default.contents(atPath: directory + "/one-thread.gguf")
      #expect(
        one != nil && one == FileManager.default.contents(atPath: directory + "/search.gguf"),
        "\(type.name): bytes depend on threads")
      ThreadPool.useShared(threadCount: before)
    }
  }
}
