import Foundation
import SafeTensors

/// What a safetensors file holds, judged from its tensor names.
public enum SafeTensorsContent: String, Codable, Sendable, CaseIterable {
  /// UNet with text encoders and/or VAE (a single-file checkpoint).
  case fullCheckpoint = "checkpoint"
  /// A UNet alone (single-file names without the other parts, or diffusers UNet names).
  case unetOnly = "unet"
  /// An autoencoder alone.
  case vae
  /// One or more text encoders alone.
  case textEncoder = "text-encoder"
  /// A LoRA / LyCORIS adapter (low-rank or other deltas meant to be added to a base model).
  case loraAdapter = "lora"
  /// A textual-inversion embedding (a few token vectors).
  case textualInversion = "embedding"
  /// A ControlNet.
  case controlNet = "controlnet"
  /// Tensors we cannot place.
  case unknown

  /// What a user calls it.
  public var title: String {
    switch self {
    case .fullCheckpoint: return "a checkpoint"
    case .unetOnly: return "a UNet-only file"
    case .vae: return "a VAE"
    case .textEncoder: return "a text encoder"
    case .loraAdapter: return "a LoRA adapter"
    case .textualInversion: return "a textual-inversion embedding"
    case .controlNet: return "a ControlNet"
    case .unknown: return "a safetensors file of unknown content"
    }
  }

  /// Classifies a set of tensor names (the key patterns the common trainers and converters write).
  public static func classify(keys: Set<String>) -> SafeTensorsContent {
    if keys.isEmpty { return .unknown }
    func any(_ test: (String) -> Bool) -> Bool { keys.contains(where: test) }
    // Adapters first: their keys embed base-model names (`lora_unet_input_blocks…`).
    let adapterMarkers = [
      "lora_up.", "lora_down.", "lora_A.", "lora_B.", ".lora.up.", ".lora.down.", "hada_w1_a", "hada_w2_b",
      "lokr_w1", "lokr_w2", ".oft_blocks", ".oft_diag", "lora_mid.", ".dora_scale",
    ]
    if any({ key in
      key.hasPrefix("lora_unet_") || key.hasPrefix("lora_te") || adapterMarkers.contains { key.contains($0) }
    }) {
      return .loraAdapter
    }
    if any({ $0.hasPrefix("control_model.") || $0.hasPrefix("controlnet_") || $0.contains("input_hint_block.") }) {
      return .controlNet
    }
    // SDXL embeddings hold `clip_l` and `clip_g`; SD1 ones `emb_params` or `string_to_param.*`.
    let embeddingKeys: Set<String> = ["clip_l", "clip_g", "emb_params", "string_to_param.*", "string_to_token.*"]
    if keys.count <= 4, keys.allSatisfy({ embeddingKeys.contains($0) || $0.hasPrefix("string_to_") || $0 == "name" }),
      keys.contains(where: { $0 != "name" })
    {
      return .textualInversion
    }
    let layout = Layout.detect(keys: keys)
    switch layout.name {
    case "single-file", "sd1-single-file":
      if any({ $0.hasPrefix(SingleFilePrefix.unet) }) { return .fullCheckpoint }
      let onlyVAE = keys.allSatisfy { $0.hasPrefix(SingleFilePrefix.vae) }
      return onlyVAE ? .vae : .textEncoder
    case "unet-only", "diffusers-unet": return .unetOnly
    case "diffusers-vae": return .vae
    case "diffusers-text-encoder": return .textEncoder
    default: break
    }
    // The LDM VAE saved alone (`encoder.down.0…`, `decoder.up.0…`), as sdxl_vae.safetensors is.
    if any({ $0.hasPrefix("encoder.down.") }) && any({ $0.hasPrefix("decoder.up.") }) { return .vae }
    if any({ $0.hasPrefix("cond_stage_model.") || $0.hasPrefix("conditioner.") }) { return .textEncoder }
    return .unknown
  }
}

