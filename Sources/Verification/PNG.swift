import CPNG
import Diffusion
import Foundation
import SafeTensors

#if canImport(Glibc)
  import Glibc
  private let systemRead = Glibc.read
#elseif canImport(Darwin)
  import Darwin
  private let systemRead = Darwin.read
#endif

/// One PNG text entry (a `tEXt` or `iTXt` chunk): a keyword such as A1111's `parameters` and its
/// text.
public struct PNGTextEntry: Sendable, Equatable {
  /// 1–79 Latin-1 characters (PNG's rule), e.g. `parameters`.
  public let keyword: String
  /// Any text without NUL characters.
  public let text: String

  /// An entry; it is checked when written.
  public init(keyword: String, text: String) {
    self.keyword = keyword
    self.text = text
  }
}

/// An 8-bit RGB image with the text entries of its file.
public struct PNGImage: Sendable, Equatable {
  /// The pixels.
  public var image: RGBImage
  /// Text entries in file order.
  public var text: [PNGTextEntry]

  /// An image with text entries.
  public init(image: RGBImage, text: [PNGTextEntry] = []) {
    self.image = image
    self.text = text
  }

  /// The text of the first entry with `keyword`, e.g. `text(for: "parameters")`.
  public func text(for keyword: String) -> String? {
    text.first { $0.keyword == keyword }?.text
  }
}

/// Writes 8-bit RGB PNGs through libpng, with text chunks, atomically.
///
/// Pixels are filtered and deflated by libpng's simplified write API (`png_image_write_to_memory`,
/// which reports errors through its return value rather than `longjmp`, so no C shim is needed),
/// and the file carries an `sRGB` chunk. That API writes no text, so the text chunks are framed
/// here and placed before the first `IDAT`, where Pillow puts them too. Each entry is stored as
/// Pillow's `PngInfo.add_text` (which A1111 uses for its `parameters` chunk) stores it: `tEXt` when
/// the text is Latin-1, otherwise an uncompressed `iTXt` in UTF-8 with empty language and
/// translated keyword. A1111, ComfyUI and Civitai read both.
public enum PNGWriter {
  /// Writes `image` with `text` to `path` atomically: a temporary file in the same directory,
  /// flushed and fsynced, then renamed over `path`. On failure `path` is untouched and no
  /// temporary file is left behind.
  /// - Throws: `PNGError` (`.io` for file-system failures, `.invalidText` for entries PNG cannot
  ///   hold, `.encodingFailed` when libpng refuses the image).
  public static func write(_ image: RGBImage, text: [PNGTextEntry] = [], to path: String) throws {
    let bytes = try encode(image, text: text, file: path)
    let file: AtomicFile
    do {
      file = try AtomicFile(destination: path)
    } catch {
      throw translate(error, path)
    }
    do {
      try file.write(bytes)
      try file.commit()
    } catch {
      file.abandon()
      throw translate(error, path)
    }
  }

  /// Writes `png`'s image and text to `path` (see `write(_:text:to:)`).
  public static func write(_ png: PNGImage, to path: String) throws {
    try write(png.image, text: png.text, to: path)
  }

  /// The PNG file bytes of `image` with `text`.
  /// - Parameter file: the name used in error messages.
  public static func encode(_ image: RGBImage, text: [PNGTextEntry] = [], file: String = "PNG")
    throws -> [UInt8]
  {
    let chunks = try text.map(textChunk)
    guard image.width > 0, image.height > 0, image.width <= 1 << 24, image.height <= 1 << 24,
      image.width * 3 <= Int(Int32.max)
    else {
      throw PNGError.encodingFailed(
        file: file, reason: "\(image.width)×\(image.height) is not a size PNG can store")
    }
    var encoded = try libpngEncode(image, file: file)
    guard let idat = PNGChunks.firstOffset(of: "IDAT", in: encoded) else {
      throw PNGError.encodingFailed(file: file, reason: "libpng wrote no IDAT chunk")
    }
    encoded.insert(contentsOf: chunks.joined(), at: idat)
    return encoded
  }

