import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors

/// The full-size SDXL UNet forward at batch 2 (CFG), random weights, against the machine's sgemm
/// peak, with its time by kind of operation and shape (`ComputeContext.profile`):
/// `Benchmarks unet [--sizes 64,128] [--repeats N] [--threads N] [--file PATH] [--im2col] [--direct-conv] [--sgemm-linear]` (`--im2col` keeps the 3×3 convolutions on im2col + sgemm, `--direct-conv` on the direct kernel without Winograd's form, `--sgemm-linear` the
/// linear layers on widening + sgemm, for comparison with the kernels).
/// The weights file (fp16, 5.1 GB, SDXL key names) is made once from the generated template.
enum UNetBench {
  static func run(_ arguments: [String]) throws {
    let threads = arguments.value(after: "--threads").flatMap(Int.init) ?? 2
    let repeats = arguments.value(after: "--repeats").flatMap(Int.init) ?? 1
    let sizes = (arguments.value(after: "--sizes") ?? "64,128").split(separator: ",").compactMap { Int($0) }
    let path = arguments.value(after: "--file") ?? NSTemporaryDirectory() + "/rouwei-bench-sdxl-unet-f16.safetensors"
    let compute = ComputeContext(pool: ThreadPool(threadCount: threads))
    compute.usesConvolutionKernel = !arguments.contains("--im2col")
    compute.usesWinogradConvolution = !arguments.contains("--direct-conv")
    compute.usesLinearKernel = !arguments.contains("--sgemm-linear")

    if !FileManager.default.fileExists(atPath: path) {
      let started = Date()
      try writeRandomUNet(to: path)
      print(String(format: "wrote random SDXL UNet (fp16) to %@ in %.1f s", path, Date().timeIntervalSince(started)))
    }
    var started = Date()
    let weights = try ModelWeights(path: path)
    let unet = try UNet(weights: weights.scoped("model.diffusion_model."), compute: compute)
    print(
      String(
        format: "UNet built in %.1f s (%d transformer blocks; weights stay fp16 in the map, widened per layer)",
        Date().timeIntervalSince(started), unet.transformerBlockCount))

    let peak = sgemmPeak(compute)
    print(String(format: "sgemm peak: %.1f GFLOP/s on %d threads (best of SDXL-shaped gemms)", peak, threads))
    let context = KernelBench.random([1, 77, 2048], seed: 3)
    let cache = try unet.crossAttention(for: [context, context])
    let y = KernelBench.random([2, 2816], seed: 4)
    var lastPeak = peak
    for size in sizes {
      let x = KernelBench.random([2, 4, size, size], seed: 5)
      compute.gemmOperations = 0
      compute.profile = OperationProfile()
      started = Date()
      var widened = unet.weightWideningSeconds
      _ = try unet(x, timesteps: [500, 500], crossAttention: cache, y: y)  // warm-up: arena growth
      let first = Date().timeIntervalSince(started)
      let operations = compute.gemmOperations
      var best = first
      var widening = unet.weightWideningSeconds - widened
      var profile = compute.profile!
      for _ in 0..<repeats {
        compute.profile = OperationProfile()
        started = Date()
        widened = unet.weightWideningSeconds
        _ = try unet(x, timesteps: [500, 500], crossAttention: cache, y: y)
        let seconds = Date().timeIntervalSince(started)
        if seconds < best {
          widening = unet.weightWideningSeconds - widened
          profile = compute.profile!
        }
        best = min(best, seconds)
      }
      compute.profile = nil
      let rate = operations / best / 1e9
      // The peak again right after: the VM's speed moves within seconds, so the forward is also
      // reported against the better of the peaks measured just before and just after it.
      let after = sgemmPeak(compute)
      print(
        String(
          format:
            "unet %d×%d latent, batch 2: %.2f s (first %.2f s), %.2f TFLOP dense, %.1f GFLOP/s = %.0f %% of sgemm peak, %.0f %% of the peak around it (%.1f before, %.1f after)",
          size, size, best, first, operations / 1e12, rate, 100 * rate / peak, 100 * rate / max(lastPeak, after),
          lastPeak, after))
      printBreakdown(profile, forward: best, peak: max(lastPeak, after))
      printSustained(compute, seconds: best, rate: rate, burst: max(lastPeak, after), what: "the forward")
      lastPeak = sgemmPeak(compute)
      // The same gemms on the same Float32 values as a fully widened model, plus the widening:
      // the time without it is what the fully widened forward took.
      print(
        String(
          format: "  of which widening fp16 weights per layer: %.2f s; step time / fully widened forward: %.3f×",
          widening, best / (best - widening)))
    }
  }

