import Foundation
import SafeTensors

/// A PyTorch checkpoint (`torch.save`: the zip format, or the legacy pre-1.6 pickle stream) read
/// without running any of its code: the restricted pickle interpreter builds the object tree, the
/// state dict is found in it, and tensors are served as strided views of the mapped storages.
public final class TorchCheckpoint: @unchecked Sendable {
  /// One tensor of the checkpoint, by its flattened name.
  public struct Tensor: Sendable {
    public let name: String
    public let reference: TensorReference
    /// The tensor's part of the checkpoint: the model, its EMA copy, or optimizer/training state.
    public let role: Role
    public var shape: [Int] { reference.shape }
    public var dtype: TorchDType { reference.dtype }
    /// Elements (checked: shapes are validated when the checkpoint opens).
    public var elementCount: Int { reference.shape.reduce(1, *) }
  }

  /// Where a tensor sits in the checkpoint.
  public enum Role: String, Codable, Sendable {
    case model
    case ema
    /// Optimizer state, callbacks and other training leftovers.
    case trainingState = "training-state"
  }

  public let path: String
  public let format: Format
  public let mapping: MappedFile
  /// Every tensor in pickle order.
  public let tensors: [Tensor]
  /// Top-level values that are not tensors (`global_step`, `epoch`, version strings), as text.
  public let scalars: [String: String]
  /// Byte ranges of the storages in the file, by key.
  private let storageRanges: [String: Range<Int>]
  /// The zip entry of each storage (for its CRC-32), by key; empty for legacy files.
  private let storageEntries: [String: ZipArchive.Entry]
  private let archive: ZipArchive?
  /// Storages whose CRC-32 was checked (each once, however many tensors view it).
  private var verified = Set<String>()
  private let verifyChecksums: Bool

  public enum Format: String, Codable, Sendable {
    case zip = "pytorch-zip"
    case legacy = "pytorch-legacy"
  }

  /// Largest pickle accepted (a full SDXL checkpoint's is about 300 KB).
  static let maximumPickleBytes = 256 << 20
  /// Largest number of tensors accepted.
  static let maximumTensors = 1 << 20

