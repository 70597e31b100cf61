import Crypto
import Dispatch
import SafeTensors

/// The hashes A1111 and Civitai show for a model file.
public struct ModelHashes: Codable, Sendable, Equatable {
  /// Full-file SHA-256, lowercase hex.
  public var sha256: String
  /// A1111 "new" hash / Civitai AutoV2: the first 10 hex digits of the file SHA-256.
  public var autoV2: String
  /// A1111 legacy hash / Civitai AutoV1: SHA-256 of 64 KiB at offset 1 MiB, first 8 hex digits.
  public var autoV1: String
  /// Civitai AutoV3 / A1111 addnet short hash: SHA-256 of the bytes after the header, first 12 hex.
  public var autoV3: String?
  /// The full SHA-256 behind AutoV3 (tensor data only: unchanged by metadata edits).
  public var dataSHA256: String?

  public init(sha256: String, autoV2: String, autoV1: String, autoV3: String?, dataSHA256: String?) {
    self.sha256 = sha256
    self.autoV2 = autoV2
    self.autoV1 = autoV1
    self.autoV3 = autoV3
    self.dataSHA256 = dataSHA256
  }
}

/// Hashes and where they came from.
public struct HashResult: Sendable, Equatable {
  /// The hashes.
  public var hashes: ModelHashes
  /// Whether they were served by the hash cache instead of being computed.
  public var fromCache: Bool

  /// A result.
  public init(hashes: ModelHashes, fromCache: Bool) {
    self.hashes = hashes
    self.fromCache = fromCache
  }
}

/// Streams SHA-256 over mapped files.
public enum ModelHasher {
  /// The hashes of `mapping`'s file: from `cache` when it holds an entry for this version of the
  /// file (and, with `dataOffset`, its data-section digest), else computed in one pass and
  /// recorded in `cache`. With a nil `cache` this is `hashes(of:dataOffset:progress:)`.
  ///
  /// A computed result is recorded only when the file was intact and unchanged throughout.
  public static func hashes(
    of mapping: MappedFile, dataOffset: Int?, cache: HashCache?, progress: ((Int, Int) -> Void)? = nil
  ) -> HashResult {
    guard let cache else {
      return HashResult(hashes: hashes(of: mapping, dataOffset: dataOffset, progress: progress), fromCache: false)
    }
    let ticket = cache.ticket(for: mapping)
    if let ticket, let cached = cache.cachedHashes(for: ticket, dataOffset: dataOffset) {
      progress?(mapping.size, mapping.size)
      return HashResult(hashes: cached, fromCache: true)
    }
    let computed = hashes(of: mapping, dataOffset: dataOffset, progress: progress)
    if let ticket, !mapping.isDamaged, (try? mapping.checkIntact()) != nil {
      cache.store(computed, dataOffset: dataOffset, for: ticket)
    }
    return HashResult(hashes: computed, fromCache: false)
  }

  /// Hashes `mapping`, with the data section starting at `dataOffset` when the file is a safetensors
  /// file. One pass: the data-only digest is fed from the same pages as the whole-file digest.
  public static func hashes(
    of mapping: MappedFile, dataOffset: Int?, progress: ((Int, Int) -> Void)? = nil
  ) -> ModelHashes {
    // Two digests over overlapping ranges cannot share SHA-256 state (the data section does not
    // start on a 64-byte block boundary), so each chunk is hashed by both on two cores at once.
    final class Digest: @unchecked Sendable { var state = SHA256() }
    let whole = Digest()
    let data = Digest()
    let chunk = 8 << 20
    var offset = 0
    while offset < mapping.size {
      let count = min(chunk, mapping.size - offset)
      mapping.advise(
        offset: offset + count, count: min(chunk * 2, max(mapping.size - offset - count, 0)), willNeed: true)
      let bytes = mapping.bytes(offset: offset, count: count)
      var dataPart: UnsafeRawBufferPointer?
      if let dataOffset, offset + count > dataOffset {
        dataPart = offset >= dataOffset ? bytes : UnsafeRawBufferPointer(rebasing: bytes[(dataOffset - offset)...])
      }
      if let dataPart {
        DispatchQueue.concurrentPerform(iterations: 2) { index in
          if index == 0 { whole.state.update(bufferPointer: bytes) } else { data.state.update(bufferPointer: dataPart) }
        }
      } else {
        whole.state.update(bufferPointer: bytes)
      }
      // Hashing reads each page once: let the kernel drop it so resident memory stays flat.
      mapping.advise(offset: offset, count: count, willNeed: false)
      offset += count
      progress?(offset, mapping.size)
    }
    let full = hex(whole.state.finalize())
    let legacyStart = min(0x100000, mapping.size)
    let legacyCount = min(0x10000, mapping.size - legacyStart)
    let legacy = hex(SHA256.hash(data: mapping.bytes(offset: legacyStart, count: legacyCount)))
    let dataDigest = dataOffset.map { _ in hex(data.state.finalize()) }
    return ModelHashes(
      sha256: full, autoV2: String(full.prefix(10)), autoV1: String(legacy.prefix(8)),
      autoV3: dataDigest.map { String($0.prefix(12)) }, dataSHA256: dataDigest)
  }

  static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in digest {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
