import Checkpoint
import Foundation
import SafeTensors
import Tensors
import TestSupport
import Testing
import Weights

@testable import Diffusion

/// Weights stay as stored and are widened per layer into one scratch: the results are bit for bit
/// those of a model whose weights were all Float32 to begin with, and the model holds one layer's
/// Float32 matrix, not all of them.
@Suite struct StoredWeightTests {
  static let fp16Path = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")

  /// The fp16 fixture with every float tensor widened to F32 (the values the old engine held).
  static let fp32Path: String = {
    let path = TestPaths.temporaryDirectory("stored-weights") + "/tiny-sdxl-eps-f32.safetensors"
    let source = try! SafeTensorsFile(path: fp16Path)
    let weights = try! ModelWeights(path: fp16Path)
    let entries = source.tensors.map { info -> TensorEntry in
      guard info.dtype == .f16 else {
        return TensorEntry(
          spec: TensorSpec(name: info.name, dtype: info.dtype, shape: info.shape), bytes: source.data(info))
      }
      return TensorEntry(spec: TensorSpec(name: info.name, dtype: .f32, shape: info.shape)) { sink in
        let values = try weights.tensor(info.name).scalars
        try values.withUnsafeBytes { try sink.write($0) }
      }
    }
    try! SafeTensorsWriter.write(to: path, entries: entries, metadata: source.metadata)
    return path
  }()

  static func pipeline(_ path: String) throws -> SDXLPipeline {
    try SDXLPipeline(
      weights: try ModelWeights(path: path), behaviour: ModelBehaviour(prediction: .epsilon, zeroTerminalSNR: false),
      headDimension: 16)
  }

  @Test func fp16WidenedPerLayerEqualsFloat32WeightsBitForBit() throws {
    var settings = GenerationSettings(prompt: "red circle, white background")
    settings.steps = 3
    settings.sampler = .euler
    settings.seed = 7
    settings.width = 64
    settings.height = 64
    let stored = try Self.pipeline(Self.fp16Path).generate(settings)
    let widePipeline = try Self.pipeline(Self.fp32Path)
    let wide = try widePipeline.generate(settings)
    // F32 weights are used in place from the map: nothing was widened into the scratch.
    #expect(widePipeline.unet.weights.scratch.capacity == 0)
    #expect(stored.stepDenoised == wide.stepDenoised)
    #expect(stored.latent.scalars == wide.latent.scalars)
    #expect(stored.image.scalars == wide.image.scalars)
  }

  /// The UNet's only Float32 matrix memory is its scratch, as large as its largest widened layer
  /// weight: any, or only those the kernels do not read as fp16 in place (the linear kernel takes
  /// every matrix, the 3×3 kernel every stride-1 3×3 convolution; the downsamplers, `.op.`, have
  /// stride 2).
  @Test func theUNetHoldsOneLayerOfFloat32() throws {
    let weights = try ModelWeights(path: Self.fp16Path).scoped("model.diffusion_model.")
    let unet = try UNet(weights: weights, headDimension: 16)
    let context = ComputeContext()
    func widened(_ key: String, _ shape: [Int]) -> Bool {
      switch shape.count {
      case 2: return !context.takesFloat16Weights
      case 4:
        return !context.takesFloat16ConvolutionWeights(weightShape: Shape(shape), stride: key.contains(".op.") ? 2 : 1)
      default: return false
      }
    }
    let largest =
      weights.keys.filter { $0.hasSuffix(".weight") && widened($0, weights.shape($0) ?? []) }
      .map { weights.shape($0)!.reduce(1, *) }.max() ?? 0
    #expect(largest > 0)
    let cache = try unet.crossAttention(for: [Tensor(zeros: [1, 77, 32])])
    _ = try unet(Tensor(zeros: [1, 4, 8, 8]), timesteps: [500], crossAttention: cache, y: Tensor(zeros: [1, 1552]))
    #expect(unet.weights.scratch.capacity == largest)
  }

  /// A part of a stored matrix (open_clip's packed q/k/v rows) widens to the same values as the
  /// matching rows of the whole.
  @Test func rowsOfAStoredMatrix() throws {
    let weights = try ModelWeights(path: Self.fp16Path)
    let key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    let shape = try #require(weights.shape(key))
    let whole = try weights.tensor(key).scalars
    let context = ComputeContext()
    let stored = try weights.stored(key, shape: shape, scratch: WeightScratch())
    let width = shape[1], third = shape[0] / 3
    let part = stored.rows(third..<(2 * third)).widened(context)
    #expect(part.shape == Shape(third, width))
    #expect(part.scalars == Array(whole[(third * width)..<(2 * third * width)]))
    // The linear kernel reads the same rows as stored half floats, in place.
    if context.takesFloat16Weights {
      let view = stored.rows(third..<(2 * third)).linearView(context)
      #expect(view.format == .float16)
      #expect(view.tensor().scalars == part.scalars)
    }
  }

  /// Any range of a tensor assembled from parts (a diffusers folder's fused q/k/v) decodes, also
  /// one inside a single part, as the layers' row slices and threaded chunks ask.
  @Test func partialRangesOfAConcatenation() throws {
    let values = (0..<12).map { Float($0) }
    try values.withUnsafeBytes { bytes in
      let parts = try (0..<3).map { index in
        try TensorDecoder(
          name: "p\(index)", bytes: UnsafeRawBufferPointer(rebasing: bytes[(index * 16)..<((index + 1) * 16)]),
          elementCount: 4, encoding: .float(.f32), file: "memory")
      }
      let whole = TensorDecoder.concatenating(parts, name: "qkv")
      for range in [4..<8, 5..<7, 2..<10, 8..<12, 0..<12] {
        var out = [Float](repeating: -1, count: range.count)
        out.withUnsafeMutableBufferPointer { whole.decode(range, into: $0) }
        #expect(out == Array(values[range]), "\(range)")
      }
    }
  }

  #if os(Linux)
    /// Encoding prompts through the pipeline leaves the text encoders' mapped pages out of the
    /// resident set (measured on the mapping's own `Rss` in /proc/self/smaps).
    @Test func encodedPromptsLeaveTheTextEncodersUnmapped() throws {
      let path = TestPaths.temporaryDirectory("stored-weights-rss") + "/model.safetensors"
      try? FileManager.default.removeItem(atPath: path)
      try FileManager.default.copyItem(atPath: Self.fp16Path, toPath: path)
      let pipeline = try Self.pipeline(path)
      var settings = GenerationSettings(prompt: "a photo of a cat, white background")
      settings.negative = "blurry"
      // Encoding without the release maps the towers' pages in …
      _ = try pipeline.text.encode(prompt: settings.prompt, negative: settings.negative)
      let touched = Self.residentKilobytes(of: path)
      // … and the pipeline's own encoding gives them back.
      _ = try pipeline.encodePrompts([settings])
      let released = Self.residentKilobytes(of: path)
      #expect(touched > 0)
      #expect(released < touched, "mapped RSS \(released) kB after encodePrompts, \(touched) kB before")
    }

    /// The `Rss` of every mapping of `path` in this process, in kB.
    static func residentKilobytes(of path: String) -> Int {
      // Read to the end: /proc files report no size, and a one-shot read stops at the first page.
      guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return 0 }
      let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
      var total = 0, inside = false
      for line in text.split(separator: "\n") {
        if let first = line.first, first.isHexDigit, line.contains("-") && line.split(separator: " ").count >= 5 {
          inside = line.hasSuffix(path)
        } else if inside, line.hasPrefix("Rss:") {
          total += Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
      }
      return total
    }
  #endif
}