  private static func libpngEncode(_ rgb: RGBImage, file: String) throws -> [UInt8] {
    // Deflate output rarely exceeds the filtered rows by more than a few bytes per 16 KB block.
    let raw = rgb.height * (rgb.width * 3 + 1)
    var capacity = raw + raw / 64 + 4096
    for _ in 0..<2 {
      var image = png_image()
      image.version = UInt32(PNG_IMAGE_VERSION)
      image.width = UInt32(rgb.width)
      image.height = UInt32(rgb.height)
      image.format = UInt32(PNG_FORMAT_FLAG_COLOR)  // PNG_FORMAT_RGB: 8-bit R, G, B
      var output = [UInt8](repeating: 0, count: capacity)
      var size = png_alloc_size_t(capacity)
      let ok = output.withUnsafeMutableBytes { memory in
        rgb.pixels.withUnsafeBytes { pixels in
          png_image_write_to_memory(
            &image, memory.baseAddress, &size, 0, pixels.baseAddress, Int32(rgb.width * 3), nil)
        }
      }
      let message = PNGChunks.message(of: &image)
      png_image_free(&image)
      if ok != 0 {
        output.removeSubrange(Int(size)...)
        return output
      }
      // A failure that changed `size` only means the buffer was too small: retry at that size.
      guard Int(size) > capacity else {
        throw PNGError.encodingFailed(file: file, reason: "libpng: \(message)")
      }
      capacity = Int(size)
    }
    throw PNGError.encodingFailed(file: file, reason: "libpng kept asking for a larger buffer")
  }

  /// The framed chunk for one entry: `tEXt` for Latin-1 text, otherwise `iTXt`.
  static func textChunk(_ entry: PNGTextEntry) throws -> [UInt8] {
    let keyword = try keywordBytes(entry.keyword)
    guard !entry.text.unicodeScalars.contains("\0") else {
      throw PNGError.invalidText(
        keyword: entry.keyword, reason: "the text contains a NUL character")
    }
    var data = keyword + [0]
    let type: String
    if let latin1 = latin1Bytes(entry.text) {
      type = "tEXt"
      data += latin1
    } else {
      // keyword NUL, compression flag 0, method 0, language "" NUL, translated keyword "" NUL.
      type = "iTXt"
      data += [0, 0, 0, 0] + Array(entry.text.utf8)
    }
    guard data.count <= Int(Int32.max) else {
      throw PNGError.invalidText(
        keyword: entry.keyword, reason: "the text is larger than a PNG chunk")
    }
    return PNGChunks.frame(type: type, data: data)
  }

  /// PNG keyword rules: 1–79 bytes of printable Latin-1 (32–126, 161–255), no leading, trailing
  /// or consecutive spaces.
  static func keywordBytes(_ keyword: String) throws -> [UInt8] {
    guard let bytes = latin1Bytes(keyword), (1...79).contains(bytes.count),
      bytes.allSatisfy({ (32...126).contains($0) || $0 >= 161 }),
      bytes.first != 32, bytes.last != 32,
      !zip(bytes, bytes.dropFirst()).contains(where: { $0 == 32 && $1 == 32 })
    else {
      throw PNGError.invalidText(
        keyword: keyword,
        reason:
          "a PNG keyword is 1–79 printable Latin-1 characters without leading, trailing or double spaces"
      )
    }
    return bytes
  }

  /// The Latin-1 bytes of `text`, or nil when a character lies outside U+0000–U+00FF.
  static func latin1Bytes(_ text: String) -> [UInt8]? {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.unicodeScalars.count)
    for scalar in text.unicodeScalars {
      guard scalar.value <= 0xFF else { return nil }
      bytes.append(UInt8(scalar.value))
    }
    return bytes
  }

  private static func translate(_ error: Error, _ path: String) -> Error {
    if case SafeTensorsError.io(let file, let operation, let code) = error {
      return PNGError.io(file: file, operation: operation, errno: code)
    }
    if let error = error as? PNGError { return error }
    return PNGError.io(file: path, operation: "write (\(error))", errno: EIO)
  }
}

/// Reads PNG files through libpng into 8-bit RGB, with their text entries.
public enum PNGReader {
  /// The largest image the reader decodes (64 Mi pixels, 192 MB of RGB), so a hostile header cannot
  /// make it allocate without bound.
  public static let maximumPixels = 1 << 26