/// What a path is, judged by its content (never by its extension): the one diagnosis every command
/// makes before it opens an input, so a LoRA, a GGUF, a PyTorch pickle or a saved HTML error page
/// gets a one-line explanation instead of a format error from the wrong reader.
public enum FileKind: Equatable, Sendable {
  /// A safetensors file whose header parses; `content` is what its tensor names say it holds.
  case safetensors(content: SafeTensorsContent, tensors: Int)
  /// A safetensors-looking file whose header the reader refuses (the reader's error says why).
  case malformedSafeTensors
  /// A GGUF file (`GGUF` magic).
  case gguf
  /// A zip written by `torch.save` (an `archive/data.pkl` entry).
  case torchZip
  /// A zip that is not a PyTorch checkpoint.
  case zip
  /// The legacy (pre-1.6, non-zip) `torch.save` format: a pickle starting with torch's magic number.
  case torchLegacy
  /// Some other Python pickle.
  case pickle
  /// A diffusers pipeline or component folder.
  case diffusersFolder
  /// A directory without the diffusers layout.
  case directory
  /// An HTML page (usually a failed download saved under the model's name).
  case html(firstLine: String)
  /// A JSON document.
  case json(firstLine: String)
  /// A Git LFS pointer file (the repository was cloned without `git lfs`).
  case gitLFSPointer
  /// Other text.
  case text(firstLine: String)
  /// A file of zero bytes.
  case empty
  /// Fewer bytes than the file's own header promises.
  case truncated(format: String, present: Int, claimed: Int)
  /// No file at the path.
  case missing
  /// Binary content we do not recognise.
  case unknown(magic: String)

  /// A short name for JSON and tests.
  public var name: String {
    switch self {
    case .safetensors(let content, _): return "safetensors/\(content.rawValue)"
    case .malformedSafeTensors: return "safetensors/malformed"
    case .gguf: return "gguf"
    case .torchZip: return "pytorch-zip"
    case .zip: return "zip"
    case .torchLegacy: return "pytorch-legacy"
    case .pickle: return "pickle"
    case .diffusersFolder: return "diffusers-folder"
    case .directory: return "directory"
    case .html: return "html"
    case .json: return "json"
    case .gitLFSPointer: return "git-lfs-pointer"
    case .text: return "text"
    case .empty: return "empty"
    case .truncated: return "truncated"
    case .missing: return "missing"
    case .unknown: return "unknown"
    }
  }

  /// One phrase for messages: "a LoRA adapter", "an HTML page (a failed download?): first line '…'".
  public var phrase: String {
    switch self {
    case .safetensors(let content, _): return content.title
    case .malformedSafeTensors: return "a malformed safetensors file"
    case .gguf: return "a GGUF file"
    case .torchZip: return "a PyTorch checkpoint (torch.save zip)"
    case .zip: return "a zip archive, not a PyTorch checkpoint"
    case .torchLegacy: return "a legacy PyTorch checkpoint (pre-1.6 pickle format)"
    case .pickle: return "a Python pickle, not a PyTorch checkpoint"
    case .diffusersFolder: return "a diffusers folder"
    case .directory: return "a directory without model_index.json (not a diffusers pipeline)"
    case .html(let line): return "an HTML page (a failed download?): first line '\(line)'"
    case .json(let line): return "a JSON document, not a model: first line '\(line)'"
    case .gitLFSPointer: return "a Git LFS pointer, not the model (fetch it with `git lfs pull`)"
    case .text(let line): return "a text file, not a model: first line '\(line)'"
    case .empty: return "an empty file (0 bytes: an interrupted download?)"
    case .truncated(let format, let present, let claimed):
      return
        "a truncated \(format) file: \(present) bytes present, its header claims \(claimed) (an interrupted download?)"
    case .missing: return "not found"
    case .unknown(let magic): return "not a model file we recognise (first bytes \(magic))"
    }
  }

  /// Bytes read from the start of a file to recognise it.
  static let sniffLength = 4096

