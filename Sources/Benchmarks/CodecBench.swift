import Foundation
import SafeTensors
import Transforms
import Weights

/// Single-thread throughput of the dtype codecs on 16 Mi values (values per second and input GB/s):
/// decode of every stored float dtype, encode to every narrow dtype, and ggml dequantization.
/// `codecs q4_K q6_K` measures only the named ggml types.
enum CodecBench {
  static func run(_ arguments: [String]) throws {
    let chosen = arguments.compactMap { name in GGMLType.allCases.first { $0.name == name } }
    let count = 1 << 24
    var generator = SystemRandomNumberGenerator()
    var values = [Float](repeating: 0, count: count)
    for i in 0..<count { values[i] = Float.random(in: -2...2, using: &generator) * 0.05 }
    var bytes = [UInt8](repeating: 0, count: count * 8)
    var out = [Float](repeating: 0, count: count)
    func time(_ label: String, bytesIn: Int, _ body: () -> Void) {
      body()  // warm caches and tables
      var best = Double.infinity
      for _ in 0..<3 {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
      }
      let name = label.padding(toLength: 22, withPad: " ", startingAt: 0)
      print(
        "\(name) \(String(format: "%7.1f", Double(count) / best / 1e6)) M values/s  \(String(format: "%6.2f", Double(bytesIn) / best / 1e9)) GB/s in"
      )
    }
    for dtype in [DType.f16, .bf16, .f8e4m3, .f8e5m2] where chosen.isEmpty {
      let width = dtype.bitWidth / 8
      time("encode f32 → \(dtype.rawValue)", bytesIn: count * 4) {
        values.withUnsafeBufferPointer { v in
          bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(v, to: dtype, into: $0, policy: .clamp) }
        }
      }
      time("decode \(dtype.rawValue) → f32", bytesIn: count * width) {
        bytes.withUnsafeBytes { raw in
          out.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: dtype, into: $0) }
        }
      }
    }
    values.withUnsafeBufferPointer { v in
      bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(v, to: .f32, into: $0, policy: .clamp) }
    }
    time("decode F32 → f32", bytesIn: count * 4) {
      bytes.withUnsafeBytes { raw in
        out.withUnsafeMutableBufferPointer { FloatCodec.decode(raw, dtype: .f32, into: $0) }
      }
    }
    for type in [GGMLType.q8_0, .q4_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]
    where chosen.isEmpty || chosen.contains(type) {
      let size = type.byteCount(elements: count)
      for method in GGMLQuantizerMethod.allCases where method == .reference || type != .q8_0 {
        time("quantize \(type.name) (\(method.rawValue))", bytesIn: count * 4) {
          values.withUnsafeBufferPointer { v in
            bytes.withUnsafeMutableBytes {
              GGMLQuantizer.quantize(
                v, type: type, method: method, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<size]))
            }
          }
        }
      }
      time("dequantize \(type.name)", bytesIn: size) {
        bytes.withUnsafeBytes { raw in
          out.withUnsafeMutableBufferPointer {
            GGMLQuantizer.dequantize(UnsafeRawBufferPointer(rebasing: raw[0..<size]), type: type, into: $0)
          }
        }
      }
    }
  }
}
