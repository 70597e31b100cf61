import Foundation
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// The UNet against diffusers' `UNet2DConditionModel` on the tiny fixtures
/// (Fixtures/golden/unet.safetensors, made by Scripts/fixtures/make_goldens.py).
@Suite struct UNetTests {
  static let golden = try! ModelWeights(path: TestPaths.fixture("golden/unet.safetensors"))

  static func unet(_ variant: String) throws -> UNet {
    let weights = try ModelWeights(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-\(variant).safetensors"))
    return try UNet(weights: weights.scoped("model.diffusion_model."), headDimension: 16)
  }

  /// `actual` against the golden tensor `key`: same shape, close values.
  func expectClose(_ actual: Tensor, _ key: String, nmse: Double = 1e-8) throws {
    let expected = try Self.golden.tensor(key)
    #expect(actual.shape == expected.shape, "\(key): shape \(actual.shape) vs \(expected.shape)")
    TestSupport.expectClose(actual.scalars, expected.scalars, key, nmse: nmse)
  }

  @Test func topologyIsReadFromTheWeights() throws {
    let model = try Self.unet("eps")
    #expect(model.modelChannels == 32)
    #expect(model.contextDimension == 32)
    #expect(model.admChannels == 1552)
    #expect(model.downsampleCount == 2)
    // depth (0, 1, 2): level 1 has 2 × 1, level 2 has 2 × 2, middle 2, output 3 × 2 + 3 × 1.
    #expect(model.transformerBlockCount == 2 + 4 + 2 + 6 + 3)
  }

  @Test(arguments: [
    ("eps", "t999", Float(999)), ("eps", "t500", 500), ("eps", "t37_25", 37.25),
    ("vpred", "t999", 999), ("vpred", "t250", 250),
  ])
  func forwardMatchesDiffusers(variant: String, name: String, timestep: Float) throws {
    let model = try Self.unet(variant)
    let x = try Self.golden.tensor("\(variant).x")
    let y = try Self.golden.tensor("\(variant).y")
    let context = try Self.golden.tensor("\(variant).context")
    try expectClose(model.rawEmbedding(timesteps: [timestep], y: y), "\(variant).\(name).emb")
    try expectClose(sinusoidalEmbedding([timestep], dimension: 32), "\(variant).\(name).t_emb")
    let cache = try model.crossAttention(for: [context])
    let output = try model(x, timesteps: [timestep], crossAttention: cache, y: y)
    try expectClose(output, "\(variant).\(name).out")
  }

  /// The step loop reuses the activation arena: once sized by the first step, later steps (other
  /// timesteps, same shapes) allocate no new activation memory, and give the same answer again.
  @Test func repeatedStepsReuseTheActivationArena() throws {
    let model = try Self.unet("eps")
    let x = try Self.golden.tensor("eps.x")
    let y = try Self.golden.tensor("eps.y")
    let cache = try model.crossAttention(for: [try Self.golden.tensor("eps.context")])
    let first = try model(x, timesteps: [999], crossAttention: cache, y: y).scalars
    let capacity = model.arena.capacity
    #expect(capacity > 0)
    for timestep: Float in [700, 400, 100] {
      _ = try model(x, timesteps: [timestep], crossAttention: cache, y: y)
    }
    #expect(model.arena.capacity == capacity, "a later step grew the activation arena")
    #expect(try model(x, timesteps: [999], crossAttention: cache, y: y).scalars == first)
  }

  @Test func longContextOf154Tokens() throws {
    let model = try Self.unet("eps")
    let cache = try model.crossAttention(for: [try Self.golden.tensor("eps.long_context")])
    let output = try model(
      try Self.golden.tensor("eps.x"), timesteps: [600], crossAttention: cache,
      y: try Self.golden.tensor("eps.y"))
    try expectClose(output, "eps.long_context.t600.out")
  }

  @Test func batchOfTwoWithItsOwnContexts() throws {
    let model = try Self.unet("eps")
    let contexts = try Self.golden.tensor("eps.batch2.context")
    let cache = try model.crossAttention(for: [contexts.slice(0..<1), contexts.slice(1..<2)])
    let output = try model(
      try Self.golden.tensor("eps.batch2.x"),
      timesteps: try Self.golden.tensor("eps.batch2.t").scalars, crossAttention: cache,
      y: try Self.golden.tensor("eps.batch2.y"))
    try expectClose(output, "eps.batch2.out")
  }

  @Test func badInputsAreTypedErrors() throws {
    let model = try Self.unet("eps")
    let cache = try model.crossAttention(for: [try Self.golden.tensor("eps.context")])
    let y = try Self.golden.tensor("eps.y")
    #expect(throws: ModelError.self) {  // 6×6 is not a multiple of 4
      _ = try model(Tensor(zeros: [1, 4, 6, 6]), timesteps: [1], crossAttention: cache, y: y)
    }
    #expect(throws: ModelError.self) {
      _ = try model(Tensor(zeros: [1, 4, 8, 8]), timesteps: [1], crossAttention: cache, y: Tensor(zeros: [1, 7]))
    }
    #expect(throws: ModelError.self) {
      _ = try model.crossAttention(for: [Tensor(zeros: [1, 77, 31])])
    }
    // Wrong head size for the widths.
    let weights = try ModelWeights(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors"))
    #expect(throws: ModelError.self) {
      _ = try UNet(weights: weights.scoped("model.diffusion_model."), headDimension: 48)
    }
    // A text-encoder scope has no UNet: the error names the missing key.
    do {
      _ = try UNet(weights: weights.scoped("conditioner."))
      Issue.record("built a UNet from text-encoder weights")
    } catch let error as ModelError {
      #expect("\(error)".contains("input_blocks.0.0.weight"))
    }
  }
}