  /// Sniffs `path`: a few KB from its start, plus the safetensors header when there is one.
  public static func sniff(path: String) -> FileKind {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .missing }
    if isDirectory.boolValue {
      // What DiffusersFolder reads: a pipeline folder with its model_index.json.
      let index = (path as NSString).appendingPathComponent("model_index.json")
      return FileManager.default.fileExists(atPath: index) ? .diffusersFolder : .directory
    }
    // Non-blocking, so a FIFO given as a model cannot hang us; only regular files are read.
    let descriptor = open(path, O_RDONLY | O_NONBLOCK)
    guard descriptor >= 0 else { return .unknown(magic: "(unreadable)") }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
      return .unknown(magic: "(not a regular file)")
    }
    let size = Int(status.st_size)
    var prefix = [UInt8](repeating: 0, count: min(size, sniffLength))
    let count = prefix.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
    guard count >= 0 else { return .unknown(magic: "(unreadable)") }
    prefix.removeSubrange(count...)
    return classify(prefix: prefix, fileSize: size, path: path)
  }

  /// Classifies the first bytes of a file of `fileSize` bytes. With `path`, a safetensors header is
  /// parsed from the file to say what it holds; without, only the prefix is used (for the fuzzer).
  public static func classify(prefix: [UInt8], fileSize: Int, path: String?) -> FileKind {
    if fileSize == 0 || prefix.isEmpty { return .empty }
    if prefix.starts(with: Array("GGUF".utf8)) { return .gguf }
    if prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return sniffZip(prefix) }
    if prefix.starts(with: [0x50, 0x4B, 0x05, 0x06]) { return .zip }  // an empty zip
    if let kind = sniffSafeTensors(prefix: prefix, fileSize: fileSize, path: path) { return kind }
    if prefix[0] == 0x80, prefix.count >= 2, (2...5).contains(prefix[1]) {
      return prefix.starts(with: torchLegacyMagic) ? .torchLegacy : .pickle
    }
    if let kind = sniffText(prefix) { return kind }
    // Binary that starts with a plausible safetensors header length (or is too short to hold one):
    // the safetensors reader's message says what is wrong with it more precisely than we can.
    if prefix.count < 8 { return .malformedSafeTensors }
    var declared: UInt64 = 0
    for index in (0..<8).reversed() { declared = declared << 8 | UInt64(prefix[index]) }
    if declared <= SafeTensorsHeader.maximumHeaderLength { return .malformedSafeTensors }
    return .unknown(magic: prefix.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " "))
  }

  /// `torch.save`'s legacy magic number 0x1950a86a20f9469cfc6c as protocol-2 pickle `LONG1`.
  static let torchLegacyMagic: [UInt8] = [
    0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19,
  ]

  /// A zip whose first entry is `<archive>/data.pkl`, `<archive>/byteorder` or `<archive>/version`
  /// (what `torch.save` writes first) is a PyTorch checkpoint.
  static func sniffZip(_ prefix: [UInt8]) -> FileKind {
    guard prefix.count >= 30 else { return .truncated(format: "zip", present: prefix.count, claimed: 30) }
    let nameLength = Int(prefix[26]) | Int(prefix[27]) << 8
    let end = min(prefix.count, 30 + nameLength)
    let name = String(decoding: prefix[30..<end], as: UTF8.self)
    let torchEntries = ["data.pkl", "byteorder", "version", ".format_version", ".storage_alignment"]
    if let slash = name.firstIndex(of: "/"), torchEntries.contains(String(name[name.index(after: slash)...])) {
      return .torchZip
    }
    return .zip
  }

  /// Safetensors: 8-byte little-endian header length, then a JSON object.
  static func sniffSafeTensors(prefix: [UInt8], fileSize: Int, path: String?) -> FileKind? {
    guard prefix.count >= 9 else { return nil }
    var declared: UInt64 = 0
    for index in (0..<8).reversed() { declared = declared << 8 | UInt64(prefix[index]) }
    // The JSON may be preceded by whitespace (the format allows padding).
    guard let first = prefix[8...].first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }), first == UInt8(ascii: "{")
    else { return nil }
    // Shaped like safetensors but with an impossible length: the reader's message says which.
    guard declared >= 2, declared <= SafeTensorsHeader.maximumHeaderLength else { return .malformedSafeTensors }
    let headerEnd = 8 + Int(declared)
    if headerEnd > fileSize {
      return .truncated(format: "safetensors", present: fileSize, claimed: headerEnd)
    }
    guard let path else { return .safetensors(content: .unknown, tensors: 0) }
    do {
      // Read (not mapped: the command maps it next, and a map is what SIGBUS guarding watches).
      guard let header = readHeader(path: path, length: Int(declared)) else { return .malformedSafeTensors }
      let parsed = try header.withUnsafeBytes {
        try SafeTensorsHeader.parse($0, dataSectionLength: UInt64(fileSize - headerEnd), file: path)
      }
      return .safetensors(
        content: SafeTensorsContent.classify(keys: Set(parsed.tensors.map(\.name))), tensors: parsed.tensors.count)
    } catch let error as SafeTensorsError {
      // The header parsed but its ranges reach past the end: the file was cut short, unless the
      // claim is beyond any real model (1 TB: a hostile header, which the reader's message covers).
      switch error {
      case .dataSectionMismatch, .invalidOffsets:
        if let end = largestDataOffset(path: path, headerLength: Int(declared)) {
          let (claimed, overflow) = headerEnd.addingReportingOverflow(end)
          if !overflow && claimed > fileSize && claimed <= 1 << 40 {
            return .truncated(format: "safetensors", present: fileSize, claimed: claimed)
          }
        }
      default: break
      }
      return .malformedSafeTensors
    } catch {
      return .malformedSafeTensors
    }
  }

  /// The `length` header bytes after the 8-byte prefix, or nil when they cannot all be read.
  static func readHeader(path: String, length: Int) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_NONBLOCK)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var header = [UInt8](repeating: 0, count: length)
    var done = 0
    while done < length {
      let count = header.withUnsafeMutableBytes {
        pread(descriptor, $0.baseAddress! + done, length - done, off_t(8 + done))
      }
      if count < 0 && errno == EINTR { continue }
      guard count > 0 else { return nil }
      done += count
    }
    return header
  }

  /// The largest end offset in the header's `"data_offsets": [begin, end]` pairs, found by a plain
  /// scan (only used to diagnose a header the reader refused; nil when there is none).
  static func largestDataOffset(path: String, headerLength: Int) -> Int? {
    guard let bytes = readHeader(path: path, length: headerLength) else { return nil }
    let key = Array("\"data_offsets\"".utf8)
    var largest: Int?
    var position = 0
    while position + key.count <= bytes.count {
      guard bytes[position] == key[0], bytes[position..<(position + key.count)].elementsEqual(key) else {
        position += 1
        continue
      }
      position += key.count
      // Skip to the second number of the pair.
      var numbers: [Int] = []
      var current: Int?
      while position < bytes.count, numbers.count < 2 {
        let byte = bytes[position]
        if byte >= 0x30 && byte <= 0x39 {
          let (times, o1) = (current ?? 0).multipliedReportingOverflow(by: 10)
          let (plus, o2) = times.addingReportingOverflow(Int(byte - 0x30))
          current = o1 || o2 ? Int.max : plus
        } else if let value = current {
          numbers.append(value)
          current = nil
        } else if byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") {
          break
        }
        position += 1
      }
      if numbers.count == 2 { largest = max(largest ?? 0, numbers[1]) }
    }
    return largest
  }

  /// HTML, JSON, Git LFS pointers and other text: valid UTF-8 (allowing a cut last character) with
  /// no control characters but tab, newline and carriage return.
  static func sniffText(_ prefix: [UInt8]) -> FileKind? {
    var bytes = prefix[...]
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
    guard bytes.allSatisfy({ $0 >= 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }),
      bytes.contains(where: { $0 != 0x20 })
    else { return nil }
    // Up to three bytes of a character cut by the prefix's end are allowed.
    var text: String?
    for cut in 0...min(3, bytes.count - 1) {
      if let decoded = String(validating: bytes.dropLast(cut), as: UTF8.self) {
        text = decoded
        break
      }
    }
    guard let text else { return nil }
    let trimmed = text.drop(while: { $0.isWhitespace })
    let line = String(trimmed.prefix(while: { $0 != "\n" && $0 != "\r" }).prefix(120))
    let lower = trimmed.prefix(512).lowercased()
    if lower.hasPrefix("version https://git-lfs.github.com/spec/") { return .gitLFSPointer }
    if lower.hasPrefix("<!doctype html") || lower.hasPrefix("<html") || lower.hasPrefix("<head")
      || (lower.hasPrefix("<") && lower.contains("<html"))
    {
      return .html(firstLine: line)
    }
    if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") { return .json(firstLine: line) }
    return .text(firstLine: line)
  }
}
