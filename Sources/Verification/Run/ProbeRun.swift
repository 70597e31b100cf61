import Checkpoint
import Diffusion
import Foundation
import Tensors

extension PredictionProbe {
  /// What the probe found on a model: the measurements, the verdict against what the file
  /// declares, and a note when it had to probe a synthetic latent.
  public struct Outcome: Sendable {
    public let result: Result
    public let verdict: PredictionVerdict
    public let note: String?
  }

  /// The probe on the model's own VAE latent of `testImage`, at `size` capped at 512² (SDXL's UNet
  /// behaves the same there and it costs 8 evaluations); on a smooth synthetic latent when the file
  /// has no VAE encoder. The verdict compares with the declaration detected when it was loaded.
  public static func run(on model: LoadedModel, size: ImageSize) throws -> Outcome {
    let pipeline = model.pipeline
    let granularity = pipeline.sizeGranularity
    let width = max(granularity, min(size.width, 512) / granularity * granularity)
    let height = max(granularity, min(size.height, 512) / granularity * granularity)
    let encoder = try AutoencoderKL(checkpoint: pipeline.weights, loadEncoder: true, compute: pipeline.compute)
    let clean: Tensor
    var note: String?
    if encoder.hasEncoder {
      let image = try testImage(width: width, height: height)
      clean = try encoder.encode(image.encoderInput()).latent
    } else {
      let factor = pipeline.vae.configuration.downsampleFactor
      clean = try smoothLatent(channels: pipeline.unet.inChannels, height: height / factor, width: width / factor)
      note = "prediction probe: the file has no VAE encoder, so it probed a synthetic latent (less reliable)"
    }
    let empty = try pipeline.text.encode("")
    pipeline.releaseTextEncoders()
    let y = empty.admVector(originalSize: (height, width), crop: (0, 0), targetSize: (height, width))
    let result = try run(
      unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean, batchBytes: model.batchBytes)
    return Outcome(result: result, verdict: PredictionVerdict(result: result, report: model.declaration), note: note)
  }

  /// Opens `path` and probes it at its native size (`info --probe`).
  public static func run(path: String, options: ModelLoadOptions = ModelLoadOptions()) throws -> Outcome {
    let model = try LoadedModel(path: path, options: options)
    return try run(on: model, size: model.defaultSize)
  }
}