  /// Opens and validates `path`: every tensor's storage exists, has the declared size, and holds
  /// every element the tensor's shape, strides and offset reach; the pickle's CRC-32 matches.
  /// Storage CRCs are checked by `verifyStorage` (the import does, before copying a storage).
  /// `verifyChecksums: false` skips every CRC (for the fuzzer, which mutates bytes freely).
  public init(path: String, verifyChecksums: Bool = true) throws {
    self.path = path
    self.verifyChecksums = verifyChecksums
    mapping = try MappedFile(path: path)
    var entries: [String: ZipArchive.Entry] = [:]
    var zip: ZipArchive?
    let bytes = mapping.bytes(offset: 0, count: mapping.size)
    var machine: PickleMachine
    var ranges: [String: Range<Int>] = [:]
    if bytes.count >= 4 && bytes.u32(0) == 0x0403_4B50 {
      format = .zip
      let archive = try ZipArchive(mapping: mapping, path: path)
      zip = archive
      let pickles = archive.entries.filter { entry in
        let parts = entry.name.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2 && parts[1] == "data.pkl"
      }
      guard pickles.count == 1, let pickle = pickles.first else {
        throw TorchImportError.invalidZip(
          file: path,
          reason: pickles.isEmpty
            ? "no <archive>/data.pkl entry: not a torch.save checkpoint" : "more than one data.pkl")
      }
      if let order = archive.entry(String(pickle.name.dropLast("data.pkl".count)) + "byteorder") {
        guard String(decoding: archive.data(order), as: UTF8.self) == "little" else {
          throw TorchImportError.invalidZip(file: path, reason: "big-endian storages are not supported")
        }
      }
      guard pickle.size <= Self.maximumPickleBytes else {
        throw TorchImportError.limitExceeded(
          file: path, reason: "data.pkl of \(pickle.size) bytes (at most \(Self.maximumPickleBytes))")
      }
      if verifyChecksums { try archive.verify(pickle) }
      machine = PickleMachine(file: path)
      defer { machine.tearDown() }
      let (value, _) = try machine.run(archive.data(pickle))
      let prefix = String(pickle.name.dropLast("data.pkl".count)) + "data/"
      for (key, storage) in machine.storages {
        guard let entry = archive.entry(prefix + key) else {
          throw TorchImportError.invalidZip(file: path, reason: "storage '\(key)' has no entry \(prefix + key)")
        }
        guard let byteCount = storage.byteCount, entry.size == byteCount else {
          throw TorchImportError.invalidZip(
            file: path,
            reason:
              "storage '\(key)' holds \(entry.size) bytes but is declared as \(storage.count) × \(storage.dtype?.rawValue ?? "byte")"
          )
        }
        ranges[key] = entry.dataOffset..<(entry.dataOffset + entry.size)
        entries[key] = entry
      }
      (tensors, scalars) = try Self.flatten(value, file: path)
    } else {
      format = .legacy
      guard bytes.count >= Self.legacyMagic.count, bytes.prefix(Self.legacyMagic.count).elementsEqual(Self.legacyMagic)
      else {
        throw TorchImportError.unsupportedLegacy(
          file: path, reason: "not a torch.save file (no zip header, no legacy magic number)")
      }
      machine = PickleMachine(file: path, legacy: true)
      defer { machine.tearDown() }
      var position = Self.legacyMagic.count
      let (version, afterVersion) = try machine.run(bytes, from: position)
      guard case .int(1001) = version else {
        throw TorchImportError.unsupportedLegacy(
          file: path, reason: "protocol version \(version.typeName) (only 1001 is read)")
      }
      let (systemInfo, afterInfo) = try machine.run(bytes, from: afterVersion)
      if case .dict(let info) = systemInfo, case .bool(false)? = info["little_endian"] {
        throw TorchImportError.unsupportedLegacy(file: path, reason: "big-endian storages")
      }
      var pickleMachine = PickleMachine(file: path, legacy: true)
      defer { pickleMachine.tearDown() }
      let (value, afterValue) = try pickleMachine.run(bytes, from: afterInfo)
      let (keysValue, afterKeys) = try machine.run(bytes, from: afterValue)
      guard case .list(let keyList) = keysValue else {
        throw TorchImportError.unsupportedLegacy(file: path, reason: "no storage key list after the object")
      }
      // Storages follow in the order of the key list: an 8-byte count, then the bytes.
      position = afterKeys
      for item in keyList.items {
        guard case .string(let key) = item, let storage = pickleMachine.storages[key], ranges[key] == nil else {
          throw TorchImportError.unsupportedLegacy(
            file: path, reason: "a storage key list that does not match the object")
        }
        guard position <= bytes.count - 8 else {
          throw TorchImportError.unsupportedLegacy(
            file: path, reason: "storage '\(key)' is missing: the file is truncated")
        }
        let count = bytes.u64(position)
        guard count == UInt64(storage.count), let byteCount = storage.byteCount, byteCount <= bytes.count - position - 8
        else {
          throw TorchImportError.unsupportedLegacy(
            file: path,
            reason:
              "storage '\(key)' declares \(count) elements where its reference says \(storage.count), or runs past the end (truncated?)"
          )
        }
        ranges[key] = (position + 8)..<(position + 8 + byteCount)
        position += 8 + byteCount
      }
      guard ranges.count == pickleMachine.storages.count else {
        throw TorchImportError.unsupportedLegacy(file: path, reason: "the key list leaves storages out")
      }
      (tensors, scalars) = try Self.flatten(value, file: path)
    }
    storageRanges = ranges
    storageEntries = entries
    archive = zip
    for tensor in tensors {
      try Self.check(tensor, storageBytes: ranges[tensor.reference.storage.key]?.count ?? -1, file: path)
    }
  }

  /// `torch.save`'s legacy magic number as the first pickle (`LONG1` 0x1950a86a20f9469cfc6c, STOP).
  static let legacyMagic: [UInt8] = [
    0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E,
  ]

  /// The mapped bytes of a tensor's storage.
  public func storageBytes(_ tensor: Tensor) -> UnsafeRawBufferPointer {
    let range = storageRanges[tensor.reference.storage.key]!
    return mapping.bytes(offset: range.lowerBound, count: range.count)
  }

  /// Checks the CRC-32 of the tensor's storage entry, once per storage (zip files; legacy files
  /// record none).
  public func verifyStorage(of tensor: Tensor) throws {
    let key = tensor.reference.storage.key
    guard verifyChecksums, let archive, let entry = storageEntries[key], !verified.contains(key) else { return }
    try archive.verify(entry)
    verified.insert(key)
  }

  /// Whether the tensor is one row-major run of its storage.
  public static func isContiguous(_ reference: TensorReference) -> Bool {
    var expected = 1
    for (size, stride) in zip(reference.shape, reference.stride).reversed() where size != 1 {
      if stride != expected { return false }
      expected *= size
    }
    return true
  }

