import Foundation
import Tensors

/// The UNet as a k-diffusion denoiser with classifier-free guidance: at each σ it runs the
/// conditional and the unconditional prediction as one batch of two (one UNet call, larger
/// gemms), converts both to denoised samples by the prediction type and combines them.
///
/// Cross-attention keys and values for both prompts are computed once, here.
public final class GuidedUNet {
  /// The network.
  public let unet: UNet
  /// ε or v, the schedule and the σ → t rule.
  public let network: NetworkDenoiser
  /// The guidance scale and rescale.
  public let guidance: ClassifierFreeGuidance
  /// The latent shape `[1, C, H, W]` the sampler's flat arrays are read as.
  public let latentShape: Shape
  /// The timestep fed to the UNet at each call so far, in order (for reports and tests).
  public private(set) var timesteps: [Float] = []

  private let pairCache: UNet.CrossAttentionCache?
  private let conditionalCache: UNet.CrossAttentionCache
  private let pairY: Tensor?
  private let conditionalY: Tensor?

  /// - Parameters:
  ///   - conditional, unconditional: contexts `[1, tokens, width]` (token counts may differ).
  ///   - conditionalY, unconditionalY: adm vectors `[1, admChannels]`, or nil for a UNet without.
  public init(
    unet: UNet, network: NetworkDenoiser, guidance: ClassifierFreeGuidance, latentShape: Shape,
    conditional: Tensor, unconditional: Tensor, conditionalY: Tensor?, unconditionalY: Tensor?
  ) throws {
    guard latentShape.rank == 4, latentShape[0] == 1 else {
      throw ModelError.invalidInput(reason: "latent shape \(latentShape) must be [1, C, H, W]")
    }
    self.unet = unet
    self.network = network
    self.guidance = guidance
    self.latentShape = latentShape
    conditionalCache = try unet.crossAttention(for: [conditional])
    self.conditionalY = conditionalY
    if guidance.needsUnconditional {
      pairCache = try unet.crossAttention(for: [conditional, unconditional])
      if let conditionalY, let unconditionalY {
        guard conditionalY.shape == unconditionalY.shape, conditionalY.shape.rank == 2 else {
          throw ModelError.invalidInput(reason: "adm vectors \(conditionalY.shape) and \(unconditionalY.shape) differ")
        }
        let pair = Tensor(zeros: [2, conditionalY.shape[1]])
        pair.batch(0).copy(from: conditionalY)
        pair.batch(1).copy(from: unconditionalY)
        pairY = pair
      } else {
        pairY = nil
      }
    } else {
      pairCache = nil
      pairY = nil
    }
  }

  /// D(x, σ) with guidance, for the samplers.
  public func denoise(_ x: [Float], sigma: Float) throws -> [Float] {
    guard x.count == latentShape.count else {
      throw ModelError.invalidInput(reason: "sample of \(x.count) values for latent \(latentShape)")
    }
    let input = network.scaledInput(x, sigma: sigma)
    let t = network.timestep(sigma: sigma)
    timesteps.append(t)
    guard let pairCache else {
      let latent = Tensor(shape: latentShape, values: input)
      let output = try unet(latent, timesteps: [t], crossAttention: conditionalCache, y: conditionalY)
      return network.denoised(output: output.scalars, x: x, sigma: sigma)
    }
    var pairShape = latentShape
    pairShape[0] = 2
    let latents = Tensor(zeros: pairShape)
    latents.pointer.update(from: input, count: input.count)
    (latents.pointer + input.count).update(from: input, count: input.count)
    let output = try unet(latents, timesteps: [t, t], crossAttention: pairCache, y: pairY)
    let conditional = network.denoised(output: output.batch(0).scalars, x: x, sigma: sigma)
    let unconditional = network.denoised(output: output.batch(1).scalars, x: x, sigma: sigma)
    return guidance.combine(conditional: conditional, unconditional: unconditional, x: x, sigma: sigma)
  }

  /// This model as a `Denoiser` closure.
  public var denoiser: Denoiser { { [unowned self] x, sigma in try self.denoise(x, sigma: sigma) } }
}
