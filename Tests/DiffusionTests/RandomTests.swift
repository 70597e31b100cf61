import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Diffusion

@Suite struct TorchRandomTests {
  @Test func mersenneTwisterReference() {
    // std::mt19937 with its default seed 5489: the 10000th output is 4123659995 (C++ standard).
    var engine = MT19937(seed: 5489)
    var value: UInt32 = 0
    for _ in 0..<10_000 { value = engine.next() }
    #expect(value == 4_123_659_995)
  }

  /// Every tensor of randn.safetensors: `<path>/<call>/seed=<s>/n=<n>`, bit for bit.
  @Test(arguments: TorchNormalPath.allCases)
  func bitExactAgainstTorch(path: TorchNormalPath) throws {
    let file = try SafeTensorsFile(path: TestPaths.fixture("golden/sampling/randn.safetensors"))
    var checked = 0
    for tensor in file.tensors where tensor.name.hasPrefix(path.rawValue + "/") {
      let parts = tensor.name.split(separator: "/")
      guard parts.count == 4, let seed = Int64(parts[2].dropFirst(5)),
        let count = Int(parts[3].dropFirst(2))
      else {
        Issue.record("unexpected name \(tensor.name)")
        continue
      }
      let bytes = try file.data(named: tensor.name)
      let expected = (0..<count).map {
        Float(bitPattern: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))
      }
      var generator = TorchGenerator(signedSeed: seed, normalPath: path)
      let actual: [Float]
      switch parts[1] {
      case "rand": actual = generator.rand(count: count)
      case "sequence": actual = [3, 5, 20, 1, 17, 2].flatMap { generator.randn(count: $0) }
      default: actual = generator.randn(count: count)
      }
      let mismatches = zip(actual, expected).filter { $0.bitPattern != $1.bitPattern }.count
      #expect(actual.count == count && mismatches == 0, "\(tensor.name): \(mismatches) differ")
      checked += 1
    }
    #expect(checked >= 100)
  }

  @Test func negativeSeedsWrap() {
    var a = TorchGenerator(signedSeed: -1)
    var b = TorchGenerator(seed: UInt64.max)
    #expect(a.randn(count: 20) == b.randn(count: 20))
  }

  @Test func noiseSourceContinuesTheStream() {
    let source = TorchNoiseSource(seed: 5)
    let first = source.next(count: 32) + source.next(count: 32)
    var generator = TorchGenerator(seed: UInt64(5))
    #expect(first == generator.randn(count: 32) + generator.randn(count: 32))
  }
}
