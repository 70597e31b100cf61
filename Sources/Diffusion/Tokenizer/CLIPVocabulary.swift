import Foundation

/// CLIP's byte-level BPE vocabulary: 256 byte symbols, the same 256 with `</w>`, one token per
/// merge, then `<|startoftext|>` and `<|endoftext|>` (49,408 tokens from 48,894 merges).
///
/// Built exactly as open_clip `SimpleTokenizer.__init__` (identical to openai/CLIP
/// `simple_tokenizer.py`) builds it: merges are read from lines `[1 ..< 48,895]` of
/// `bpe_simple_vocab_16e6.txt`, the token → id map and the merge ranks keep the last occurrence of
/// a duplicate (Python `dict(zip(...))`; the shipped file has none).
public struct CLIPVocabulary: Sendable {
  /// The number of merges CLIP reads (`49152 - 256 - 2`).
  public static let mergeCount = 48_894
  /// `<|startoftext|>`.
  public static let startToken: Int32 = 49_406
  /// `<|endoftext|>`.
  public static let endToken: Int32 = 49_407
  /// The name of the shipped resource.
  public static let resourceName = "bpe_simple_vocab_16e6.txt.zst"

  /// Token strings by id (byte symbols are GPT-2's printable stand-ins, word ends carry `</w>`).
  public let tokens: [String]
  /// Id of each byte as a symbol inside a word.
  let byteSymbols: [Int32]
  /// Id of each byte as the last symbol of a word (`…</w>`).
  let byteWordEndSymbols: [Int32]
  /// Merge table: (left id << 32 | right id) → (rank, merged id).
  let merges: [UInt64: Merge]

  struct Merge: Sendable {
    let rank: Int32
    let merged: Int32
  }

  /// The number of tokens (49,408 for the real file).
  public var count: Int { tokens.count }

  /// Id of a token string, if it is in the vocabulary (last occurrence wins, as in open_clip).
  public func id(of token: String) -> Int32? { tokenIDs[token] }

  private let tokenIDs: [String: Int32]

