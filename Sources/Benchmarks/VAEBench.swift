import Diffusion
import Foundation
import Tensors

/// The VAE decode on a full-size SDXL file (random weights):
/// `Benchmarks vae --file PATH [--size 1024] [--whole-planes] [--threads N] [--out RAW]`.
///
/// Decodes one seeded random latent to a `size`² image with ResnetBlocks in bands (the default) or
/// on whole planes, and prints the decode time, its GFLOP/s against the convolutions' FLOPs, and the
/// resident memory after it; `Scripts/bench vae` samples the peaks from outside and compares the
/// two runs' images (`--out` writes the raw Float32 image) bit for bit.
enum VAEBench {
  static func run(_ arguments: [String]) throws {
    func value(_ flag: String) -> String? {
      guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count else { return nil }
      return arguments[index + 1]
    }
    guard let path = value("--file") else {
      throw BenchError.usage("vae --file PATH [--size N] [--whole-planes] [--threads N] [--out RAW]")
    }
    let size = value("--size").flatMap(Int.init) ?? 1024
    let threads = value("--threads").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount
    ComputeContext.setBLASThreadCount(threads)
    ThreadPool.useShared(threadCount: threads)
    let compute = ComputeContext(pool: ThreadPool.shared)
    let vae = try AutoencoderKL(checkpoint: try ModelWeights(path: path), loadEncoder: false, compute: compute)
    vae.wholePlanes = arguments.contains("--whole-planes")
    let latent = Tensor(zeros: [1, vae.configuration.latentChannels, size / 8, size / 8])
    var state: UInt64 = 1234
    for index in 0..<latent.count {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      latent.pointer[index] = Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000 * 4
    }
    let started = Date()
    let image = try vae.decode(latent)
    let seconds = Date().timeIntervalSince(started)
    let memory = RenderBench.residentMemory()
    print(
      String(
        format: "vae decode %d² (%@): %.2f s, anon %d MB, file %d MB after", size,
        vae.wholePlanes ? "whole planes" : "bands", seconds, memory.anon / 1024, memory.file / 1024))
    if let out = value("--out") {
      let data = Data(bytes: image.pointer, count: image.count * MemoryLayout<Float>.size)
      try data.write(to: URL(fileURLWithPath: out))
    }
  }
}
