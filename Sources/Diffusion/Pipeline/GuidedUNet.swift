import Foundation
import Tensors

/// The UNet as a k-diffusion denoiser with classifier-free guidance, for one image or several
/// rendered in lockstep: at each σ it runs every image's conditional and unconditional prediction
/// as one UNet batch (one call, larger gemms, each stored weight widened once for all of them),
/// converts each to a denoised sample by the prediction type and combines each image's pair.
///
/// Every kernel of the UNet computes a sample's rows from that sample alone, so an image's result
/// is the same bit for bit whatever else is in the batch (`BatchTests`).
/// Cross-attention keys and values are computed once per distinct context, here.
public final class GuidedUNet {
  /// One image's guidance and conditioning.
  public struct Image {
    /// The guidance scale and rescale.
    public var guidance: ClassifierFreeGuidance
    /// Contexts `[1, tokens, width]` (token counts may differ).
    public var conditional: Tensor, unconditional: Tensor
    /// adm vectors `[1, admChannels]`, or nil for a UNet without.
    public var conditionalY: Tensor?, unconditionalY: Tensor?

    public init(
      guidance: ClassifierFreeGuidance, conditional: Tensor, unconditional: Tensor, conditionalY: Tensor?,
      unconditionalY: Tensor?
    ) {
      self.guidance = guidance
      self.conditional = conditional
      self.unconditional = unconditional
      self.conditionalY = conditionalY
      self.unconditionalY = unconditionalY
    }

    /// UNet rows this image takes: the conditional, and the unconditional when guidance needs it.
    public var rowCount: Int { guidance.needsUnconditional ? 2 : 1 }
  }

  /// The network.
  public let unet: UNet
  /// ε or v, the schedule and the σ → t rule.
  public let network: NetworkDenoiser
  /// The images, in batch order.
  public let images: [Image]
  /// The guidance and scale of the first image (the only one for a single-image model).
  public var guidance: ClassifierFreeGuidance { images[0].guidance }
  /// The latent shape `[1, C, H, W]` the sampler's flat arrays are read as.
  public let latentShape: Shape
  /// The timestep fed to the UNet at each call so far, in order (for reports and tests).
  public private(set) var timesteps: [Float] = []

  private let cache: UNet.CrossAttentionCache
  private let y: Tensor?
  /// UNet rows in the batch (1 or 2 per image).
  public let rowCount: Int

  /// A single image (the conditional and unconditional contexts run as a batch of two).
  /// - Parameters:
  ///   - conditional, unconditional: contexts `[1, tokens, width]` (token counts may differ).
  ///   - conditionalY, unconditionalY: adm vectors `[1, admChannels]`, or nil for a UNet without.
  public convenience init(
    unet: UNet, network: NetworkDenoiser, guidance: ClassifierFreeGuidance, latentShape: Shape,
    conditional: Tensor, unconditional: Tensor, conditionalY: Tensor?, unconditionalY: Tensor?
  ) throws {
    try self.init(
      unet: unet, network: network, latentShape: latentShape,
      images: [
        Image(
          guidance: guidance, conditional: conditional, unconditional: unconditional, conditionalY: conditionalY,
          unconditionalY: unconditionalY)
      ])
  }

  /// Several images of the same latent shape, sampled in lockstep (`denoise(batch:sigma:)`).
  public init(unet: UNet, network: NetworkDenoiser, latentShape: Shape, images: [Image]) throws {
    guard latentShape.rank == 4, latentShape[0] == 1 else {
      throw ModelError.invalidInput(reason: "latent shape \(latentShape) must be [1, C, H, W]")
    }
    guard !images.isEmpty else { throw ModelError.invalidInput(reason: "no image to denoise") }
    self.unet = unet
    self.network = network
    self.latentShape = latentShape
    self.images = images
    var contexts: [Tensor] = [], ys: [Tensor?] = []
    for image in images {
      contexts.append(image.conditional)
      ys.append(image.conditionalY)
      if image.guidance.needsUnconditional {
        contexts.append(image.unconditional)
        ys.append(image.unconditionalY)
      }
    }
    rowCount = contexts.count
    cache = try unet.crossAttention(for: contexts)
    let present = ys.compactMap { $0 }
    if present.isEmpty {
      y = nil
    } else {
      guard present.count == ys.count, let first = present.first, first.shape.rank == 2, first.shape[0] == 1,
        present.allSatisfy({ $0.shape == first.shape })
      else {
        throw ModelError.invalidInput(
          reason: "adm vectors \(present.map { "\($0.shape)" }) must all be [1, width], one per context")
      }
      let stacked = Tensor(zeros: [present.count, first.shape[1]])
      for (row, vector) in present.enumerated() { stacked.batch(row).copy(from: vector) }
      y = stacked
    }
  }

  /// Bytes of UNet memory a batch of `rows` rows of `latentShape` needs besides the weights: the
  /// activations (`UNet.activationPeak`) and the latents in and out.
  public static func workingBytes(unet: UNet, rows: Int, latentShape: Shape) -> Int {
    let (height, width) = (latentShape[2], latentShape[3])
    let activations = unet.activationPeak(batch: rows, height: height, width: width)
    let latents = 2 * rows * latentShape.count / Swift.max(1, latentShape[0])
    return 4 * (activations + latents)
  }

  /// D(x, σ) with guidance, for the samplers (a single-image model).
  public func denoise(_ x: [Float], sigma: Float) throws -> [Float] {
    guard images.count == 1 else {
      throw ModelError.invalidInput(reason: "\(images.count) images: use denoise(batch:sigma:)")
    }
    return try denoise(batch: [x], sigma: sigma)[0]
  }

  /// D(xᵢ, σ) with each image's guidance, for every image at once: one UNet call.
  public func denoise(batch xs: [[Float]], sigma: Float) throws -> [[Float]] {
    guard xs.count == images.count, xs.allSatisfy({ $0.count == latentShape.count }) else {
      throw ModelError.invalidInput(
        reason: "\(xs.count) samples of \(xs.map(\.count)) values for \(images.count) latents \(latentShape)")
    }
    let t = network.timestep(sigma: sigma)
    timesteps.append(t)
    var batchShape = latentShape
    batchShape[0] = rowCount
    let latents = Tensor(zeros: batchShape)
    var row = 0
    for (image, x) in zip(images, xs) {
      let input = network.scaledInput(x, sigma: sigma)
      for _ in 0..<image.rowCount {
        (latents.pointer + row * input.count).update(from: input, count: input.count)
        row += 1
      }
    }
    let output = try unet(
      latents, timesteps: [Float](repeating: t, count: rowCount), crossAttention: cache, y: y)
    row = 0
    var results: [[Float]] = []
    for (image, x) in zip(images, xs) {
      let conditional = network.denoised(output: output.batch(row).scalars, x: x, sigma: sigma)
      guard image.guidance.needsUnconditional else {
        results.append(conditional)
        row += 1
        continue
      }
      let unconditional = network.denoised(output: output.batch(row + 1).scalars, x: x, sigma: sigma)
      results.append(
        image.guidance.combine(conditional: conditional, unconditional: unconditional, x: x, sigma: sigma))
      row += 2
    }
    return results
  }

  /// This model as a `Denoiser` closure (a single-image model).
  public var denoiser: Denoiser { { [unowned self] x, sigma in try self.denoise(x, sigma: sigma) } }

  /// This model as a `BatchDenoiser` closure.
  public var batchDenoiser: BatchDenoiser {
    { [unowned self] xs, sigma in try self.denoise(batch: xs, sigma: sigma) }
  }
}
