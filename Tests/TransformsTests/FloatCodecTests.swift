import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

@testable import Transforms

/// Our casts against PyTorch's on the same inputs (Fixtures/codecs/casts.safetensors).
@Suite struct FloatCodecTests {
  static let golden = try? SafeTensorsFile(path: TestPaths.fixture("codecs/casts.safetensors"))

  func inputs() throws -> [Float] {
    let file = try #require(Self.golden)
    let info = try #require(file.info("input"))
    var values = [Float](repeating: 0, count: info.elementCount)
    values.withUnsafeMutableBufferPointer { FloatCodec.decode(file.data(info), dtype: .f32, into: $0) }
    return values
  }

  func encoded(_ values: [Float], _ dtype: DType, _ policy: OverflowPolicy = .refuse) -> ([UInt8], EncodeStatistics) {
    var out = [UInt8](repeating: 0, count: values.count * FloatCodec.width(dtype))
    let stats = values.withUnsafeBufferPointer { input in
      out.withUnsafeMutableBytes { FloatCodec.encode(input, to: dtype, into: $0, policy: policy) }
    }
    return (out, stats)
  }

  @Test(arguments: [("f16", DType.f16), ("bf16", .bf16), ("f8_e4m3fn", .f8e4m3), ("f8_e5m2", .f8e5m2)])
  func bitIdenticalToTorch(name: String, dtype: DType) throws {
    let file = try #require(Self.golden)
    let x = try inputs()
    let expected = Array(try file.data(named: name))
    let (ours, _) = encoded(x, dtype)
    let width = FloatCodec.width(dtype)
    var mismatches: [String] = []
    for index in 0..<x.count {
      let a = ours[(index * width)..<((index + 1) * width)]
      let b = expected[(index * width)..<((index + 1) * width)]
      if a != b {
        mismatches.append(
          "x=\(x[index]) (bits \(String(x[index].bitPattern, radix: 16))): ours \(Array(a)) torch \(Array(b))")
      }
    }
    #expect(mismatches.isEmpty, "\(mismatches.count) of \(x.count) differ, e.g. \(mismatches.prefix(3))")
  }

