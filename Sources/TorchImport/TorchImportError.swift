import SafeTensors

/// Everything that can be wrong with a PyTorch checkpoint we are asked to read. Every case names
/// the file; none of them means code ran: the reader refuses before anything could.
public enum TorchImportError: Error, CustomStringConvertible, Sendable {
  /// The zip structure is damaged, truncated or hostile.
  case invalidZip(file: String, reason: String)
  /// A zip entry torch never writes: compressed or encrypted.
  case unsupportedEntry(file: String, entry: String, reason: String)
  /// The pickle names a global outside the state-dict allow-list (`os.system`, `builtins.eval`, …).
  case refusedGlobal(file: String, module: String, name: String)
  /// The pickle uses an opcode a tensor state dict never needs (`INST`, `OBJ`, `EXT1`, protocol 0 text).
  case refusedOpcode(file: String, opcode: String, offset: Int)
  /// The pickle is malformed, or an allowed function got arguments it does not take.
  case invalidPickle(file: String, offset: Int, reason: String)
  /// A bound on size, depth or count was exceeded (pickle bombs, deep nesting).
  case limitExceeded(file: String, reason: String)
  /// A tensor whose storage, dtype, shape or strides cannot be honoured.
  case invalidTensor(file: String, tensor: String, reason: String)
  /// The checkpoint's structure is not a state dict.
  case notAStateDict(file: String, reason: String)
  /// A legacy (pre-1.6) file in a variant we do not read.
  case unsupportedLegacy(file: String, reason: String)

  public var description: String {
    func p(_ text: String) -> String { SafeTensorsError.printable(text, limit: 160) }
    switch self {
    case .invalidZip(let file, let reason): return "\(file): not a readable PyTorch zip: \(reason)"
    case .unsupportedEntry(let file, let entry, let reason):
      return "\(file): entry '\(p(entry))' cannot be read: \(reason)"
    case .refusedGlobal(let file, let module, let name):
      return
        "\(file): the pickle asks for \(p(module)).\(p(name)), which a tensor state dict never needs: refused, nothing was run (a malicious or non-weights checkpoint)"
    case .refusedOpcode(let file, let opcode, let offset):
      return
        "\(file): the pickle uses \(opcode) at byte \(offset), which a tensor state dict never needs: refused, nothing was run"
    case .invalidPickle(let file, let offset, let reason):
      return "\(file): malformed pickle at byte \(offset): \(reason)"
    case .limitExceeded(let file, let reason): return "\(file): refused: \(reason)"
    case .invalidTensor(let file, let tensor, let reason): return "\(file): tensor '\(p(tensor))': \(reason)"
    case .notAStateDict(let file, let reason): return "\(file): \(reason)"
    case .unsupportedLegacy(let file, let reason): return "\(file): legacy PyTorch format: \(reason)"
    }
  }
}
