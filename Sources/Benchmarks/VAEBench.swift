import Diffusion
import Foundation
import Tensors

/// The VAE decode on a full-size SDXL file (random weights):
/// `Benchmarks vae --file PATH [--size 1024] [--whole-planes] [--direct-conv] [--peak] [--threads N] [--out RAW]`
/// (`--direct-conv`: 3×3 convolutions without Winograd's form).
///
/// Decodes one seeded random latent to a `size`² image with ResnetBlocks in bands (the default) or
/// on whole planes, after one warm-up decode at 256² (as the PyTorch peer), and prints the decode
/// time, its GFLOP/s (the decoder's dense FLOPs over the time; with `--peak`, as a share of the
/// better of the sgemm peaks measured just before and just after it), the resident memory after
/// it, and its time by kind of operation and shape (`ComputeContext.profile`); `Scripts/bench vae` samples the peaks from outside and compares the
/// two runs' images (`--out` writes the raw Float32 image) bit for bit.
enum VAEBench {
  static func run(_ arguments: [String]) throws {
    guard let path = arguments.value(after: "--file") else {
      throw BenchError.usage("vae --file PATH [--size N] [--whole-planes] [--direct-conv] [--threads N] [--out RAW]")
    }
    let size = arguments.value(after: "--size").flatMap(Int.init) ?? 1024
    let threads = arguments.value(after: "--threads").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount
    ThreadPool.useShared(threadCount: threads)
    let compute = ComputeContext(pool: ThreadPool.shared)
    compute.usesWinogradConvolution = !arguments.contains("--direct-conv")
    let vae = try AutoencoderKL(checkpoint: try ModelWeights(path: path), loadEncoder: false, compute: compute)
    vae.wholePlanes = arguments.contains("--whole-planes")
    func latent(_ size: Int) -> Tensor {
      let latent = Tensor(zeros: [1, vae.configuration.latentChannels, size / 8, size / 8])
      var state: UInt64 = 1234
      for index in 0..<latent.count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        latent.pointer[index] = Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000 * 4
      }
      return latent
    }
    // One warm-up decode at 256², as the PyTorch peer makes (weights widened and paged in once).
    _ = try vae.decode(latent(256))
    let measuresPeak = arguments.contains("--peak")
    let before = measuresPeak ? UNetBench.sgemmPeak(compute) : 0
    compute.profile = OperationProfile()
    let started = Date()
    let image = try vae.decode(latent(size))
    let seconds = Date().timeIntervalSince(started)
    let profile = compute.profile!
    compute.profile = nil
    let memory = RenderBench.residentMemory()
    // The peak again right after: this VM's speed moves within seconds.
    let after = measuresPeak ? UNetBench.sgemmPeak(compute) : 0
    let operations = decoderOperations(vae.configuration, height: size, width: size)
    let rate = operations / seconds / 1e9
    let share =
      measuresPeak
      ? String(
        format: " = %.0f %% of the sgemm peak around it (%.1f before, %.1f after)", 100 * rate / max(before, after),
        before, after) : ""
    print(
      String(
        format: "vae decode %d² (%@): %.2f s, %.2f TFLOP, %.1f GFLOP/s%@; anon %d MB, file %d MB after; "
          + "peak total RSS %d MB (VmHWM)", size, vae.wholePlanes ? "whole planes" : "bands", seconds,
        operations / 1e12, rate, share, memory.anon / 1024, memory.file / 1024, peakResidentKB() / 1024))
    UNetBench.printBreakdown(profile, forward: seconds, peak: measuresPeak ? max(before, after) : .infinity)
    if measuresPeak {
      UNetBench.printSustained(compute, seconds: seconds, rate: rate, burst: max(before, after), what: "the decode")
    }
    if let out = arguments.value(after: "--out") {
      let data = Data(bytes: image.pointer, count: image.count * MemoryLayout<Float>.size)
      try data.write(to: URL(fileURLWithPath: out))
    }
  }

  /// The decoder's dense FLOPs (2 per multiply-add) for an image of `height`×`width`: every
  /// convolution, the mid-block attention's projections and its two products.
  static func decoderOperations(_ configuration: AutoencoderConfiguration, height: Int, width: Int) -> Double {
    var operations = 0.0
    var (rows, columns) = (height / configuration.downsampleFactor, width / configuration.downsampleFactor)
    func convolution(_ inputs: Int, _ outputs: Int, kernel: Int) {
      operations += 2 * Double(outputs * inputs * kernel * kernel) * Double(rows * columns)
    }
    let levels = configuration.levelChannels
    var channels = levels[levels.count - 1]
    convolution(configuration.latentChannels, configuration.latentChannels, kernel: 1)
    convolution(configuration.latentChannels, channels, kernel: 3)
    for _ in 0..<2 {
      convolution(channels, channels, kernel: 3)
      convolution(channels, channels, kernel: 3)
    }
    let tokens = Double(rows * columns), width = Double(channels)
    operations += 4 * 2 * tokens * width * width + 2 * 2 * tokens * tokens * width
    for level in stride(from: levels.count - 1, through: 0, by: -1) {
      for _ in 0...configuration.resBlockCount {
        convolution(channels, levels[level], kernel: 3)
        convolution(levels[level], levels[level], kernel: 3)
        if channels != levels[level] { convolution(channels, levels[level], kernel: 1) }
        channels = levels[level]
      }
      if level > 0 {
        (rows, columns) = (2 * rows, 2 * columns)
        convolution(channels, channels, kernel: 3)
      }
    }
    convolution(channels, configuration.imageChannels, kernel: 3)
    return operations
  }

  /// The process's peak resident memory (VmHWM, anonymous and file-backed together) in kB, kept by
  /// the kernel: exact where an outside sampler can miss a short peak.
  static func peakResidentKB() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
      let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
  }
}