  @Test func overflowIsCountedAndClampSaturates() {
    let values: [Float] = [1, 70000, -70000, 500, .nan, .infinity]
    #expect(
      encoded(values, .f16).1
        == {
          var s = EncodeStatistics(); s.overflowed = 2; s.nan = 1; s.infinite = 1; return s
        }())
    let clamped = encoded(values, .f16, .clamp).0
    let halves = stride(from: 0, to: clamped.count, by: 2).map { UInt16(clamped[$0]) | UInt16(clamped[$0 + 1]) << 8 }
    #expect(halves[1] == 0x7BFF && halves[2] == 0xFBFF)
    #expect(halves[5] == 0x7C00, "a real infinity stays infinite")
    let (e4, stats) = encoded(values, .f8e4m3, .clamp)
    #expect(stats.overflowed == 4, "70000, -70000, 500 and inf do not fit e4m3fn")
    #expect(e4[1] == 0x7E && e4[2] == 0xFE && e4[3] == 0x7E)
    #expect(encoded([57344, 61440, 1e6], .f8e5m2).1.overflowed == 2)
  }

  @Test(arguments: [DType.f16, .bf16, .f8e4m3, .f8e5m2])
  func decodeInvertsEncode(dtype: DType) {
    // Every code of the narrow type decodes to a value that encodes back to the same code.
    let codes = dtype.bitWidth == 8 ? 256 : 65536
    var bytes = [UInt8](repeating: 0, count: codes * FloatCodec.width(dtype))
    for code in 0..<codes {
      for byte in 0..<FloatCodec.width(dtype) {
        bytes[code * FloatCodec.width(dtype) + byte] = UInt8(truncatingIfNeeded: code >> (8 * byte))
      }
    }
    var values = [Float](repeating: 0, count: codes)
    bytes.withUnsafeBytes { raw in
      values.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: dtype, into: $0) }
    }
    let (again, _) = encoded(values, dtype)
    for code in 0..<codes where !values[code].isNaN {
      let width = FloatCodec.width(dtype)
      #expect(
        Array(again[(code * width)..<((code + 1) * width)]) == Array(bytes[(code * width)..<((code + 1) * width)]),
        "code \(code)")
    }
  }

  @Test func vectorisableHalfConversionsMatchTheReferenceOnes() {
    // Decoding: all 65,536 halves, NaN payloads included, against the library conversion.
    for bits in 0...UInt16.max {
      let expected = Float(Float16(bitPattern: bits)).bitPattern
      if FloatCodec.floatFromHalf(bits).bitPattern != expected {
        Issue.record(
          "half \(String(bits, radix: 16)): \(FloatCodec.floatFromHalf(bits)) vs \(Float(bitPattern: expected))")
        return
      }
    }
    // Encoding: every float of a 2^32 sweep with a prime stride, plus every boundary region
    // (subnormal/normal, the overflow threshold, infinities and NaNs) exhaustively, both signs.
    var patterns: [UInt32] = Array(stride(from: UInt32(0), to: UInt32.max - 65_521, by: 65_521))
    for center: UInt32 in [0, 102 << 23, 113 << 23, 143 << 23, 0x477F_E000, 0x7F80_0000] {
      let low = center > 40_000 ? center - 40_000 : 0
      patterns += Array(low...(min(center, 0x7FFF_FFFF - 40_000) + 40_000))
    }
    patterns += patterns.map { $0 ^ 0x8000_0000 }
    for bits in patterns {
      let value = Float(bitPattern: bits)
      if FloatCodec.halfSelecting(value) != FloatCodec.half(value) {
        Issue.record(
          "float \(String(bits, radix: 16)): \(FloatCodec.halfSelecting(value)) vs \(FloatCodec.half(value))")
        return
      }
    }
  }

  @Test(arguments: FloatCodec.supported.sorted { $0.rawValue < $1.rawValue })
  func everyEncoderCountsNonFiniteInputs(_ dtype: DType) {
    // What a bake relies on to refuse non-finite results without a separate pass.
    let input: [Float] = [1, .infinity, 2, -.infinity, .nan, 3, 4, 5, 6, 7, 8, 9, -.infinity, 0, .nan, 1]
    var output = [UInt8](repeating: 0, count: input.count * 8)
    let stats = input.withUnsafeBufferPointer { values in
      output.withUnsafeMutableBytes { FloatCodec.encode(values, to: dtype, into: $0, policy: .clamp) }
    }
    #expect(stats.nan == 2 && stats.infinite == 3 && stats.nonFinite == 5, "\(dtype.rawValue): \(stats)")
  }

  @Test func encodingPastTheCacheWritesTheSameBytes() {
    // Non-temporal stores start at a 16-byte boundary: every start offset, odd ones included.
    let input = (0..<1000).map { Float($0) * 97.5 - 40_000 } + [.nan, .infinity, 70_000, 1e-8]
    for clamp in [false, true] {
      for offset in 0..<18 {
        var plain = [UInt8](repeating: 0, count: offset + 2 * input.count)
        var streamed = plain
        let policy: OverflowPolicy = clamp ? .clamp : .refuse
        let a = input.withUnsafeBufferPointer { values in
          plain.withUnsafeMutableBytes {
            FloatCodec.encode(
              values, to: .f16, into: UnsafeMutableRawBufferPointer(rebasing: $0[offset...]), policy: policy)
          }
        }
        let b = input.withUnsafeBufferPointer { values in
          streamed.withUnsafeMutableBytes {
            FloatCodec.encode(
              values, to: .f16, into: UnsafeMutableRawBufferPointer(rebasing: $0[offset...]), policy: policy,
              bypassCache: true)
          }
        }
        #expect(plain == streamed && a == b, "offset \(offset), clamp \(clamp)")
      }
    }
  }

  @Test func f16CodecPathsAgreeWithTheReference() {
    // FloatCodec.decode/encode (F16C kernels where the CPU has them) and the Swift block kernel,
    // on every half and on floats around every boundary, against Float(Float16) / `half`.
    let halves = (0...UInt16.max).map { $0 }
    var decoded = [Float](repeating: 0, count: halves.count)
    halves.withUnsafeBytes { raw in
      decoded.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: .f16, into: $0) }
    }
    #expect(zip(halves, decoded).allSatisfy { Float(Float16(bitPattern: $0)).bitPattern == $1.bitPattern })
    var floats = decoded.filter { !$0.isNaN }.flatMap { [$0, $0.nextUp, $0.nextDown, $0 * 1.000_49, $0 * 0.999_51] }
    floats += [
      65_504, 65_519.99, 65_520, 1e6, -1e6, .infinity, -.infinity, .nan, Float(bitPattern: 0x7F80_0001), 6e-8, 2.9e-8,
      3e-8,
    ]
    for clamp in [false, true] {
      var expected = [UInt16](), over = 0, nan = 0, infinite = 0
      for value in floats {
        var bits = FloatCodec.half(value)
        if bits & 0x7FFF == 0x7C00 && value.isFinite {
          over += 1
          if clamp { bits = (bits & 0x8000) | 0x7BFF }
        } else if value.isNaN {
          nan += 1
        } else if value.isInfinite {
          infinite += 1
        }
        expected.append(bits)
      }
      var viaCodec = [UInt16](repeating: 0, count: floats.count)
      let stats = floats.withUnsafeBufferPointer { input in
        viaCodec.withUnsafeMutableBytes {
          FloatCodec.encode(input, to: .f16, into: $0, policy: clamp ? .clamp : .refuse)
        }
      }
      #expect(
        viaCodec == expected && stats.overflowed == over && stats.nan == nan && stats.infinite == infinite,
        "FloatCodec.encode, clamp \(clamp)")
      var viaSwift = [UInt16](repeating: 0, count: floats.count)
      let counts = floats.withUnsafeBufferPointer { input in
        viaSwift.withUnsafeMutableBytes {
          FloatCodec.encodeHalves(input.baseAddress!, input.count, $0.baseAddress!, clamp: clamp)
        }
      }
      #expect(
        viaSwift == expected && Int(counts.0) == over && Int(counts.1) == nan && Int(counts.2) == infinite,
        "Swift kernel, clamp \(clamp)")
      #expect(over > 0 && nan > 0 && infinite > 0)
    }
  }
}
