import Foundation
import Tensors
import Weights

/// A layer weight kept as stored (fp16, bf16, fp8, int8 rows, ggml blocks, f32) in the mapped
/// file, widened to Float32 into its model's scratch only while the layer runs: a full-size SDXL
/// UNet then holds one layer's Float32 copy (≤ 118 MB) instead of 10 GB of them, and where the
/// AVX-512 kernels read fp16 matrices and 3×3 stride-1 convolutions as stored (`linearView`,
/// `convolutionView`) only the rest is widened (the largest, a stride-2 downsampler: 14.7 MB).
/// The widened values are exactly the ones a whole Float32 copy would hold, so results do not
/// change. An F32 weight is used in place from the map, without a copy.
struct StoredWeight {
  let decoder: TensorDecoder
  /// The Float32 shape the layer uses (`[out, in]` or `[out, in, kh, kw]`).
  let shape: Shape
  let scratch: WeightScratch
  /// Where the weight starts in the stored tensor (a part of a packed q/k/v weight), in values.
  var start = 0

  /// The weight as Float32, in the scratch: valid until the next `widened` on the same scratch.
  func widened(_ context: ComputeContext) -> Tensor {
    scratch.widen(decoder, start: start, shape: shape, pool: context.pool)
  }

  /// The weight as Float32 for a kernel: in place when stored as (aligned) F32, else `widened`.
  func view(_ context: ComputeContext) -> WeightView {
    if let direct { return WeightView(pointer: direct, shape: shape) }
    return WeightView(widened(context))
  }

  /// The weight for `context.linear`: the stored half floats in place where the context's kernel
  /// widens them itself while packing (no widened copy in the scratch), else `view`.
  func linearView(_ context: ComputeContext) -> WeightView {
    if context.takesFloat16Weights, let halves = directFloat16 { return WeightView(float16: halves, shape: shape) }
    return view(context)
  }

  /// The weight for `context.conv2d` with `stride`: the stored half floats in place where the
  /// context's 3×3 kernel widens them itself while packing (no widened copy in the scratch), else
  /// `view`.
  func convolutionView(_ context: ComputeContext, stride: Int) -> WeightView {
    if context.takesFloat16ConvolutionWeights(weightShape: shape, stride: stride), let halves = directFloat16 {
      return WeightView(float16: halves, shape: shape)
    }
    return view(context)
  }

  /// The IEEE half floats in the map, when the weight is stored plainly as aligned F16 (a
  /// safetensors F16 tensor or a GGUF F16 one).
  var directFloat16: UnsafeRawPointer? {
    guard decoder.encoding == .float(.f16) || decoder.encoding == .ggml(.f16), let bytes = decoder.storedBytes,
      let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<UInt16>.alignment == 0
    else { return nil }
    return base + start * MemoryLayout<UInt16>.stride
  }

  /// The F32 values in the map, when the weight is stored plainly as aligned F32.
  var direct: UnsafePointer<Float>? {
    guard decoder.encoding == .float(.f32), let bytes = decoder.storedBytes, let base = bytes.baseAddress,
      Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0
    else { return nil }
    return (base + start * MemoryLayout<Float>.stride).assumingMemoryBound(to: Float.self)
  }

  /// Rows `rows` of this `[out, in]` weight (open_clip's packed `[q; k; v]`).
  func rows(_ rows: Range<Int>) -> StoredWeight {
    let width = shape.count / shape[0]
    return StoredWeight(
      decoder: decoder, shape: Shape([rows.count] + Array(shape.dimensions.dropFirst())), scratch: scratch,
      start: start + rows.lowerBound * width)
  }
}

/// The one reusable Float32 buffer a model widens its layer weights into (grown to the largest
/// layer, never shrunk). One per model: a model runs one layer at a time.
final class WeightScratch {
  private var storage = TensorStorage(capacity: 0)
  /// Floats held (the largest weight widened so far).
  var capacity: Int { storage.capacity }
  /// Seconds spent widening so far (what keeping weights as stored costs; for benchmarks).
  private(set) var seconds: Double = 0

