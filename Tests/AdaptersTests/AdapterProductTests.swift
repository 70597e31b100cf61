import Adapters
import Foundation
import SafeTensors
import TestSupport
import Testing

/// The row-tiled, rank-concatenated product of `AdapterStack.adapt` (what a bake and a render with
/// `--lora` both use): equal to the float64 formula W + Σ m·s·U·D, also across tile and q/k/v slice
/// boundaries, and bit-identical whatever OpenBLAS's thread count.
@Suite(.serialized) struct AdapterProductTests {
  static let unetKey = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
  static let te2Key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
  // More rows than one tile holds (2²⁰ values / 1280 columns = 819 rows), so tiles are exercised.
  static let unetShape = [1000, 1280]
  static let te2Shape = [3 * 96, 1280]

  /// Deterministic values in [-scale, scale).
  static func values(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
  }

  /// A kohya LoRA file: (module, rank, alpha?, rows, columns) per module, F32 factors.
  static func writeLoRA(
    _ path: String, _ modules: [(name: String, rank: Int, alpha: Float?, rows: Int, columns: Int)], seed: UInt64
  ) throws -> [String: (up: [Float], down: [Float])] {
    var entries: [TensorEntry] = []
    var factors: [String: (up: [Float], down: [Float])] = [:]
    for (index, m) in modules.enumerated() {
      let up = values(m.rows * m.rank, seed: seed &+ UInt64(2 * index), scale: 0.05)
      let down = values(m.rank * m.columns, seed: seed &+ UInt64(2 * index + 1), scale: 0.05)
      factors[m.name] = (up, down)
      for (suffix, data, shape) in [
        ("lora_up.weight", up, [m.rows, m.rank]), ("lora_down.weight", down, [m.rank, m.columns]),
      ] {
        entries.append(
          TensorEntry(spec: TensorSpec(name: "\(m.name).\(suffix)", dtype: .f32, shape: shape)) { sink in
            try data.withUnsafeBytes { try sink.write($0) }
          })
      }
      if let alpha = m.alpha {
        entries.append(
          TensorEntry(spec: TensorSpec(name: "\(m.name).alpha", dtype: .f32, shape: [])) { sink in
            try [alpha].withUnsafeBytes { try sink.write($0) }
          })
      }
    }
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: nil)
    return factors
  }

  @Test func tiledConcatenatedProductMatchesTheFormulaAndIgnoresThreadCount() throws {
    let directory = TestPaths.temporaryDirectory("adapter-products")
    let unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    let te2 = "lora_te2_text_model_encoder_layers_0_self_attn_"
    let a = try Self.writeLoRA(
      directory + "/a.safetensors",
      [
        (unet, 8, 4, 1000, 1280), (te2 + "q_proj", 4, 2, 96, 1280), (te2 + "v_proj", 4, nil, 96, 1280),
      ], seed: 1)
    let b = try Self.writeLoRA(
      directory + "/b.safetensors", [(unet, 16, nil, 1000, 1280), (te2 + "k_proj", 6, 3, 96, 1280)], seed: 100)
    let stack = try AdapterStack([
      AdapterApplication(adapter: try AdapterFile(path: directory + "/a.safetensors"), unet: 0.8, textEncoders: 0.6),
      AdapterApplication(adapter: try AdapterFile(path: directory + "/b.safetensors"), unet: -0.5, textEncoders: 1.5),
    ])
    #expect(stack.targetKeys == [Self.unetKey, Self.te2Key])

    // Float64 reference: W + Σ strength·scale·U·D on each module's row block.
    func reference(
      _ base: [Float], columns: Int,
      _ terms: [(factors: (up: [Float], down: [Float]), rank: Int, factor: Double, row0: Int, rows: Int)]
    ) -> [Double] {
      var out = base.map(Double.init)
      for t in terms {
        for i in 0..<t.rows {
          for j in 0..<columns {
            var sum = 0.0
            for k in 0..<t.rank {
              sum += Double(t.factors.up[i * t.rank + k]) * Double(t.factors.down[k * columns + j])
            }
            out[(t.row0 + i) * columns + j] += t.factor * sum
          }
        }
      }
      return out
    }
    let unetBase = Self.values(1000 * 1280, seed: 7, scale: 1)
    let te2Base = Self.values(288 * 1280, seed: 8, scale: 1)
    let expected = [
      Self.unetKey: reference(
        unetBase, columns: 1280, [(a[unet]!, 8, 0.8 * 0.5, 0, 1000), (b[unet]!, 16, -0.5, 0, 1000)]),
      Self.te2Key: reference(
        te2Base, columns: 1280,
        [
          (a[te2 + "q_proj"]!, 4, 0.6 * 0.5, 0, 96), (b[te2 + "k_proj"]!, 6, 1.5 * 0.5, 96, 96),
          (a[te2 + "v_proj"]!, 4, 0.6, 192, 96),
        ]),
    ]

    let threads = AdapterStack.productThreads
    defer { AdapterStack.productThreads = threads }
    var results: [Int: [String: [Float]]] = [:]
    for count in [1, 2] {
      AdapterStack.productThreads = count
      for (key, shape, base) in [(Self.unetKey, Self.unetShape, unetBase), (Self.te2Key, Self.te2Shape, te2Base)] {
        var values = base
        try stack.apply(key: key, shape: shape, to: &values)
        results[count, default: [:]][key] = values
        let want = try #require(expected[key])
        let scale = want.map(abs).max() ?? 1
        let worst = zip(values, want).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(worst <= 1e-6 * scale, "\(key), \(count) thread(s): max |Δ| \(worst), scale \(scale)")
      }
    }
    for key in [Self.unetKey, Self.te2Key] {
      let one = try #require(results[1]?[key]), two = try #require(results[2]?[key])
      #expect(one.map(\.bitPattern) == two.map(\.bitPattern), "\(key): 1 and 2 OpenBLAS threads differ")
    }
  }

  @Test func nonFiniteFactorsAreRefusedNamingTheTarget() throws {
    let directory = TestPaths.temporaryDirectory("adapter-products-nan")
    let unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    _ = try Self.writeLoRA(directory + "/a.safetensors", [(unet, 4, nil, 1000, 1280)], seed: 3)
    let stack = try AdapterStack([
      AdapterApplication(adapter: try AdapterFile(path: directory + "/a.safetensors"), unet: 1, textEncoders: 1)
    ])
    var values = Self.values(1000 * 1280, seed: 9, scale: 1)
    values[5] = .infinity  // in the first tile
    values[900 * 1280 + 3] = .nan  // in the second
    do {
      try stack.apply(key: Self.unetKey, shape: Self.unetShape, to: &values)
      Issue.record("non-finite values were accepted")
    } catch let error as AdapterError {
      guard case .nonFinite(_, let target, let count) = error else {
        Issue.record("unexpected error \(error)")
        return
      }
      #expect(target == Self.unetKey)
      #expect(count == 2)
    }
  }
}