  /// Builds the vocabulary from the text of `bpe_simple_vocab_16e6.txt` (header line, then merges
  /// `left right`, one per line). `source` names the file in errors.
  public init(mergesText: String, source: String = "bpe_simple_vocab_16e6.txt") throws {
    // Work on UTF-8 bytes: Swift's Character-based split would glue a combining mark to a space.
    let bytes = Array(mergesText.utf8)
    var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
    guard lines.count >= Self.mergeCount + 1 else {
      throw DiffusionError.invalidVocabulary(
        file: source, reason: "\(lines.count) lines, need a header and \(Self.mergeCount) merges")
    }
    lines = Array(lines[1...Self.mergeCount])
    let symbols = ByteLevel.symbols
    var tokens = [String]()
    tokens.reserveCapacity(512 + Self.mergeCount + 2)
    for byte in ByteLevel.vocabularyOrder { tokens.append(symbols[Int(byte)]) }
    for byte in ByteLevel.vocabularyOrder { tokens.append(symbols[Int(byte)] + "</w>") }
    var pairs = [(String, String)]()
    pairs.reserveCapacity(Self.mergeCount)
    for (index, line) in lines.enumerated() {
      // Python's `str.split()` on whitespace; CLIP symbols never contain spaces.
      let parts = line.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D })
      guard parts.count == 2 else {
        throw DiffusionError.invalidVocabulary(
          file: source, reason: "line \(index + 2) is not two symbols separated by a space")
      }
      let left = String(decoding: parts[0], as: UTF8.self)
      let right = String(decoding: parts[1], as: UTF8.self)
      pairs.append((left, right))
      tokens.append(left + right)
    }
    tokens.append("<|startoftext|>")
    tokens.append("<|endoftext|>")
    var ids = [String: Int32](minimumCapacity: tokens.count)
    for (index, token) in tokens.enumerated() { ids[token] = Int32(index) }
    var merges = [UInt64: Merge](minimumCapacity: pairs.count)
    for (rank, pair) in pairs.enumerated() {
      let (left, right) = pair
      guard let leftID = ids[left], let rightID = ids[right], let mergedID = ids[left + right]
      else {
        throw DiffusionError.invalidVocabulary(
          file: source, reason: "merge on line \(rank + 2) uses a symbol that is not a token")
      }
      merges[Self.key(leftID, rightID)] = Merge(rank: Int32(rank), merged: mergedID)
    }
    self.tokens = tokens
    self.tokenIDs = ids
    self.merges = merges
    self.byteSymbols = (0..<256).map { ids[symbols[$0]] ?? 0 }
    self.byteWordEndSymbols = (0..<256).map { ids[symbols[$0] + "</w>"] ?? 0 }
    guard tokens.count == 49_408, ids["<|endoftext|>"] == Self.endToken,
      ids["<|startoftext|>"] == Self.startToken
    else {
      throw DiffusionError.invalidVocabulary(
        file: source, reason: "\(tokens.count) tokens instead of 49408")
    }
  }

  /// Reads a vocabulary file: zstd-compressed (detected by its magic bytes) or plain text.
  public init(contentsOf path: String) throws {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw DiffusionError.vocabularyUnreadable(file: path, reason: error.localizedDescription)
    }
    let text =
      ZstdDecoder.isCompressed(data)
      ? try ZstdDecoder.decompress(data, file: path) : data
    guard let string = String(data: text, encoding: .utf8) else {
      throw DiffusionError.invalidVocabulary(file: path, reason: "not UTF-8 text")
    }
    try self.init(mergesText: string, source: path)
  }

  /// The vocabulary shipped with the module, loaded once per process.
  ///
  /// Looked for, in order: the file named by the environment variable `ROUWEI_CLIP_VOCAB`; the
  /// SwiftPM resource bundle beside the executable (`rouwei-ckpt_Diffusion.resources/`, or the
  /// `.bundle` on macOS); `../share/rouwei-ckpt/` next to the executable's folder (an installed
  /// layout); the source tree this module was built from.
  public static func bundled() throws -> CLIPVocabulary { try bundledResult.get() }

  private static let bundledResult: Result<CLIPVocabulary, DiffusionError> = {
    let candidates = searchPaths()
    for path in candidates where FileManager.default.isReadableFile(atPath: path) {
      do {
        return .success(try CLIPVocabulary(contentsOf: path))
      } catch let error as DiffusionError {
        return .failure(error)
      } catch {
        return .failure(.vocabularyUnreadable(file: path, reason: "\(error)"))
      }
    }
    return .failure(.vocabularyNotFound(searched: candidates))
  }()

  /// The places `bundled()` looks, in order.
  public static func searchPaths() -> [String] {
    var paths = [String]()
    if let override = ProcessInfo.processInfo.environment["ROUWEI_CLIP_VOCAB"], !override.isEmpty {
      paths.append(override)
    }
    var folders = [URL]()
    if let executable = Bundle.main.executableURL {
      folders.append(executable.resolvingSymlinksInPath().deletingLastPathComponent())
    }
    folders.append(Bundle.main.bundleURL)
    if let resources = Bundle.main.resourceURL { folders.append(resources) }
    for folder in folders {
      for bundle in ["rouwei-ckpt_Diffusion.resources", "rouwei-ckpt_Diffusion.bundle"] {
        paths.append(
          folder.appendingPathComponent(bundle).appendingPathComponent(resourceName).path)
        paths.append(
          folder.appendingPathComponent(bundle).appendingPathComponent("Contents/Resources")
            .appendingPathComponent(resourceName).path)
      }
      paths.append(
        folder.deletingLastPathComponent().appendingPathComponent("share/rouwei-ckpt")
          .appendingPathComponent(resourceName).path)
    }
    let sourceTree = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Resources")
      .appendingPathComponent(resourceName)
    paths.append(sourceTree.path)
    var seen = Set<String>()
    return paths.filter { seen.insert($0).inserted }
  }

  @inline(__always) static func key(_ left: Int32, _ right: Int32) -> UInt64 {
    UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
  }
}

/// GPT-2/CLIP's reversible byte ↔ printable-character map (`bytes_to_unicode`).
enum ByteLevel {
  /// Bytes in vocabulary order: `!`…`~`, `¡`…`¬`, `®`…`ÿ`, then the other 68 in byte order.
  static let vocabularyOrder: [UInt8] = {
    var printable = [UInt8]()
    printable += Array(33...126)
    printable += Array(161...172)
    printable += Array(174...255)
    let rest = (0...255).map(UInt8.init).filter { !printable.contains($0) }
    return printable + rest
  }()

  /// The one-character string standing for each byte.
  static let symbols: [String] = {
    var table = [String](repeating: "", count: 256)
    var next = 256
    for byte in 0...255 {
      let printable =
        (33...126).contains(byte) || (161...172).contains(byte)
        || (174...255).contains(byte)
      let code = printable ? byte : next
      if !printable { next += 1 }
      table[byte] = String(Character(Unicode.Scalar(UInt32(code)) ?? "?"))
    }
    return table
  }()
}
