import CBLAS
import Foundation

/// Which OpenBLAS kernel family the process runs, and the one it should run.
///
/// An OpenBLAS older than the CPU (Debian 12 ships 0.3.21) does not recognise newer cores — a
/// Sapphire Rapids Xeon is reported as "Prescott" — and falls back to its SSE3 kernels: sgemm 6×
/// slower (`Benchmarks kernels gemm`, 2 threads: 44.6 against 271 GFLOP/s with SkylakeX's), and LoRA
/// products that differ in the last bit between 1 and 2 threads (AdapterProductTests). OpenBLAS
/// picks its kernels when it is loaded, before `main`, honouring `OPENBLAS_CORETYPE` (the override
/// OpenBLAS documents), so the command line tool relaunches itself with it set
/// (`relaunchIfMisdetected`); Scripts/test passes the kernels the binary reports to the test runner.
public enum BLASCore {
  /// OpenBLAS's name for the kernels it chose, e.g. "SkylakeX", "Haswell", "Prescott".
  public static var current: String {
    guard let name = openblas_get_corename() else { return "unknown" }
    return String(cString: name)
  }

  /// The kernel family the CPU supports when OpenBLAS chose a lesser one, else nil. `flags` are
  /// the CPU's feature flags as `/proc/cpuinfo` lists them (they include what the kernel enabled).
  public static func better(than current: String, flags: Set<String>) -> String? {
    let core = current.lowercased()
    let avx512 = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    if avx512 {
      return ["skylakex", "cooperlake", "sapphirerapids"].contains(core) ? nil : "SkylakeX"
    }
    if flags.contains("avx2") && flags.contains("fma") {
      return ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"].contains(core) ? nil : "Haswell"
    }
    return nil
  }

  /// The CPU's feature flags from `/proc/cpuinfo` (empty where there is none).
  public static func cpuFlags(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))
    -> Set<String>
  {
    guard let cpuinfo,
      let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
      let colon = line.firstIndex(of: ":")
    else { return [] }
    return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
  }

  /// Where OpenBLAS fell back to lesser kernels than the CPU has and `OPENBLAS_CORETYPE` is not
  /// set, re-executes this program with it set (same arguments, same process id); otherwise, or if
  /// that fails, returns and the program goes on as it is. Linux only: needs `/proc/self/exe`.
  public static func relaunchIfMisdetected() {
    #if os(Linux)
      guard getenv("OPENBLAS_CORETYPE") == nil, let core = better(than: current, flags: cpuFlags()) else { return }
      setenv("OPENBLAS_CORETYPE", core, 1)
      execv("/proc/self/exe", CommandLine.unsafeArgv)
      unsetenv("OPENBLAS_CORETYPE")  // exec failed: carry on with the kernels we have
    #endif
  }
}
