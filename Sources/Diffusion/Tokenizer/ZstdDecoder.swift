import CZstd
import Foundation

/// Decompresses zstd data through libzstd's streaming API (any number of frames, with or without
/// a declared content size), refusing output larger than `limit` bytes.
enum ZstdDecoder {
  /// The four magic bytes that open every zstd frame.
  static let magic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

  /// Whether `data` starts with the zstd frame magic.
  static func isCompressed(_ data: Data) -> Bool {
    data.count >= 4 && Array(data.prefix(4)) == magic
  }

  /// The decompressed bytes of `data`; `file` only names the source in errors.
  static func decompress(_ data: Data, file: String, limit: Int = 64 << 20) throws -> Data {
    guard let context = ZSTD_createDCtx() else {
      throw DiffusionError.vocabularyUnreadable(file: file, reason: "zstd: out of memory")
    }
    defer { ZSTD_freeDCtx(context) }
    var output = Data()
    var chunk = [UInt8](repeating: 0, count: max(ZSTD_DStreamOutSize(), 1 << 16))
    try data.withUnsafeBytes { (source: UnsafeRawBufferPointer) in
      var input = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
      while true {
        var produced = 0
        var status = 0
        try chunk.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) in
          var out = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
          status = ZSTD_decompressStream(context, &out, &input)
          if ZSTD_isError(status) != 0 {
            let name = String(cString: ZSTD_getErrorName(status))
            throw DiffusionError.vocabularyUnreadable(file: file, reason: "zstd: \(name)")
          }
          produced = out.pos
          if let base = buffer.baseAddress, produced > 0 {
            output.append(base.assumingMemoryBound(to: UInt8.self), count: produced)
          }
        }
        if output.count > limit {
          throw DiffusionError.vocabularyUnreadable(
            file: file, reason: "zstd: more than \(limit) bytes once decompressed")
        }
        let inputDone = input.pos == input.size
        // status 0: a frame ended and everything it held has been flushed.
        if inputDone && status == 0 { break }
        if inputDone && produced == 0 {
          throw DiffusionError.vocabularyUnreadable(file: file, reason: "zstd: truncated data")
        }
      }
    }
    return output
  }
}
