import Checkpoint
import Diffusion
import Foundation
import SafeTensors
import Tensors

/// The render path on a full-size SDXL file with random fp16 weights:
/// `Benchmarks render --file PATH [--size 512] [--steps 1] [--images 1] [--threads N]`.
///
/// Prints when each phase ends, counted from process start (`/proc/self/stat`): the model built,
/// the prompts encoded (the first UNet evaluation starts right after), each step, the VAE decode;
/// and the process's anonymous and file-backed resident memory after each phase (`Scripts/bench
/// render` samples the peaks from outside). `Benchmarks render-file PATH` writes the file (6.9 GB,
/// every SDXL tensor, seeded values ~ U(−1, 1)/√fan_in, norm weights near 1).
enum RenderBench {
  static func run(_ arguments: [String]) throws {
    guard let path = arguments.value(after: "--file") else {
      throw BenchError.usage("render --file PATH [--size N] [--steps N] [--images N]")
    }
    let size = arguments.value(after: "--size").flatMap(Int.init) ?? 512
    let steps = arguments.value(after: "--steps").flatMap(Int.init) ?? 1
    let images = arguments.value(after: "--images").flatMap(Int.init) ?? 1
    let threads = arguments.value(after: "--threads").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount
    ThreadPool.useShared(threadCount: threads)
    let compute = ComputeContext(pool: ThreadPool.shared)

    report("start")
    let weights = try ModelWeights(path: path)
    let pipeline = try SDXLPipeline(
      weights: weights, behaviour: ModelBehaviour(prediction: .epsilon, zeroTerminalSNR: false), compute: compute)
    report("model built")
    let settings = (0..<images).map { index -> GenerationSettings in
      var settings = GenerationSettings(prompt: "a portrait of a woman, black background")
      settings.negative = "lowres, bad anatomy"
      settings.steps = steps
      settings.width = size
      settings.height = size
      settings.seed = UInt64(1000 + index)
      return settings
    }
    let prompts = try pipeline.encodePrompts(settings)
    report("prompts encoded (the first UNet evaluation starts now)")
    var last = Date()
    for (index, (setting, encoded)) in zip(settings, prompts).enumerated() {
      let result = try pipeline.generate(setting, prompts: encoded) { step, total in
        let now = Date()
        report(String(format: "image %d step %d/%d (%.2f s)", index + 1, step, total, now.timeIntervalSince(last)))
        last = now
      }
      report(String(format: "image %d decoded (VAE %.2f s)", index + 1, result.decodeSeconds))
      last = Date()
    }
  }

  /// Prints `what` with the seconds since process start and the current RssAnon/RssFile.
  static func report(_ what: String) {
    let memory = residentMemory()
    print(
      String(
        format: "%7.2f s  anon %6d MB  file %6d MB  %@", secondsSinceStart(), memory.anon / 1024, memory.file / 1024,
        what))
    fflush(stdout)
  }

  /// RssAnon and RssFile of this process in kB (Linux; zeros elsewhere).
  static func residentMemory() -> (anon: Int, file: Int) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
      guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
      return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
    return (field("RssAnon"), field("RssFile"))
  }

  /// Seconds since the process started (field 22 of /proc/self/stat against the uptime).
  static func secondsSinceStart() -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
      let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return ProcessInfo.processInfo.systemUptime }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command name: state is field 3, so starttime (field 22) is index 19 here.
    guard fields.count > 19, let ticks = Double(fields[19]), let now = Double(uptime.split(separator: " ")[0]) else {
      return 0
    }
    return now - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
  }

  /// `render-file PATH`: every tensor of full-size SDXL base, fp16, seeded random values.
  static func writeFile(_ arguments: [String]) throws {
    guard let path = arguments.first else { throw BenchError.usage("render-file PATH") }
    let started = Date()
    let tensors = SDXLTemplate.sdxlBase.tensors
    var entries: [TensorEntry] = []
    for (index, tensor) in tensors.enumerated() {
      if tensor.isInteger {
        let spec = TensorSpec(name: tensor.key, dtype: .i64, shape: tensor.shape)
        entries.append(
          TensorEntry(spec: spec) { sink in
            let values = (0..<Int64(tensor.parameterCount)).map { $0 % Int64(tensor.shape.last ?? 1) }
            try values.withUnsafeBytes { try sink.write($0) }
          })
        continue
      }
      let spec = TensorSpec(name: tensor.key, dtype: .f16, shape: tensor.shape)
      entries.append(
        TensorEntry(spec: spec) { sink in
          try UNetBench.writeRandom(key: tensor.key, shape: tensor.shape, seed: index, to: sink)
        })
    }
    try SafeTensorsWriter.write(to: path, entries: entries, metadata: ["rouwei.bench": "random full-size SDXL"])
    print(
      String(
        format: "wrote random full-size SDXL (fp16, %d tensors) to %@ in %.1f s", tensors.count, path,
        Date().timeIntervalSince(started)))
  }
}

enum BenchError: Error, CustomStringConvertible {
  case usage(String)
  var description: String {
    switch self {
    case .usage(let text): return "usage: Benchmarks \(text)"
    }
  }
}