  /// Decodes `decoder` into the buffer, split across `pool`'s threads.
  func widen(_ decoder: TensorDecoder, start: Int = 0, shape: Shape, pool: ThreadPool) -> Tensor {
    precondition(
      start + shape.count <= decoder.elementCount, "\(decoder.name): \(decoder.elementCount) values for \(shape)")
    if storage.capacity < shape.count { storage = TensorStorage(capacity: shape.count) }
    let result = Tensor(storage: storage, offset: 0, shape: shape)
    let base = result.pointer
    let started = DispatchTime.now().uptimeNanoseconds
    defer { seconds += Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
    // `decode` takes any range (a ggml block cut between two threads is decoded by both).
    pool.forEachChunk(shape.count, minimumChunk: 1 << 16) { range in
      decoder.decode(
        (start + range.lowerBound)..<(start + range.upperBound),
        into: UnsafeMutableBufferPointer(start: base + range.lowerBound, count: range.count))
    }
    return result
  }
}

extension ModelWeights {
  /// The stored weight `key` read as `shape` (same element count), widened at each use into `scratch`.
  func stored(_ key: String, shape: [Int], scratch: WeightScratch) throws -> StoredWeight {
    let decoder = try self.decoder(key)
    guard decoder.elementCount == shape.reduce(1, *) else {
      throw ModelError.badShape(file: file.path, key: prefix + key, shape: self.shape(key) ?? [], expected: "\(shape)")
    }
    return StoredWeight(decoder: decoder, shape: Shape(shape), scratch: scratch)
  }
}

/// A linear layer `y = x·Wᵀ + b` with its weight `[out, in]` kept as stored.
struct LinearLayer {
  let weight: StoredWeight
  let bias: Tensor?
  var inFeatures: Int { weight.shape[1] }
  var outFeatures: Int { weight.shape[0] }

  /// Loads `<key>.weight` (and `<key>.bias` when present). A 1×1 convolution weight
  /// `[out, in, 1, 1]` is accepted as the same linear map (SD 1.x `proj_in`/`proj_out`).
  init(_ weights: ModelWeights, _ key: String, bias hasBias: Bool? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    guard shape.count == 2 || (shape.count == 4 && shape[2] == 1 && shape[3] == 1) else {
      throw ModelError.badShape(
        file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: "[out, in] (a linear layer)")
    }
    weight = try weights.stored(key + ".weight", shape: [shape[0], shape[1]], scratch: weights.scratch)
    if hasBias == false {
      bias = nil
    } else if hasBias == true {
      bias = try weights.tensor(key + ".bias", shape: [shape[0]])
    } else {
      bias = try weights.optionalTensor(key + ".bias", shape: [shape[0]])
    }
  }

  /// `output = x·Wᵀ + b`, or `output += x·Wᵀ + b` when `accumulate`, for `x` `[N, …, in]` read as
  /// N samples. A sample's rows get the same bits whatever N is: OpenBLAS sends a gemm below
  /// about 100³ multiply-adds to its small-matrix kernel, which sums in another order, so a small
  /// per-sample gemm (an embedding vector, a tiny model's tokens) runs one sample at a time, and
  /// a large one, which takes the blocked path alone or batched, runs as one gemm.
  func callAsFunction(_ context: ComputeContext, _ x: Tensor, into output: Tensor, accumulate: Bool = false) {
    let view = weight.linearView(context)
    let samples = x.shape.rank >= 2 ? x.shape[0] : 1
    let rows = x.shape.rows / Swift.max(1, samples)
    guard samples > 1, rows * inFeatures * outFeatures < Self.smallGemmBound else {
      context.linear(x, weight: view, bias: bias, into: output, accumulate: accumulate)
      return
    }
    for sample in 0..<samples {
      context.linear(
        x.slice(sample..<sample + 1), weight: view, bias: bias, into: output.slice(sample..<sample + 1),
        accumulate: accumulate)
    }
  }