  /// Checks shape, strides and offset against the storage: every element reachable lies inside it.
  static func check(_ tensor: Tensor, storageBytes: Int, file: String) throws {
    let reference = tensor.reference
    func fail(_ reason: String) -> TorchImportError { .invalidTensor(file: file, tensor: tensor.name, reason: reason) }
    guard storageBytes >= 0 else { throw fail("its storage '\(reference.storage.key)' is missing") }
    var count = 1
    var last = reference.offset
    for (size, stride) in zip(reference.shape, reference.stride) {
      let (product, overflow) = count.multipliedReportingOverflow(by: size)
      guard !overflow else { throw fail("shape \(reference.shape) overflows") }
      count = product
      if size > 0 {
        let (step, stepOverflow) = (size - 1).multipliedReportingOverflow(by: stride)
        let (sum, sumOverflow) = last.addingReportingOverflow(step)
        guard !stepOverflow, !sumOverflow else { throw fail("strides \(reference.stride) overflow") }
        last = sum
      }
    }
    guard count.multipliedReportingOverflow(by: reference.dtype.size).overflow == false else {
      throw fail("shape \(reference.shape) overflows")
    }
    if let typed = reference.storage.dtype, typed.size != reference.dtype.size {
      throw fail("a \(reference.dtype.rawValue) view of a \(typed.rawValue) storage")
    }
    guard count > 0 else { return }
    let (end, overflow) = (last + 1).multipliedReportingOverflow(by: reference.dtype.size)
    guard !overflow, end <= storageBytes else {
      throw fail(
        "offset \(reference.offset), shape \(reference.shape) and strides \(reference.stride) reach byte \(overflow ? Int.max : end) of a \(storageBytes)-byte storage (past the data)"
      )
    }
  }

  // MARK: - Finding the state dict

  /// Names under which trainers keep EMA weights and optimizer state at the top level.
  static let emaKeys: Set<String> = ["ema", "model_ema", "state_dict_ema", "ema_state_dict", "ema_model"]
  static let stateDictKeys = ["state_dict", "model_state_dict", "module", "model"]

  /// Flattens the object tree into named tensors: the model is `state_dict` (or another common
  /// wrapper key) when there is one, else the whole top-level dict; EMA copies (top-level `ema`…,
  /// `model_ema.` keys) and everything else with tensors (optimizer, callbacks) get their role.
  static func flatten(_ root: PickleValue, file: String) throws -> ([Tensor], [String: String]) {
    guard case .dict(let top) = root else {
      throw TorchImportError.notAStateDict(
        file: file, reason: "the checkpoint holds a \(root.typeName), not a dict of tensors")
    }
    var tensors: [Tensor] = []
    var scalars: [String: String] = [:]
    var seen = Set<String>()
    let wrapper = stateDictKeys.first { key in
      if case .dict? = top[key] { return true }
      return false
    }
    func walk(_ value: PickleValue, _ name: String, _ role: Role, depth: Int) throws {
      guard depth <= 32 else {
        throw TorchImportError.limitExceeded(
          file: file, reason: "dicts nested more than 32 deep at '\(name.prefix(160))' (or a cycle)")
      }
      switch value {
      case .tensor(let reference):
        guard tensors.count < maximumTensors else {
          throw TorchImportError.limitExceeded(file: file, reason: "more than \(maximumTensors) tensors")
        }
        guard seen.insert(name).inserted else {
          throw TorchImportError.notAStateDict(
            file: file, reason: "two tensors flatten to the name '\(name.prefix(160))'")
        }
        let finalRole: Role = role == .model && name.hasPrefix("model_ema.") ? .ema : role
        tensors.append(Tensor(name: name, reference: reference, role: finalRole))
      case .dict(let dict):
        for (key, child) in zip(dict.keys, dict.values) {
          try walk(child, name.isEmpty ? key.text : name + "." + key.text, role, depth: depth + 1)
        }
      case .list(let list):
        for (position, child) in list.items.enumerated() {
          try walk(child, name.isEmpty ? String(position) : name + "." + String(position), role, depth: depth + 1)
        }
      case .tuple(let items, _):
        for (position, child) in items.enumerated() {
          try walk(child, name.isEmpty ? String(position) : name + "." + String(position), role, depth: depth + 1)
        }
      default:
        break
      }
    }
    for (key, value) in zip(top.keys, top.values) {
      let text = key.text
      switch value {
      case .int(let number): scalars[text] = String(number)
      case .float(let number): scalars[text] = String(number)
      case .string(let string): scalars[text] = String(string.prefix(200))
      case .bool(let flag): scalars[text] = String(flag)
      default: break
      }
      if let wrapper {
        let role: Role = text == wrapper ? .model : emaKeys.contains(text) ? .ema : .trainingState
        try walk(value, text == wrapper ? "" : text, role, depth: 1)
      } else {
        let role: Role = emaKeys.contains(text) ? .ema : text.hasPrefix("optimizer") ? .trainingState : .model
        try walk(value, text, role, depth: 1)
      }
    }
    return (tensors, scalars)
  }
}