  /// The forward's time by kind of operation (its best run), each kind's rate against `peak`, the
  /// shapes that took the most time, and the rest (norms, element-wise work, layout).
  static func printBreakdown(_ profile: OperationProfile, forward: Double, peak: Double) {
    func line(_ name: String, _ entry: OperationProfile.Entry, indent: String) -> String {
      let rate = entry.operations / entry.seconds / 1e9
      // Without a measured peak (`vae` without `--peak`), the rate alone.
      let share = peak.isFinite ? String(format: " = %3.0f %% of the peak around it", 100 * rate / peak) : ""
      return String(
        format: "%6.2f s (%4.1f %% of the forward), %4d calls, %6.1f GFLOP/s%@",
        entry.seconds, 100 * entry.seconds / forward, entry.calls, rate, share
      )
      .padded(indent + name, to: 44)
    }
    for kind in OperationProfile.Kind.allCases {
      guard let entry = profile.kinds[kind], entry.seconds > 0 else { continue }
      print(line(kind.rawValue, entry, indent: "  "))
      let shapes = (profile.shapes[kind] ?? [:]).sorted { $0.value.seconds > $1.value.seconds }
      for (shape, entry) in shapes.prefix(6) where entry.seconds > 0 { print(line(shape, entry, indent: "      ")) }
    }
    let rest = forward - profile.totalSeconds
    print(
      String(format: "%6.2f s (%4.1f %% of the forward)", rest, 100 * rest / forward)
        .padded("  the rest (norms, element-wise, layout)", to: 44))
  }

  /// The SDXL-shaped gemms the peak and the sustained rate are measured on: (m, n, k, B transposed).
  static let peakShapes = [(2048, 2048, 2048, false), (4096, 5120, 640, true), (320, 4096, 2880, false)]

  static func sgemmPeak(_ compute: ComputeContext) -> Double {
    var peak = 0.0
    for (m, n, k, transposeB) in peakShapes {
      let a = KernelBench.random([m, k], seed: 1), b = KernelBench.random(transposeB ? [n, k] : [k, n], seed: 2)
      let c = Tensor(zeros: [m, n])
      let timing = KernelBench.time(repeats: 3) { compute.matmul(a, b, transposeB: transposeB, into: c) }
      let threaded = KernelBench.time(repeats: 3) {
        ComputeContext.openBLASThreadedMatmul(a, b, transposeB: transposeB, into: c, threads: compute.pool.threadCount)
      }
      peak = max(peak, 2.0 * Double(m) * Double(n) * Double(k) / min(timing.best, threaded.best) / 1e9)
    }
    return peak
  }

  /// The sustained sgemm rate over the run's own length (10–30 s), right after it, and `rate` as a
  /// share of it next to the burst peak's share.
  static func printSustained(_ compute: ComputeContext, seconds: Double, rate: Double, burst: Double, what: String) {
    let window = min(max(seconds, 10), 30)
    let sustained = sustainedSgemm(compute, seconds: window)
    print(
      String(
        format: "  sustained sgemm over %.0f s right after: %.1f GFLOP/s = %.0f %% of the burst peak (%.1f); "
          + "%@ = %.0f %% of the sustained rate", window, sustained, 100 * sustained / burst, burst, what,
        100 * rate / sustained))
  }

  /// The sgemm rate held over `seconds` of back-to-back SDXL-shaped gemms (the peak's three shapes
  /// in turn), in GFLOP/s: total work over total time. `sgemmPeak` is the best of short bursts;
  /// on this VM a run of many seconds, the UNet's own gemm included, gets less than that
  /// (sampled per second, sgemm alone moves between 70 and 100 % of the burst peak), so a forward
  /// is reported against both.
  static func sustainedSgemm(_ compute: ComputeContext, seconds: Double) -> Double {
    struct Product {
      let a: Tensor, b: Tensor, c: Tensor, transposeB: Bool, operations: Double
    }
    var shapes: [Product] = []
    for (m, n, k, transposeB) in peakShapes {
      shapes.append(
        Product(
          a: KernelBench.random([m, k], seed: 1), b: KernelBench.random(transposeB ? [n, k] : [k, n], seed: 2),
          c: Tensor(zeros: [m, n]), transposeB: transposeB, operations: 2.0 * Double(m) * Double(n) * Double(k)))
    }
    var operations = 0.0
    let started = Date()
    while Date().timeIntervalSince(started) < seconds {
      for shape in shapes {
        compute.matmul(shape.a, shape.b, transposeB: shape.transposeB, into: shape.c)
        operations += shape.operations
      }
    }
    return operations / Date().timeIntervalSince(started) / 1e9
  }

