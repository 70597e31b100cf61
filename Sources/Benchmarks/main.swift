import Foundation
import Tensors

// Benchmarks, run by Scripts/bench (never by swift test): `Benchmarks SECTION ARGS…`.
// The kernels the tool itself would run (BLASCore): a misdetected CPU would measure OpenBLAS's slowest.
BLASCore.relaunchIfMisdetected()
let sections: [String: ([String]) throws -> Void] = [
  "info": InfoBench.run,
  "hash": HashBench.run,
  "convert": ConvertBench.run,
  "merge": MergeBench.run,
  "kernels": KernelBench.run,
  "codecs": CodecBench.run,
  "unet": UNetBench.run,
  "render": RenderBench.run,
  "verify": VerifyBench.run,
  "widen": WidenBench.run,
  "render-file": RenderBench.writeFile,
  "vae": VAEBench.run,
  "pool": PoolBench.run,
  // The random full-size SDXL UNet (fp16) the unet section uses, written to PATH: `random-unet PATH`.
  "random-unet": { arguments in
    guard let path = arguments.first else { throw CocoaError(.fileNoSuchFile) }
    try UNetBench.writeRandomUNet(to: path)
  },
]

// What each section takes (`Benchmarks SECTION --help`); the section's file says more.
let usages: [String: String] = [
  "info": "info FILE",
  "hash": "hash FILE",
  "convert": "convert IN OUT DTYPE",
  "merge": "merge A B OUT",
  "kernels":
    "kernels [gemm|conv|linear|attention|elementwise] [--threads N] [--quick] [--im2col]"
    + " [--attention-tiles QxK,…] [--attention-kernel-tiles QxK,…]",
  "codecs": "codecs [GGML_TYPE…]",
  "unet": "unet [--sizes 64,128] [--repeats N] [--threads N] [--file PATH] [--im2col] [--direct-conv] [--sgemm-linear]",
  "render": "render --file PATH [--size 512] [--steps 1] [--images 1] [--threads N]",
  "verify": "verify --file PATH [--preset quick] [--steps N] [--batch-bytes N] [--out DIR] [--threads N]",
  "widen": "widen --file PATH [--threads N]",
  "render-file": "render-file PATH",
  "vae": "vae --file PATH [--size 1024] [--whole-planes] [--direct-conv] [--peak] [--threads N] [--out RAW]",
  "pool": "pool [--jobs N] [--threads N]",
  "random-unet": "random-unet PATH",
]

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let section = sections[name] else {
  print("usage: Benchmarks <\(sections.keys.sorted().joined(separator: "|"))> ARGS…")
  exit(arguments.contains("--help") || arguments.contains("-h") ? 0 : 2)
}
// Sections ignore flags they do not know, so `--help` is answered here rather than taken for a run.
if arguments.contains("--help") || arguments.contains("-h") {
  print("usage: Benchmarks \(usages[name] ?? name)")
  exit(0)
}
do {
  try section(Array(arguments.dropFirst()))
} catch {
  print("benchmark \(name) failed: \(error)")
  exit(1)
}
