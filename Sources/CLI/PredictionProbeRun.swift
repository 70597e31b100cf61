import Checkpoint
import Diffusion
import Foundation
import Tensors
import Verification

/// Running the prediction-type probe on a loaded pipeline, for `verify` and `info --probe`.
enum PredictionProbeRun {
  /// What the probe found: the measurements, the verdict against what the file declares, and a
  /// note when it had to probe a synthetic latent.
  struct Outcome {
    let result: PredictionProbe.Result
    let verdict: PredictionVerdict
    let note: String?
  }

  /// The probe on the model's own VAE latent of `PredictionProbe.testImage`, at the render size
  /// capped at 512² (SDXL's UNet behaves the same there and it costs 8 evaluations); on a smooth
  /// synthetic latent when the file has no VAE encoder.
  static func run(_ pipeline: SDXLPipeline, size: (Int, Int)) throws -> Outcome {
    let granularity = pipeline.sizeGranularity
    let width = max(granularity, min(size.0, 512) / granularity * granularity)
    let height = max(granularity, min(size.1, 512) / granularity * granularity)
    let encoder = try AutoencoderKL(
      checkpoint: pipeline.weights, loadEncoder: true, compute: pipeline.compute)
    let clean: Tensor
    var note: String?
    if encoder.hasEncoder {
      let image = try PredictionProbe.testImage(width: width, height: height)
      clean = try encoder.encode(image.encoderInput()).latent
    } else {
      let factor = pipeline.vae.configuration.downsampleFactor
      clean = try PredictionProbe.smoothLatent(
        channels: pipeline.unet.inChannels, height: height / factor, width: width / factor)
      note =
        "prediction probe: the file has no VAE encoder, so it probed a synthetic latent (less reliable)"
    }
    let empty = try pipeline.text.encode("")
    let y = empty.admVector(
      originalSize: (height, width), crop: (0, 0), targetSize: (height, width))
    let result = try PredictionProbe.run(
      unet: pipeline.unet, context: empty.context, y: y, cleanLatent: clean)
    let file = pipeline.weights.file
    let declared = PredictionDetector.detect(keys: Set(file.tensors.map(\.name)), metadata: file.metadata)
    return Outcome(result: result, verdict: PredictionVerdict(result: result, report: declared), note: note)
  }

  /// Loads `path` and probes it at its native size (see `run`).
  static func probe(path: String, headDim: Int?) throws -> Outcome {
    // Parsed, not built: ArgumentParser's wrappers trap when read without parsing.
    let options = try ModelOptions.parse(headDim.map { ["--head-dim", String($0)] } ?? [])
    let weights = try ModelWeights(path: path)
    let (behaviour, _) = options.behaviour(of: weights)
    let pipeline = try SDXLPipeline(
      weights: weights, behaviour: behaviour, headDimension: options.headDimension(of: weights),
      compute: options.computeContext())
    return try run(pipeline, size: Render.defaultSize(pipeline))
  }
}
