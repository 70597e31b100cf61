import Foundation
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// Batched rendering: several images (and their CFG rows) in one UNet batch give each image the
/// bytes it gets alone, and the batch is sized by a memory budget, so memory does not grow with
/// the number of images.
@Suite struct BatchTests {
  static func settings(_ count: Int, sampler: SamplerKind = .eulerAncestral) -> [GenerationSettings] {
    let prompts = ["red circle, white background", "blue triangle, black background", "green square", "a"]
    return (0..<count).map { index in
      var settings = GenerationSettings(prompt: prompts[index % prompts.count])
      settings.negative = index == 1 ? "blurry" : ""
      settings.steps = 3
      settings.cfg = index == 2 ? 1 : 5  // image 2 runs without its unconditional row
      settings.sampler = sampler
      settings.seed = UInt64(40 + index)
      settings.width = 64
      settings.height = 64
      return settings
    }
  }

  /// Rows of a UNet batch are computed from their own sample only: the conditional and
  /// unconditional rows of one image give the same bits inside a batch of six rows.
  @Test func unetRowsDoNotDependOnTheBatch() throws {
    let pipeline = try PipelineTests.pipeline("eps")
    let unet = pipeline.unet
    let contexts = try (0..<3).map { index in
      try pipeline.text.encode(prompt: "shape \(index)", negative: "", style: .comfyUI)
    }
    let rows = contexts.flatMap { [$0.0, $0.1] }
    var generator = TorchGenerator(seed: 3)
    let latents = Tensor(shape: [6, 4, 8, 8], values: generator.randn(count: 6 * 4 * 8 * 8))
    let timesteps: [Float] = [999, 999, 500.5, 500.5, 10, 10]
    let y = Tensor(zeros: [6, unet.admChannels ?? 0])
    for row in 0..<6 {
      y.batch(row).copy(from: rows[row].admVector(originalSize: (64, 64), crop: (0, 0), targetSize: (64, 64)))
    }
    let all = try unet(
      latents, timesteps: timesteps, crossAttention: unet.crossAttention(for: rows.map(\.context)), y: y)
    for pair in 0..<3 {
      let range = 2 * pair..<2 * pair + 2
      let alone = try unet(
        latents.slice(range).copied, timesteps: Array(timesteps[range]),
        crossAttention: unet.crossAttention(for: rows[range].map(\.context)), y: y.slice(range).copied)
      #expect(alone.scalars == all.slice(range).scalars, "rows \(range)")
    }
  }

  /// Three images sampled as one batch equal each image rendered alone, bit for bit, for every
  /// sampler (ancestral noise per image, DPM++'s history per image, an image without CFG).
  @Test(arguments: SamplerKind.allCases)
  func batchedImagesEqualSingleRenders(sampler: SamplerKind) throws {
    let pipeline = try PipelineTests.pipeline("eps")
    let settings = Self.settings(3, sampler: sampler)
    var batched: [GenerationResult] = []
    var steps: [Int] = []
    try pipeline.generate(
      batch: settings, onStep: { step, _ in steps.append(step) },
      each: { index, result in
        #expect(index == batched.count)
        batched.append(result)
      })
    #expect(steps == [1, 2, 3], "one callback per step of the batch")
    for (setting, result) in zip(settings, batched) {
      let alone = try pipeline.generate(setting)
      #expect(result.batchImages == 3 && alone.batchImages == 1)
      #expect(result.image.scalars == alone.image.scalars, "image of seed \(setting.seed)")
      #expect(result.stepLatents == alone.stepLatents)
      #expect(result.stepDenoised == alone.stepDenoised)
      #expect(result.timesteps == alone.timesteps)
    }
    var other = settings
    other[1].steps = 4
    #expect(throws: ModelError.self) { try pipeline.generate(batch: other) { _, _ in } }
  }

  /// The walk over the forward's tensor requests gives the arena's own peak, so a batch can be
  /// sized before it runs.
  @Test func activationPeakMatchesTheArena() throws {
    let pipeline = try PipelineTests.pipeline("eps")
    let unet = pipeline.unet
    let context = try pipeline.text.encode("")
    for (batch, height, width) in [(1, 8, 8), (2, 8, 16), (5, 16, 8)] {
      unet.releaseWorkingMemory()
      let cache = try unet.crossAttention(for: [Tensor](repeating: context.context, count: batch))
      let y = Tensor(zeros: [batch, unet.admChannels ?? 0])
      _ = try unet(
        Tensor(zeros: [batch, 4, height, width]), timesteps: [Float](repeating: 500, count: batch),
        crossAttention: cache, y: y)
      #expect(unet.activationPeak(batch: batch, height: height, width: width) == unet.arena.peakCount)
    }
    #expect(
      unet.activationPeak(batch: 6, height: 8, width: 8) == 6 * unet.activationPeak(batch: 1, height: 8, width: 8))
  }

  /// `generate(_:batchBytes:)` batches as many images as the budget holds (one at least), so the
  /// UNet's activation memory is the same for 2 images and for 5; the images do not change.
  @Test func budgetChunksTheImagesAndBoundsMemory() throws {
    let settings = Self.settings(5)
    let probe = try PipelineTests.pipeline("eps")
    let prompts = try probe.encodePrompts(Array(settings[0..<2]))
    let budget = probe.batchBytes(Array(settings[0..<2]), prompts: prompts)

    func run(_ settings: [GenerationSettings], budget: Int) throws -> (images: [[Float]], batches: [Int], peak: Int) {
      let pipeline = try PipelineTests.pipeline("eps")
      var images: [[Float]] = [], batches: [Int] = [], advanced: [Int] = []
      var peak = 0
      try pipeline.generate(
        settings, batchBytes: budget, onSteps: { advanced.append($0) },
        each: { index, result in
          #expect(index == images.count)
          images.append(result.image.scalars)
          if batches.reduce(0, +) == index { batches.append(result.batchImages) }
          peak = pipeline.unet.activationPeakFloats
        })
      #expect(advanced.reduce(0, +) == settings.count * 3, "every image-step reported once")
      return (images, batches, peak)
    }
    let two = try run(Array(settings[0..<2]), budget: budget)
    let five = try run(settings, budget: budget)
    let alone = try run(settings, budget: 0)
    #expect(two.batches == [2])
    // Image 2 has no unconditional row, so images 2 and 3 take 3 rows: within the 4-row budget.
    #expect(five.batches == [2, 2, 1])
    #expect(alone.batches == [1, 1, 1, 1, 1])
    #expect(five.images == alone.images)
    #expect(Array(five.images[0..<2]) == two.images)
    #expect(five.peak <= two.peak, "memory does not grow with the number of images")
  }

  /// Equal contexts (several images' one negative prompt) share one set of keys and values.
  @Test func crossAttentionSharesEqualContexts() throws {
    let pipeline = try PipelineTests.pipeline("eps")
    let empty = try pipeline.text.encode("")
    let other = try pipeline.text.encode("red")
    let copy = empty.context.copied
    let cache = try pipeline.unet.crossAttention(for: [empty.context, other.context, copy])
    #expect(cache.keys[0][0].storage === cache.keys[0][2].storage)
    #expect(cache.keys[0][0].storage !== cache.keys[0][1].storage)
  }
}

extension Tensor {
  /// A copy in its own storage.
  fileprivate var copied: Tensor { Tensor(shape: shape, values: scalars) }
}
