import Checkpoint
import Foundation
import Tensors
import TestSupport
import Testing

@testable import Diffusion

/// The full 8-step Euler CFG run (UNet + schedule + sampler + guidance) against the diffusers/
/// k-diffusion run in Fixtures/golden/euler.safetensors, from the recorded contexts.
@Suite struct EulerRunTests {
  static let golden = try! ModelWeights(path: TestPaths.fixture("golden/euler.safetensors"))

  @Test(arguments: ["eps", "vpred"])
  func eightStepEulerWithCFG(variant: String) throws {
    let g = Self.golden
    let weights = try ModelWeights(path: TestPaths.fixture("tiny-sdxl/tiny-sdxl-\(variant).safetensors"))
    let unet = try UNet(weights: weights.scoped("model.diffusion_model."), headDimension: 16)
    let vpred = variant == "vpred"
    let schedule = DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: vpred ? .comfyUI : nil)
    let network = NetworkDenoiser(prediction: vpred ? .v : .epsilon, schedule: schedule)
    let sigmas = try schedule.sigmas(steps: 8, scheduler: .normal)
    #expect(Closeness(sigmas, try g.tensor("\(variant).sigmas").scalars).nmse <= 1e-12)
    let model = try GuidedUNet(
      unet: unet, network: network, guidance: ClassifierFreeGuidance(scale: 5), latentShape: [1, 4, 8, 8],
      conditional: try g.tensor("\(variant).cond.context"), unconditional: try g.tensor("\(variant).uncond.context"),
      conditionalY: try g.tensor("\(variant).cond.y"), unconditionalY: try g.tensor("\(variant).uncond.y"))
    var generator = TorchGenerator(seed: 42)
    let noise = generator.randn(count: 256)
    #expect(noise == (try g.tensor("\(variant).noise").scalars))
    let scale = network.initialNoiseScale(firstSigma: sigmas[0])
    let start = noise.map { $0 * scale }
    #expect(Closeness(start, try g.tensor("\(variant).x_init").scalars).nmse <= 1e-12)
    var stepErrors: [Double] = []
    let final = try EulerSampler().sample(
      start, sigmas: sigmas, denoiser: model.denoiser, noise: nil,
      onStep: { step, _, x, _ in
        stepErrors.append((try? Closeness(x, g.tensor("\(variant).step\(step).x").scalars).nmse) ?? .infinity)
      })
    #expect(model.timesteps == (try g.tensor("\(variant).timesteps").scalars))
    #expect(stepErrors.count == 8 && stepErrors.allSatisfy { $0 <= 1e-8 }, "per-step NMSE \(stepErrors)")
    // The bar: the final latent within 1e-3 (relative); NMSE here is far tighter.
    let closeness = Closeness(final, try g.tensor("\(variant).final").scalars)
    #expect(closeness.nmse <= 1e-8, "\(closeness)")
  }
}
