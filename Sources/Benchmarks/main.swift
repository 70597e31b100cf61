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

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let section = sections[name] else {
  print("usage: Benchmarks <\(sections.keys.sorted().joined(separator: "|"))> ARGS…")
  exit(2)
}
do {
  try section(Array(arguments.dropFirst()))
} catch {
  print("benchmark \(name) failed: \(error)")
  exit(1)
}
