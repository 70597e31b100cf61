// swift-tools-version:6.0
import PackageDescription

// Module map: ../shared/DESIGN.md. Dependencies run one way, lowest first:
// C shims → SafeTensors → Checkpoint → TorchImport; Checkpoint → Weights → Adapters (LoRA files) → Transforms
// → Extraction (LoRA by SVD, + CBLAS/LAPACK);
// CBLAS → Tensors → Diffusion (→ Weights) → Verification (→ Adapters) → CLI; Workers (the thread pool) under Weights, Transforms and Tensors.
// Modules join this list as their issues land (Transforms, Tensors, Diffusion, Verification).
let package = Package(
  name: "rouwei-ckpt",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "rouwei-ckpt", targets: ["rouwei-ckpt"]),
    .library(name: "RouweiCkpt", targets: ["SafeTensors", "Checkpoint", "TorchImport", "Workers", "Weights", "Adapters", "Transforms", "Extraction", "Tensors", "Diffusion", "Verification", "CLI"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
  ],
  targets: [
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),

    .target(name: "SafeTensors"),
    .target(name: "Checkpoint", dependencies: ["SafeTensors", .product(name: "Crypto", package: "swift-crypto")]),
    .target(name: "TorchImport", dependencies: ["SafeTensors", "Checkpoint"]),
    .target(name: "CCodecKernels"),
    .target(name: "Workers"),
    .target(name: "Weights", dependencies: ["SafeTensors", "Checkpoint", "CCodecKernels", "Workers"]),
    .target(name: "Adapters", dependencies: ["SafeTensors", "Checkpoint", "Weights", "CBLAS"]),
    .target(name: "Transforms", dependencies: ["SafeTensors", "Checkpoint", "Weights", "Adapters", "CCodecKernels", "Workers"]),
    .target(name: "Extraction", dependencies: ["SafeTensors", "Checkpoint", "Weights", "Adapters", "Transforms", "CBLAS"]),
    .target(name: "CTensorKernels"),
    .target(name: "Tensors", dependencies: ["CBLAS", "CTensorKernels", "Workers"]),
    .target(name: "Diffusion", dependencies: ["CZstd", "Tensors", "SafeTensors", "Checkpoint", "Weights"], resources: [
      .copy("Resources/bpe_simple_vocab_16e6.txt.zst"), .copy("Resources/LICENSE-bpe_simple_vocab.txt"),
    ]),
    .target(name: "Verification", dependencies: ["Diffusion", "Weights", "Adapters", "Checkpoint", "Tensors", "SafeTensors", "CPNG"]),
    .target(name: "CLI", dependencies: [
      "Workers",
      "SafeTensors", "Checkpoint", "TorchImport", "Weights", "Adapters", "Transforms", "Extraction", "Tensors", "Diffusion",
      "Verification", .product(name: "ArgumentParser", package: "swift-argument-parser"),
    ]),
    .executableTarget(name: "rouwei-ckpt", dependencies: ["CLI", "Tensors"]),
    .executableTarget(name: "Benchmarks", dependencies: ["SafeTensors", "Workers", "Checkpoint", "Weights", "Transforms", "Tensors", "Diffusion", "Verification"]),

    .target(name: "TestSupport", dependencies: ["SafeTensors"], path: "Tests/TestSupport"),
    .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "TestSupport"]),
    .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "SafeTensors", "TestSupport"]),
    .testTarget(name: "TorchImportTests", dependencies: ["TorchImport", "Checkpoint", "SafeTensors", "TestSupport"]),
    .testTarget(name: "WeightsTests", dependencies: ["Weights", "Transforms", "Checkpoint", "SafeTensors", "TestSupport"]),
    .testTarget(name: "AdaptersTests", dependencies: ["Adapters", "Extraction", "Weights", "Checkpoint", "SafeTensors", "TestSupport"]),
    .testTarget(name: "TransformsTests", dependencies: ["Transforms", "Weights", "Checkpoint", "SafeTensors", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
    .testTarget(name: "TensorsTests", dependencies: ["Tensors", "TestSupport"]),
    .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "Weights", "Checkpoint", "Tensors", "SafeTensors", "TestSupport"]),
    .testTarget(name: "VerificationTests", dependencies: ["Verification", "Checkpoint", "Diffusion", "Tensors", "SafeTensors", "TestSupport"]),
    .testTarget(name: "CLITests", dependencies: ["CLI", "Checkpoint", "Weights", "Verification", "SafeTensors", "Tensors", "TestSupport"]),
    .testTarget(name: "SystemLibraryTests", dependencies: ["CBLAS", "CZstd", "CPNG"]),
  ],
  swiftLanguageModes: [.v5]
)