  /// Per-sample multiply-adds below which a batch runs sample by sample: 4× OpenBLAS's small-matrix
  /// limit (100³ in 0.3.21), so both a sample alone and the batch stay on the blocked path above it.
  static let smallGemmBound = 1 << 22
}

/// A 2-D convolution with its weight `[out, in, kh, kw]` kept as stored.
struct ConvolutionLayer {
  let weight: StoredWeight
  let bias: Tensor?
  let stride: Int
  let padding: Int
  var inChannels: Int { weight.shape[1] }
  var outChannels: Int { weight.shape[0] }

  init(_ weights: ModelWeights, _ key: String, stride: Int = 1, padding: Int? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    guard shape.count == 4, shape[2] == shape[3], shape[2] % 2 == 1 else {
      throw ModelError.badShape(
        file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: "[out, in, k, k] with odd k (a convolution)")
    }
    weight = try weights.stored(key + ".weight", shape: shape, scratch: weights.scratch)
    bias = try weights.optionalTensor(key + ".bias", shape: [shape[0]])
    self.stride = stride
    self.padding = padding ?? shape[2] / 2
  }

  func outputShape(for input: Shape) -> Shape {
    ComputeContext.conv2dOutputShape(input: input, weight: weight.shape, stride: stride, padding: padding)
  }

  func callAsFunction(_ context: ComputeContext, _ x: Tensor, into output: Tensor, accumulate: Bool = false) {
    context.conv2d(
      x, weight: weight.convolutionView(context, stride: stride), bias: bias, stride: stride, padding: padding,
      into: output, accumulate: accumulate)
  }
}

/// Affine parameters of a GroupNorm or LayerNorm, with its ε.
struct NormLayer {
  let weight: Tensor
  let bias: Tensor
  let epsilon: Float
  var channels: Int { weight.count }

  init(_ weights: ModelWeights, _ key: String, epsilon: Float, channels: Int? = nil) throws {
    let shape = try weights.requireShape(key + ".weight")
    let count = channels ?? (shape.count == 1 ? shape[0] : -1)
    guard count > 0, shape == [count] else {
      throw ModelError.badShape(
        file: weights.file.path, key: weights.prefix + key + ".weight", shape: shape,
        expected: channels.map { "[\($0)]" } ?? "[C] (a normalisation weight)")
    }
    weight = try weights.tensor(key + ".weight", shape: [count])
    bias = try weights.tensor(key + ".bias", shape: [count])
    self.epsilon = epsilon
  }

  func groupNorm(_ context: ComputeContext, _ x: Tensor, groups: Int = 32, silu: Bool = false, into output: Tensor) {
    context.groupNorm(
      x, groups: groups, epsilon: epsilon, weight: weight, bias: bias,
      activation: silu ? .silu : .none, into: output)
  }

  func layerNorm(_ context: ComputeContext, _ x: Tensor, into output: Tensor) {
    context.layerNorm(x, epsilon: epsilon, weight: weight, bias: bias, into: output)
  }
}

/// The sinusoidal embedding of sgm's `timestep_embedding` (also used for SDXL's size
/// conditioning): for a `dimension`-wide embedding with half = dimension/2,
/// freqs[i] = exp(−ln(10000)·i/half) and the result is [cos(t·freqs) ‖ sin(t·freqs)], in Float32
/// like PyTorch.
public func sinusoidalEmbedding(_ values: [Float], dimension: Int, maxPeriod: Float = 10000) -> Tensor {
  let half = dimension / 2
  let result = Tensor(zeros: [values.count, dimension])
  let logPeriod = Float(Foundation.log(Double(maxPeriod)))
  var frequencies = [Float](repeating: 0, count: half)
  for index in 0..<half {
    frequencies[index] = Foundation.exp(-logPeriod * Float(index) / Float(half))
  }
  for (row, value) in values.enumerated() {
    let line = result.pointer + row * dimension
    for index in 0..<half {
      let argument = value * frequencies[index]
      line[index] = Foundation.cos(argument)
      line[half + index] = Foundation.sin(argument)
    }
  }
  return result
}
