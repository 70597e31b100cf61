import Testing

@testable import Tensors

/// The rule that picks OpenBLAS's kernels where its CPU detection fell back (BLASCore).
@Suite struct BLASCoreTests {
  static let avx512: Set<String> = [
    "sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
  ]
  static let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]

  @Test func fallbackKernelsAreReplacedByWhatTheCPUHas() {
    // OpenBLAS 0.3.21 on a Sapphire Rapids Xeon reports "Prescott" (seen on the development machine).
    #expect(BLASCore.better(than: "Prescott", flags: Self.avx512) == "SkylakeX")
    #expect(BLASCore.better(than: "Haswell", flags: Self.avx512) == "SkylakeX")
    #expect(BLASCore.better(than: "Prescott", flags: Self.avx2) == "Haswell")
    #expect(BLASCore.better(than: "Sandybridge", flags: Self.avx2) == "Haswell")
  }

  @Test func rightOrUnknowableKernelsAreLeftAlone() {
    #expect(BLASCore.better(than: "SkylakeX", flags: Self.avx512) == nil)
    #expect(BLASCore.better(than: "Cooperlake", flags: Self.avx512) == nil)
    #expect(BLASCore.better(than: "SapphireRapids", flags: Self.avx512) == nil)
    #expect(BLASCore.better(than: "Haswell", flags: Self.avx2) == nil)
    #expect(BLASCore.better(than: "Zen", flags: Self.avx2) == nil)
    #expect(BLASCore.better(than: "Prescott", flags: ["sse3", "avx"]) == nil)  // nothing better to pick
    #expect(BLASCore.better(than: "Prescott", flags: []) == nil)  // no /proc/cpuinfo: no guess
  }

  @Test func cpuFlagsAreReadFromTheFirstFlagsLine() {
    let cpuinfo = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse3 avx2 fma\nbugs\t\t: spectre\n"
    #expect(BLASCore.cpuFlags(cpuinfo: cpuinfo) == ["fpu", "sse3", "avx2", "fma"])
    #expect(BLASCore.cpuFlags(cpuinfo: "processor\t: 0\n").isEmpty)
    #expect(BLASCore.cpuFlags(cpuinfo: nil).isEmpty)
  }
}