  /// Reads the PNG at `path`.
  /// - Throws: `PNGError.io` when the file cannot be read, `.malformed` when it is not a PNG
  ///   libpng can decode, `.tooLarge` beyond `maximumPixels`.
  public static func read(path: String) throws -> PNGImage {
    let bytes = try readFile(path)
    return try decode(bytes, file: path)
  }

  /// The whole file, with the errno of a failure (files over 1 GiB are refused as too large to be
  /// a PNG this reader would accept).
  static func readFile(_ path: String) throws -> [UInt8] {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw PNGError.io(file: path, operation: "open", errno: errno) }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0 else {
      throw PNGError.io(file: path, operation: "stat", errno: errno)
    }
    guard (status.st_mode & S_IFMT) == S_IFREG else {
      throw PNGError.io(file: path, operation: "read (not a regular file)", errno: EISDIR)
    }
    let size = Int(status.st_size)
    guard size <= 1 << 30 else {
      throw PNGError.malformed(file: path, reason: "\(size) bytes is too large")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
      let count = bytes.withUnsafeMutableBytes { buffer in
        systemRead(descriptor, buffer.baseAddress.map { $0 + done }, size - done)
      }
      if count < 0 {
        if errno == EINTR { continue }
        throw PNGError.io(file: path, operation: "read", errno: errno)
      }
      if count == 0 { break }
      done += count
    }
    return done == size ? bytes : Array(bytes[..<done])
  }

  /// Decodes PNG file bytes. Any PNG libpng reads is accepted (grey, palette, 16-bit, interlaced):
  /// it is converted to 8-bit sRGB RGB; alpha is composited onto black. Text: every `tEXt`
  /// (Latin-1) and uncompressed `iTXt` (UTF-8) entry, in file order; compressed `zTXt`/`iTXt`
  /// entries are skipped (nothing this tool reads writes them: Pillow and A1111 do not compress).
  /// - Parameter file: the name used in error messages.
  public static func decode(_ bytes: [UInt8], file: String = "PNG") throws -> PNGImage {
    let text = try PNGChunks.textEntries(in: bytes, file: file)
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    let begun = bytes.withUnsafeBytes {
      png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count)
    }
    guard begun != 0 else {
      let message = PNGChunks.message(of: &image)
      png_image_free(&image)
      throw PNGError.malformed(file: file, reason: "libpng: \(message)")
    }
    let width = Int(image.width)
    let height = Int(image.height)
    guard width > 0, height > 0, width <= maximumPixels / height else {
      png_image_free(&image)
      throw PNGError.tooLarge(file: file, width: width, height: height)
    }
    image.format = UInt32(PNG_FORMAT_FLAG_COLOR)
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    let finished = pixels.withUnsafeMutableBytes {
      png_image_finish_read(&image, nil, $0.baseAddress, Int32(width * 3), nil)
    }
    let message = PNGChunks.message(of: &image)
    png_image_free(&image)
    guard finished != 0 else {
      throw PNGError.malformed(file: file, reason: "libpng: \(message)")
    }
    return PNGImage(image: RGBImage(width: width, height: height, pixels: pixels), text: text)
  }
}

