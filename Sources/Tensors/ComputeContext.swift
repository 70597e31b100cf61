import CBLAS
import CTensorKernels
// The thread pool is part of this module's API (`ComputeContext.pool`).
@_exported import Workers

/// Where kernels run: a thread pool for element-wise work, scratch memory for temporary buffers,
/// and the choice between optimised kernels and the simple reference loops.
///
/// Every kernel is a method on the context and writes into a caller-owned `into:` tensor, which
/// may be the input itself where a kernel says so (in place). One context serves one compute
/// loop at a time (its workspace is not shared between threads).
public final class ComputeContext {
  /// The threads for element-wise work.
  public let pool: ThreadPool
  /// Scratch memory for im2col bands and attention score blocks.
  public let workspace = Workspace()
  /// When true every kernel runs its naive reference loop (`ReferenceKernels`) instead: slow,
  /// single-threaded, easy to audit; the optimised kernels are tested against it.
  public let usesReferenceKernels: Bool
  /// The most floats an im2col band may use (default 16 Mi floats, 64 MB); bands are whole
  /// output rows, so a row larger than this still gets one row.
  public var im2colBudget: Int = 16 << 20
  /// The attention tile: query rows per task and key tokens per online-softmax step (default
  /// 256 × 512: a 512 KB score tile that stays in L2 between the two gemms; the fastest of the
  /// sizes `Benchmarks kernels attention --attention-tiles` compares on this project's machines).
  public var attentionTile: (queries: Int, keys: Int) = (256, 512)
  /// Whether attention with head dimension 64 (all of SDXL's) runs the AVX-512 kernel
  /// (`tk_attention_head64`) on CPUs that have it; false keeps it on the gemm-based form above.
  public var usesAttentionKernel = true
  /// The kernel's query rows per block and key tokens per online-softmax step (default 48 × 256:
  /// a 48 KB probability tile and 64 KB key and value tiles for one core's L1/L2; among the
  /// fastest of the sizes `Benchmarks kernels attention --attention-kernel-tiles` compares here,
  /// where 48–96 rows × 128–512 keys lie within this VM's run-to-run noise). Keys are rounded up
  /// to a multiple of 16.
  public var attentionKernelTile: (queries: Int, keys: Int) = (48, 256)
  /// Whether 3×3 convolutions with stride 1 run the AVX-512 kernel (`tk_conv3x3`) on CPUs that
  /// have it; false keeps them on im2col + sgemm.
  public var usesConvolutionKernel = true
  /// Whether 3×3 convolutions with stride 1 whose output planes have at least
  /// `winogradMinimumTiles` 4 × 4 tiles run Winograd F(4×4, 3×3) (`winogradConvolution3x3`): a quarter of the
  /// multiply-adds, with a rounding error a few times the direct sum's (relative RMS error against
  /// a Float64 sum about 7e-6, against 2e-6 direct, at 1280 input channels). False keeps every 3×3
  /// convolution on the direct kernel.
  public var usesWinogradConvolution = true
  /// Output tiles of a plane from which a 3×3 convolution takes Winograd's form (default 16: a
  /// 16² plane, SDXL's smallest at a 64² latent).
  public var winogradMinimumTiles = 16
  /// Tiles (all samples together) up to which a Winograd convolution makes its transformed weights
  /// a panel at a time next to the products instead of whole in memory (default 64: SDXL's 16²
  /// planes at batch 4, or a 32² plane alone; past it the products' partial sums leave L2).
  public var winogradFusedTiles = 64
  /// The most floats of transformed inputs and outputs a Winograd convolution holds at once
  /// (default 16 Mi floats, 64 MB): larger planes run in chunks of tile rows.
  public var winogradBudget: Int = 16 << 20
  /// The most floats of transformed weights a Winograd convolution holds at once (default 8 Mi
  /// floats, 32 MB: 320 × 320 channels whole, 640 × 640 in two chunks of output channels); more
  /// output channels run in chunks.
  public var winogradWeightBudget: Int = 8 << 20
  /// Whether linear layers run the AVX-512 kernel (`tk_linear`, which also takes fp16 weights as
  /// stored) on CPUs that have it; false keeps them on sgemm.
  public var usesLinearKernel = true
  /// Floating-point operations (2·m·n·k) of every gemm run through this context so far: the
  /// dense-equivalent work benchmarks divide by time. Reset it freely.
  public var gemmOperations: Double = 0
  /// When set, linear layers, convolutions and attention add their time and work to it by kind
  /// (for benchmarks: two clock reads per call).
  public var profile: OperationProfile?

  /// A context running on `pool`, with optimised kernels unless `referenceKernels` is true.
  public init(pool: ThreadPool = .shared, referenceKernels: Bool = false) {
    self.pool = pool
    usesReferenceKernels = referenceKernels
  }

  /// Sets how many threads OpenBLAS uses for gemm (process-wide). Gemm and the pool's work never
  /// overlap, so giving both the machine's core count does not oversubscribe it.
  public static func setBLASThreadCount(_ count: Int) {
    openblas_set_num_threads(Int32(Swift.max(1, count)))
  }

  /// The number of threads OpenBLAS uses for gemm.
  public static var blasThreadCount: Int { Int(openblas_get_num_threads()) }

  /// Whether the element-wise kernels run their AVX2+FMA forms (x86-64 CPUs that have them) rather
  /// than the portable C loops.
  public static var usesVectorKernels: Bool { tk_uses_avx2() != 0 }

  /// Whether this CPU can run the AVX-512 attention kernel (`usesAttentionKernel`).
  public static var hasAttentionKernel: Bool { tk_attention_available() != 0 }

  /// Whether this CPU can run the AVX-512 3×3 convolution kernel (`usesConvolutionKernel`).
  public static var hasConvolutionKernel: Bool { tk_conv3x3_available() != 0 }

  /// Whether this CPU can run the AVX-512 Winograd stages (`usesWinogradConvolution`).
  public static var hasWinogradKernel: Bool { tk_winograd_available() != 0 }

  /// Whether this CPU can run the AVX-512 linear kernel (`usesLinearKernel`).
  public static var hasLinearKernel: Bool { tk_linear_available() != 0 }

  /// OpenBLAS's build description (version, target core, threading), for benchmark reports.
  public static var blasConfiguration: String {
    guard let text = openblas_get_config() else { return "unknown" }
    return String(cString: text)
  }
}
