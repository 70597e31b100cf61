import Checkpoint
import Foundation
import SafeTensors
import Transforms
import Weights

/// Wall time of a closure, in seconds.
func measure(_ body: () throws -> Void) rethrows -> Double {
  let start = DispatchTime.now().uptimeNanoseconds
  try body()
  return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Peak resident memory of this process so far, in MB.
func peakRSSMegabytes() -> Double {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  return Double(usage.ru_maxrss) / 1024
}

/// `info` on a file (header only): median of several runs.
enum InfoBench {
  static func run(_ arguments: [String]) throws {
    guard let path = arguments.first else {
      throw CheckpointError.unsupportedInput(path: "", reason: "usage: info FILE")
    }
    var times: [Double] = []
    for _ in 0..<9 {
      times.append(try measure { _ = try Inspector.inspect(path: path) })
    }
    times.sort()
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    print(
      String(
        format: "info: %.1f ms median (min %.1f) on a %.2f GB file; peak RSS %.0f MB", times[4] * 1000, times[0] * 1000,
        Double(size) / 1e9, peakRSSMegabytes()))
  }
}

/// Streaming SHA-256 of a whole file (what `info --hash` does).
enum HashBench {
  static func run(_ arguments: [String]) throws {
    guard let path = arguments.first else {
      throw CheckpointError.unsupportedInput(path: "", reason: "usage: hash FILE")
    }
    let mapping = try MappedFile(path: path)
    var hashes: ModelHashes?
    let seconds = measure { hashes = ModelHasher.hashes(of: mapping, dataOffset: nil) }
    print(
      String(
        format: "hash: %.2f s, %.0f MB/s, peak RSS %.0f MB, sha256 %@", seconds, Double(mapping.size) / seconds / 1e6,
        peakRSSMegabytes(), hashes?.sha256 ?? "-"))
    // What `info --hash` does on a safetensors file: the file digest and the data-section digest
    // (AutoV3) in one pass; the offset stands in for a header.
    let both = measure { hashes = ModelHasher.hashes(of: mapping, dataOffset: 4096) }
    print(
      String(
        format: "hash+autov3: %.2f s, %.0f MB/s (file and data-section digests in one pass), data sha256 %@", both,
        Double(mapping.size) / both / 1e6, hashes?.dataSHA256 ?? "-"))
  }
}

/// `convert` of a dense file (fp32 → fp16): time and peak RSS. Scripts/bench compares with `cp`.
enum ConvertBench {
  static func run(_ arguments: [String]) throws {
    guard arguments.count == 3, let dtype = DType(rawValue: arguments[2]) else {
      throw CheckpointError.unsupportedInput(path: "", reason: "usage: convert IN OUT DTYPE")
    }
    var request = ConversionRequest()
    request.dtype = dtype
    request.overflowPolicy = .clamp
    var report: ConversionReport?
    let seconds = try measure {
      report = try Converter.convert(input: arguments[0], output: arguments[1], request: request)
    }
    let bytes = Double((report?.bytesIn ?? 0) + (report?.bytesOut ?? 0))
    print(
      String(
        format: "convert: %.2f s, %.0f MB/s read+written, peak RSS %.0f MB", seconds, bytes / seconds / 1e6,
        peakRSSMegabytes()))
  }
}

/// A two-model weighted-sum merge: time and peak RSS. Scripts/bench compares with the Python peer
/// and with reading both inputs and writing one output. The hash cache is the CLI's
/// (`ROUWEI_HASH_CACHE`; Scripts/bench points it into its work directory).
enum MergeBench {
  static func run(_ arguments: [String]) throws {
    guard arguments.count == 3 else { throw CheckpointError.unsupportedInput(path: "", reason: "usage: merge A B OUT") }
    var request = MergeRequest(inputs: [arguments[0], arguments[1]], method: .weightedSum, alpha: 0.3)
    request.missing = .error
    var report: MergeReport?
    let seconds = try measure {
      report = try Merger.merge(request, output: arguments[2], hashCache: HashCache.fromEnvironment())
    }
    print(
      String(
        format: "merge: %.2f s, peak RSS %.0f MB, input hashes from the cache: %d of 2", seconds,
        peakRSSMegabytes(), report?.hashesFromCache ?? 0))
  }
}