  /// SDXL's UNet keys and shapes with seeded values ~ U(−1, 1)/√fan_in (norm weights near 1), fp16.
  static func writeRandomUNet(to path: String) throws {
    let tensors = SDXLTemplate.unetTensors(.sdxl)
    var entries: [TensorEntry] = []
    for (index, tensor) in tensors.enumerated() {
      let spec = TensorSpec(name: tensor.key, dtype: .f16, shape: tensor.shape)
      entries.append(
        TensorEntry(spec: spec) { sink in
          try writeRandom(key: tensor.key, shape: tensor.shape, seed: index, to: sink)
        })
    }
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: ["rouwei.bench": "random SDXL UNet"])
  }

  /// Writes a tensor's seeded values ~ U(−1, 1)/√fan_in (norm weights 1 ± 0.1) as fp16.
  static func writeRandom(key: String, shape: [Int], seed: Int, to sink: TensorSink) throws {
    let count = shape.reduce(1, *)
    let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 1
    let isNormWeight = shape.count == 1 && key.hasSuffix(".weight")
    let scale = Float(1 / Double(fanIn).squareRoot())
    var state = UInt32(truncatingIfNeeded: seed &* 2654435761) | 1
    var chunk = [UInt16](repeating: 0, count: max(1, min(count, 1 << 20)))
    var done = 0
    while done < count {
      let n = min(chunk.count, count - done)
      for i in 0..<n {
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        let u = Float(state % 2001) / 1000 - 1
        chunk[i] = Float16(isNormWeight ? 1 + 0.1 * u : u * scale).bitPattern
      }
      try chunk[0..<n].withUnsafeBytes { try sink.write($0) }
      done += n
    }
  }
}

/// What keeping weights as stored costs per UNet evaluation for an artifact's dtype: every UNet
/// matrix widened once to Float32 on the pool, as the layers do (`Benchmarks widen --file PATH
/// [--threads N]`, best of 3). A step costs the fp16 forward's gemms plus this.
enum WidenBench {
  static func run(_ arguments: [String]) throws {
    guard let path = arguments.value(after: "--file") else { throw BenchError.usage("widen --file PATH [--threads N]") }
    let threads = arguments.value(after: "--threads").flatMap(Int.init) ?? 2
    let pool = ThreadPool(threadCount: threads)
    let weights = try ModelWeights(path: path).scoped("model.diffusion_model.")
    let decoders = try weights.keys.filter { (weights.shape($0)?.count ?? 0) >= 2 }.map { try weights.decoder($0) }
    let largest = decoders.map(\.elementCount).max() ?? 0
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: largest)
    defer { scratch.deallocate() }
    var best = Double.infinity
    var values = 0
    for _ in 0..<3 {
      let started = Date()
      values = 0
      for decoder in decoders {
        pool.forEachChunk(decoder.elementCount, minimumChunk: 1 << 16) { range in
          decoder.decode(range, into: UnsafeMutableBufferPointer(start: scratch + range.lowerBound, count: range.count))
        }
        values += decoder.elementCount
      }
      best = min(best, Date().timeIntervalSince(started))
    }
    let kind = Set(
      decoders.map { decoder -> String in
        switch decoder.encoding {
        case .float(let dtype): return dtype.rawValue
        case .scaledFloat(let dtype, _): return dtype.rawValue + " × scale"
        case .int8Rows: return "I8 rows"
        case .ggml(let type): return type.name
        }
      }
    ).sorted().joined(separator: ", ")
    print(
      String(
        format: "widen %@: %d UNet matrices, %.2f G values in %.2f s (%.2f G values/s, %d threads; stored as %@)",
        URL(fileURLWithPath: path).lastPathComponent, decoders.count, Double(values) / 1e9, best,
        Double(values) / 1e9 / best, threads, kind))
  }
}

extension String {
  /// `label`, padded with spaces to `width` characters, then this string.
  fileprivate func padded(_ label: String, to width: Int) -> String {
    label + String(repeating: " ", count: max(1, width - label.count)) + self
  }
}
