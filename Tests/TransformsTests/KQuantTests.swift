import Foundation
import SafeTensors
import TestSupport
import Testing
import Transforms
import Weights

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
    values.withUnsafeBufferPointer { v in out.withUnsafeMutableBytes { GGMLQuantizer.quantize(v, type: type, method: method, into: $0) } }
    return out
  }

  static func dequantize(_ bytes: [UInt8], _ type: GGMLType, count: Int) -> [Float] {
    var restored = [Float](repeating: 0, count: count)
    bytes.withUnsafeBytes { raw in restored.withUnsafeMutableBufferPointer { GGMLQuantizer.dequantize(raw, type: type, into: $0) } }
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
    let refError = Self.squaredError(values, Self.dequantize(reference, type, count: values.count), block: type.blockSize)
    let searchError = Self.squaredError(values, Self.dequantize(searched, type, count: values.count), block: type.blockSize)
    for (block, (s, r)) in zip(searchError, refError).enumerated() {
      #expect(s <= r, "\(type.name) block \(block): search \(s) > reference \(r)")
    }
    // On the trained-weight-like rows the search gains at least 1 % in squared error.
    let laplace = (16 * 512 / type.blockSize)...
    let total = (searchError[laplace].reduce(0, +), refError[laplace].reduce(0, +))
    print("KQUANT \(type.name) search/reference squared error: \(total.0 / total.1)")
    #expect(total.0 < total.1 * 0.99, "\(type.name): search \(total.0) vs reference \(total.1)")
  }

  @Test func q8_0SearchIsTheReference() throws {
    let values = try Self.floats(try #require(Self.legacyGolden), "input")
    #expect(Self.quantize(values, .q8_0, .search) == Self.quantize(values, .q8_0, .reference))
  }
}