/// PNG chunk framing: the signature, length/type/data/CRC records, text payloads.
enum PNGChunks {
  static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]

  /// libpng's message of a simplified-API image (a NUL-terminated `char[64]`).
  static func message(of image: inout png_image) -> String {
    withUnsafeBytes(of: &image.message) { raw in
      let bytes = raw.prefix { $0 != 0 }
      return bytes.isEmpty ? "unknown error" : String(decoding: bytes, as: UTF8.self)
    }
  }

  /// length (big-endian) ‖ type ‖ data ‖ CRC-32(type ‖ data).
  static func frame(type: String, data: [UInt8]) -> [UInt8] {
    let typeBytes = Array(type.utf8)
    let length = UInt32(data.count)
    var chunk: [UInt8] = [
      UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF),
      UInt8(length & 0xFF),
    ]
    chunk += typeBytes
    chunk += data
    let crc = CRC32.checksum(typeBytes + data)
    chunk += [
      UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF),
    ]
    return chunk
  }

  struct Chunk {
    let type: String
    let offset: Int
    let data: ArraySlice<UInt8>
    let crcMatches: Bool
  }

  /// The chunks of a PNG file up to IEND, each bounds-checked; nil when the bytes are not a
  /// well-framed PNG.
  static func chunks(_ bytes: [UInt8]) -> [Chunk]? {
    guard bytes.count >= 8, Array(bytes[0..<8]) == signature else { return nil }
    var result: [Chunk] = []
    var offset = 8
    while offset + 12 <= bytes.count {
      let length =
        Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8
        | Int(bytes[offset + 3])
      guard length <= Int(Int32.max), length <= bytes.count - offset - 12 else { return nil }
      let typeBytes = bytes[(offset + 4)..<(offset + 8)]
      guard typeBytes.allSatisfy({ (65...90).contains($0) || (97...122).contains($0) }) else {
        return nil
      }
      let type = String(decoding: typeBytes, as: UTF8.self)
      let data = bytes[(offset + 8)..<(offset + 8 + length)]
      let crcOffset = offset + 8 + length
      let stored =
        UInt32(bytes[crcOffset]) << 24 | UInt32(bytes[crcOffset + 1]) << 16
        | UInt32(bytes[crcOffset + 2]) << 8 | UInt32(bytes[crcOffset + 3])
      let computed = CRC32.checksum(bytes[(offset + 4)..<crcOffset])
      result.append(Chunk(type: type, offset: offset, data: data, crcMatches: stored == computed))
      offset = crcOffset + 4
      if type == "IEND" { return result }
    }
    return nil
  }

  /// Where the first chunk of `type` starts.
  static func firstOffset(of type: String, in bytes: [UInt8]) -> Int? {
    chunks(bytes)?.first { $0.type == type }?.offset
  }

  /// The `tEXt` and uncompressed `iTXt` entries, in file order.
  static func textEntries(in bytes: [UInt8], file: String) throws -> [PNGTextEntry] {
    guard let chunks = chunks(bytes) else {
      throw PNGError.malformed(
        file: file, reason: "no PNG signature or a chunk runs past the end of the file")
    }
    var entries: [PNGTextEntry] = []
    for chunk in chunks where chunk.type == "tEXt" || chunk.type == "iTXt" {
      guard chunk.crcMatches else {
        throw PNGError.malformed(
          file: file, reason: "\(chunk.type) chunk at byte \(chunk.offset) fails its CRC")
      }
      let data = Array(chunk.data)
      guard let separator = data.firstIndex(of: 0), separator > 0 else {
        throw PNGError.malformed(
          file: file, reason: "\(chunk.type) chunk at byte \(chunk.offset) has no keyword")
      }
      // Keywords and tEXt text are Latin-1: each byte is the code point of the same value.
      let keyword = String(data[..<separator].map { Character(Unicode.Scalar($0)) })
      let rest = data[(separator + 1)...]
      if chunk.type == "tEXt" {
        entries.append(
          PNGTextEntry(keyword: keyword, text: String(rest.map { Character(Unicode.Scalar($0)) })))
        continue
      }
      // iTXt: compression flag, method, language NUL, translated keyword NUL, UTF-8 text.
      let fields = Array(rest)
      guard fields.count >= 2 else {
        throw PNGError.malformed(
          file: file, reason: "iTXt chunk at byte \(chunk.offset) is truncated")
      }
      if fields[0] != 0 { continue }
      guard let languageEnd = fields[2...].firstIndex(of: 0),
        let translatedEnd = fields[(languageEnd + 1)...].firstIndex(of: 0)
      else {
        throw PNGError.malformed(
          file: file, reason: "iTXt chunk at byte \(chunk.offset) is truncated")
      }
      let textBytes = fields[(translatedEnd + 1)...]
      guard let text = String(validating: textBytes, as: UTF8.self) else {
        throw PNGError.malformed(file: file, reason: "iTXt '\(keyword)' is not valid UTF-8")
      }
      entries.append(PNGTextEntry(keyword: keyword, text: text))
    }
    return entries
  }
}

/// CRC-32 (ISO 3309, the polynomial PNG and zlib use).
enum CRC32 {
  static let table: [UInt32] = (0..<256).map { index -> UInt32 in
    var value = UInt32(index)
    for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
    return value
  }

  static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
    return crc ^ 0xFFFF_FFFF
  }
}
