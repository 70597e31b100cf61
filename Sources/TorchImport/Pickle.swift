import Foundation

/// A storage a checkpoint refers to by persistent id: `archive/data/<key>` in a zip, or the
/// storage with that key after the pickles of a legacy file.
public struct StorageReference: Sendable, Equatable {
  public let key: String
  /// The typed storage's dtype; nil for an `UntypedStorage` (bytes; the tensor says the dtype).
  public let dtype: TorchDType?
  /// Elements (typed) or bytes (untyped), as the persistent id declares.
  public let count: Int

  /// The storage's size in bytes (nil on overflow).
  public var byteCount: Int? {
    let (product, overflow) = count.multipliedReportingOverflow(by: dtype?.size ?? 1)
    return overflow ? nil : product
  }
}

/// A tensor as `torch._utils._rebuild_tensor_v2/v3` describes it: a strided view of a storage.
public struct TensorReference: Sendable, Equatable {
  public let storage: StorageReference
  public let dtype: TorchDType
  /// In elements of `dtype`.
  public let offset: Int
  public let shape: [Int]
  public let stride: [Int]
}

/// The functions and classes a tensor state dict needs, and nothing else.
enum PickleGlobal: Equatable {
  case orderedDict
  case rebuildTensor, rebuildTensorV2, rebuildTensorV3, rebuildParameter, rebuildParameterWithState
  case torchSize
  case codecsEncode
  /// A storage class: typed (`torch.FloatStorage`) or untyped (nil).
  case storageType(TorchDType?)
  case dtype(TorchDType)

  /// The allow-list. Anything else (`os.system`, `builtins.eval`, `subprocess.Popen`, any class)
  /// is refused by name when the pickle asks for it, before it could be called.
  static func resolve(module: String, name: String) -> PickleGlobal? {
    switch (module, name) {
    case ("collections", "OrderedDict"): return .orderedDict
    case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
    case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
    case ("torch._utils", "_rebuild_tensor_v3"): return .rebuildTensorV3
    case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
    case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
    case ("torch", "Size"): return .torchSize
    case ("_codecs", "encode"): return .codecsEncode
    case ("torch.storage", "UntypedStorage"), ("torch", "UntypedStorage"): return .storageType(nil)
    case ("torch", _):
      if let dtype = TorchDType.storage(named: name) { return .storageType(dtype) }
      if let dtype = TorchDType.dtype(named: name) { return .dtype(dtype) }
      return nil
    default: return nil
    }
  }
}

/// A mutable list, shared between the stack and the memo as Python shares it.
final class PickleList {
  var items: [PickleValue] = []
}

/// A dict (ordered as `OrderedDict` and Python dicts are) with string or integer keys.
final class PickleDict {
  enum Key: Hashable {
    case string(String)
    case int(Int)
    var text: String {
      switch self {
      case .string(let s): return s
      case .int(let i): return String(i)
      }
    }
  }
  var keys: [Key] = []
  var values: [PickleValue] = []
  var index: [Key: Int] = [:]

  func set(_ key: Key, _ value: PickleValue) {
    if let position = index[key] {
      values[position] = value
    } else {
      index[key] = keys.count
      keys.append(key)
      values.append(value)
    }
  }

  subscript(_ key: String) -> PickleValue? { index[.string(key)].map { values[$0] } }
}

/// The values the interpreter builds. Tuples are immutable and built from their items, so their
/// depth is known and bounded; lists and dicts are classes torn down iteratively at the end.
indirect enum PickleValue {
  case none
  case bool(Bool)
  case int(Int)
  /// An integer wider than 64 bits (kept as a placeholder: a state dict never needs one).
  case bigInt
  case float(Double)
  case string(String)
  case bytes([UInt8])
  case tuple([PickleValue], depth: Int)
  case list(PickleList)
  case dict(PickleDict)
  case global(PickleGlobal, String)
  case storage(StorageReference)
  case tensor(TensorReference)

  var typeName: String {
    switch self {
    case .none: return "None"
    case .bool: return "bool"
    case .int, .bigInt: return "int"
    case .float: return "float"
    case .string: return "str"
    case .bytes: return "bytes"
    case .tuple: return "tuple"
    case .list: return "list"
    case .dict: return "dict"
    case .global(_, let name): return name
    case .storage: return "storage"
    case .tensor: return "tensor"
    }
  }

  var depth: Int {
    if case .tuple(_, let depth) = self { return depth }
    return 1
  }
}

/// A restricted pickle interpreter: the protocol 2–5 opcodes `torch.save` emits, the allow-listed
/// globals of `PickleGlobal`, persistent ids resolved to storage references. It never imports,
/// calls or instantiates anything: allowed "calls" are interpreted here (an OrderedDict becomes a
/// dict, `_rebuild_tensor_v2` a `TensorReference`). Bounded in stack, memo, marks and nesting.
struct PickleMachine {
  /// Limits (each far beyond what a real SDXL checkpoint needs: about 10,000 memo entries).
  static let maximumStack = 1 << 21
  static let maximumMemo = 1 << 21
  static let maximumMarks = 1_000
  static let maximumDepth = 100
  static let maximumRank = 64

  let file: String
  /// Storages by key, so shared storages are one reference.
  private(set) var storages: [String: StorageReference] = [:]
  /// Whether persistent ids may carry view metadata (legacy files).
  let legacy: Bool

  private var stack: [PickleValue] = []
  private var marks: [Int] = []
  private var memo: [Int: PickleValue] = [:]
  private var containers: [AnyObject] = []

  init(file: String, legacy: Bool = false) {
    self.file = file
    self.legacy = legacy
  }

  /// Runs the pickle in `bytes` from `start` to its STOP; returns the value and the offset after STOP.
  mutating func run(_ bytes: UnsafeRawBufferPointer, from start: Int = 0) throws -> (PickleValue, Int) {
    stack.removeAll()
    marks.removeAll()
    memo.removeAll()
    var position = start
    let end = bytes.count
    let file = self.file

    func fail(_ reason: String, at offset: Int? = nil) -> TorchImportError {
      .invalidPickle(file: file, offset: offset ?? position, reason: reason)
    }
    func take(_ count: Int) throws -> UnsafeRawBufferPointer {
      guard count >= 0, count <= end - position else { throw fail("\(count) bytes wanted, \(end - position) left") }
      defer { position += count }
      return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }
    func length(_ width: Int) throws -> Int {
      let raw = try take(width)
      var value: UInt64 = 0
      for index in (0..<width).reversed() { value = value << 8 | UInt64(raw[index]) }
      guard value <= UInt64(end - position) else { throw fail("a length of \(value) runs past the end of the pickle") }
      return Int(value)
    }
    func line() throws -> String {
      guard let newline = bytes[position..<end].firstIndex(of: 0x0A) else { throw fail("unterminated GLOBAL") }
      let text = String(decoding: bytes[position..<newline], as: UTF8.self)
      position = newline + 1
      return text
    }

    while true {
      guard position < end else { throw fail("the pickle ends without STOP") }
      let opcodeOffset = position
      let opcode = bytes[position]
      position += 1
      switch opcode {
      case 0x80:  // PROTO
        let version = try take(1)[0]
        guard version <= 5 else { throw fail("protocol \(version)") }
      case 0x95:  // FRAME: a length hint only
        _ = try take(8)
      case 0x2E:  // STOP
        let value = try pop()
        return (value, position)
      case 0x28:  // MARK
        guard marks.count < Self.maximumMarks else {
          throw TorchImportError.limitExceeded(
            file: file, reason: "more than \(Self.maximumMarks) nested MARKs (deep nesting)")
        }
        marks.append(stack.count)
      case 0x30:  // POP
        _ = try pop()
      case 0x31:  // POP_MARK
        _ = try popMark()
      case 0x32:  // DUP
        try push(try top())
      case 0x4E: try push(.none)  // NONE
      case 0x88: try push(.bool(true))  // NEWTRUE
      case 0x89: try push(.bool(false))  // NEWFALSE
      case 0x4A:  // BININT
        try push(.int(Int(Int32(bitPattern: try take(4).u32(0)))))
      case 0x4B:  // BININT1
        try push(.int(Int(try take(1)[0])))
      case 0x4D:  // BININT2
        try push(.int(Int(try take(2).u16(0))))
      case 0x8A, 0x8B:  // LONG1, LONG4
        let raw = try take(try length(opcode == 0x8A ? 1 : 4))
        if raw.isEmpty {
          try push(.int(0))
        } else if raw.count <= 8 {
          var value: UInt64 = raw[raw.count - 1] & 0x80 != 0 ? UInt64.max : 0
          for index in (0..<raw.count).reversed() { value = value << 8 | UInt64(raw[index]) }
          try push(.int(Int(bitPattern: UInt(value))))
        } else {
          try push(.bigInt)
        }
      case 0x47:  // BINFLOAT (big-endian)
        let raw = try take(8)
        try push(.float(Double(bitPattern: UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)))))
      case 0x58, 0x8C, 0x8D:  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
        let raw = try take(try length(opcode == 0x58 ? 4 : opcode == 0x8C ? 1 : 8))
        guard let text = String(validating: raw, as: UTF8.self) else {
          throw fail("a string that is not UTF-8", at: opcodeOffset)
        }
        try push(.string(text))
      case 0x54, 0x55:  // BINSTRING, SHORT_BINSTRING (Python 2 str: bytes, read as Latin-1)
        let raw = try take(try length(opcode == 0x54 ? 4 : 1))
        try push(.string(String(raw.map { Character(Unicode.Scalar($0)) })))
      case 0x42, 0x43, 0x8E, 0x96:  // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
        let raw = try take(try length(opcode == 0x42 ? 4 : opcode == 0x43 ? 1 : 8))
        try push(.bytes(Array(raw)))
      case 0x29: try push(.tuple([], depth: 1))  // EMPTY_TUPLE
      case 0x74:  // TUPLE
        try push(try tuple(try popMark()))
      case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
        let count = Int(opcode - 0x84)
        guard stack.count - count >= (marks.last ?? 0) else { throw fail("TUPLE\(count) on a short stack") }
        let items = Array(stack.suffix(count))
        stack.removeLast(count)
        try push(try tuple(items))
      case 0x5D:  // EMPTY_LIST
        try push(.list(newList()))
      case 0x6C:  // LIST
        let list = newList()
        list.items = try popMark()
        try push(.list(list))
      case 0x61:  // APPEND
        let value = try pop()
        guard case .list(let list) = try top() else { throw fail("APPEND to a \(try top().typeName)") }
        list.items.append(value)
      case 0x65:  // APPENDS
        let values = try popMark()
        guard case .list(let list) = try top() else { throw fail("APPENDS to a \(try top().typeName)") }
        list.items.append(contentsOf: values)
      case 0x7D:  // EMPTY_DICT
        try push(.dict(newDict()))
      case 0x64:  // DICT
        let dict = newDict()
        try fill(dict, try popMark())
        try push(.dict(dict))
      case 0x73:  // SETITEM
        let value = try pop(), key = try pop()
        guard case .dict(let dict) = try top() else { throw fail("SETITEM on a \(try top().typeName)") }
        try fill(dict, [key, value])
      case 0x75:  // SETITEMS
        let items = try popMark()
        guard case .dict(let dict) = try top() else { throw fail("SETITEMS on a \(try top().typeName)") }
        try fill(dict, items)
      case 0x71: try put(Int(try take(1)[0]))  // BINPUT
      case 0x72: try put(Int(try take(4).u32(0)))  // LONG_BINPUT
      case 0x94: try put(memo.count)  // MEMOIZE
      case 0x68, 0x6A:  // BINGET, LONG_BINGET
        let key = opcode == 0x68 ? Int(try take(1)[0]) : Int(try take(4).u32(0))
        guard let value = memo[key] else { throw fail("memo entry \(key) was never stored") }
        try push(value)
      case 0x63:  // GLOBAL
        let module = try line(), name = try line()
        try push(try global(module: module, name: name))
      case 0x93:  // STACK_GLOBAL
        let name = try pop(), module = try pop()
        guard case .string(let moduleText) = module, case .string(let nameText) = name else {
          throw fail("STACK_GLOBAL of a \(module.typeName) and a \(name.typeName)")
        }
        try push(try global(module: moduleText, name: nameText))
      case 0x52:  // REDUCE
        let arguments = try pop(), callable = try pop()
        guard case .global(let function, let name) = callable, case .tuple(let items, _) = arguments else {
          throw fail("REDUCE of a \(callable.typeName) with a \(arguments.typeName)")
        }
        try push(try call(function, name: name, items))
      case 0x51:  // BINPERSID
        try push(try persistentLoad(try pop()))
      case 0x62:  // BUILD: state set on an OrderedDict (`_metadata`) or a parameter; not needed, dropped
        let state = try pop()
        switch (try top(), state) {
        case (.dict, .dict), (.dict, .none), (.dict, .tuple), (.tensor, _): break
        default: throw fail("BUILD on a \(try top().typeName)")
        }
      case 0x69:  // INST names its class inline: refuse it by name
        let module = try line(), name = try line()
        throw TorchImportError.refusedGlobal(file: file, module: module, name: name)
      case 0x6F, 0x81, 0x92:  // OBJ, NEWOBJ, NEWOBJ_EX: instantiate a class (every allowed global is a function)
        throw TorchImportError.refusedOpcode(file: file, opcode: Self.opcodeName(opcode), offset: opcodeOffset)
      default:
        throw TorchImportError.refusedOpcode(file: file, opcode: Self.opcodeName(opcode), offset: opcodeOffset)
      }
    }
  }

  /// Breaks every list and dict apart iteratively, so nothing deep is freed recursively and cycles
  /// (a list appended to itself) do not leak. Call after the result has been read.
  mutating func tearDown() {
    stack.removeAll()
    memo.removeAll()
    for container in containers {
      if let list = container as? PickleList { list.items.removeAll() }
      if let dict = container as? PickleDict {
        dict.values.removeAll()
        dict.keys.removeAll()
        dict.index.removeAll()
      }
    }
    containers.removeAll()
  }

  // MARK: - Stack

  private mutating func push(_ value: PickleValue) throws {
    guard stack.count < Self.maximumStack else {
      throw TorchImportError.limitExceeded(file: file, reason: "the pickle stack passed \(Self.maximumStack) items")
    }
    stack.append(value)
  }

  private mutating func pop() throws -> PickleValue {
    guard stack.count > (marks.last ?? 0), let value = stack.popLast() else {
      throw TorchImportError.invalidPickle(file: file, offset: -1, reason: "pop from an empty stack")
    }
    return value
  }

  private func top() throws -> PickleValue {
    guard stack.count > (marks.last ?? 0), let value = stack.last else {
      throw TorchImportError.invalidPickle(file: file, offset: -1, reason: "the stack is empty")
    }
    return value
  }

  private mutating func popMark() throws -> [PickleValue] {
    guard let mark = marks.popLast() else {
      throw TorchImportError.invalidPickle(file: file, offset: -1, reason: "no MARK to pop to")
    }
    let items = Array(stack[mark...])
    stack.removeSubrange(mark...)
    return items
  }

  private mutating func put(_ key: Int) throws {
    guard memo.count < Self.maximumMemo || memo[key] != nil else {
      throw TorchImportError.limitExceeded(file: file, reason: "more than \(Self.maximumMemo) memo entries")
    }
    memo[key] = try top()
  }

  private func tuple(_ items: [PickleValue]) throws -> PickleValue {
    let depth = 1 + (items.map(\.depth).max() ?? 0)
    guard depth <= Self.maximumDepth else {
      throw TorchImportError.limitExceeded(file: file, reason: "tuples nested more than \(Self.maximumDepth) deep")
    }
    return .tuple(items, depth: depth)
  }

  private mutating func newList() -> PickleList {
    let list = PickleList()
    containers.append(list)
    return list
  }

  private mutating func newDict() -> PickleDict {
    let dict = PickleDict()
    containers.append(dict)
    return dict
  }

  private func fill(_ dict: PickleDict, _ items: [PickleValue]) throws {
    guard items.count % 2 == 0 else {
      throw TorchImportError.invalidPickle(file: file, offset: -1, reason: "an odd number of dict items")
    }
    for pair in stride(from: 0, to: items.count, by: 2) {
      let key: PickleDict.Key
      switch items[pair] {
      case .string(let text): key = .string(text)
      case .int(let number): key = .int(number)
      default:
        throw TorchImportError.notAStateDict(
          file: file, reason: "a dict key of type \(items[pair].typeName) (state dicts use string keys)")
      }
      dict.set(key, items[pair + 1])
    }
  }

  // MARK: - Globals and calls

  private func global(module: String, name: String) throws -> PickleValue {
    guard let resolved = PickleGlobal.resolve(module: module, name: name) else {
      throw TorchImportError.refusedGlobal(file: file, module: module, name: name)
    }
    return .global(resolved, "\(module).\(name)")
  }

  private mutating func call(_ function: PickleGlobal, name: String, _ arguments: [PickleValue]) throws -> PickleValue {
    func bad() -> TorchImportError {
      .invalidPickle(
        file: file, offset: -1, reason: "\(name) called with (\(arguments.map(\.typeName).joined(separator: ", ")))")
    }
    switch function {
    case .orderedDict:
      guard arguments.isEmpty else { throw bad() }
      return .dict(newDict())
    case .torchSize:
      guard arguments.count == 1, case .tuple(let items, _) = arguments[0] else { throw bad() }
      return try tuple(items)
    case .codecsEncode:
      // Protocol 2 pickles bytes as _codecs.encode(text, 'latin1').
      guard arguments.count == 2, case .string(let text) = arguments[0], case .string(let encoding) = arguments[1],
        ["latin1", "latin-1"].contains(encoding.lowercased())
      else { throw bad() }
      var bytes: [UInt8] = []
      for scalar in text.unicodeScalars {
        guard scalar.value < 256 else { throw bad() }
        bytes.append(UInt8(scalar.value))
      }
      return .bytes(bytes)
    case .rebuildParameter, .rebuildParameterWithState:
      guard arguments.count >= 3, case .tensor = arguments[0] else { throw bad() }
      return arguments[0]
    case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3:
      // (storage, offset, size, stride[, requires_grad, backward_hooks[, dtype][, metadata]])
      let minimum = function == .rebuildTensor ? 4 : function == .rebuildTensorV2 ? 6 : 7
      guard arguments.count >= minimum, arguments.count <= minimum + 1, case .storage(let storage) = arguments[0],
        case .int(let offset) = arguments[1], offset >= 0
      else { throw bad() }
      let shape = try dimensions(arguments[2], name)
      let stride = try dimensions(arguments[3], name)
      guard shape.count == stride.count else { throw bad() }
      var dtype = storage.dtype
      if function == .rebuildTensorV3 {
        guard case .global(.dtype(let declared), _) = arguments[6] else { throw bad() }
        if let typed = storage.dtype, typed != declared { throw bad() }
        dtype = declared
      }
      guard let dtype else {
        throw TorchImportError.invalidPickle(
          file: file, offset: -1, reason: "an untyped storage rebuilt without a dtype")
      }
      return .tensor(TensorReference(storage: storage, dtype: dtype, offset: offset, shape: shape, stride: stride))
    case .storageType, .dtype:
      throw TorchImportError.invalidPickle(
        file: file, offset: -1, reason: "\(name) is called; state dicts never construct it directly")
    }
  }

  private func dimensions(_ value: PickleValue, _ name: String) throws -> [Int] {
    guard case .tuple(let items, _) = value, items.count <= Self.maximumRank else {
      throw TorchImportError.invalidPickle(
        file: file, offset: -1,
        reason: "\(name): a size or stride that is not a tuple of at most \(Self.maximumRank) integers")
    }
    return try items.map {
      guard case .int(let number) = $0, number >= 0 else {
        throw TorchImportError.invalidPickle(
          file: file, offset: -1, reason: "\(name): a size or stride that is negative or not an integer")
      }
      return number
    }
  }

  /// `('storage', StorageType, key, location, count)`; legacy files add a view-metadata field.
  private mutating func persistentLoad(_ id: PickleValue) throws -> PickleValue {
    guard case .tuple(let items, _) = id, items.count == 5 || (legacy && items.count == 6),
      case .string("storage") = items[0], case .global(.storageType(let dtype), _) = items[1],
      case .int(let count) = items[4], count >= 0
    else {
      throw TorchImportError.invalidPickle(
        file: file, offset: -1, reason: "a persistent id that is not a torch storage")
    }
    let key: String
    switch items[2] {
    case .string(let text): key = text
    case .int(let number): key = String(number)
    default:
      throw TorchImportError.invalidPickle(file: file, offset: -1, reason: "a storage key of type \(items[2].typeName)")
    }
    // Keys become entry names: digits, letters and underscores only.
    guard !key.isEmpty, key.count <= 64, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
    else {
      throw TorchImportError.invalidPickle(
        file: file, offset: -1, reason: "storage key '\(key.prefix(64))' is not a plain name")
    }
    if items.count == 6, case .none = items[5] {
    } else if items.count == 6 {
      throw TorchImportError.unsupportedLegacy(file: file, reason: "storage views (view metadata in the persistent id)")
    }
    let reference = StorageReference(key: key, dtype: dtype, count: count)
    if let existing = storages[key] {
      guard existing == reference else {
        throw TorchImportError.invalidPickle(
          file: file, offset: -1, reason: "storage '\(key)' is declared twice with different types or sizes")
      }
      return .storage(existing)
    }
    storages[key] = reference
    return .storage(reference)
  }

  static func opcodeName(_ opcode: UInt8) -> String {
    let names: [UInt8: String] = [
      0x69: "INST", 0x6F: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
      0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE", 0x50: "PERSID", 0x70: "PUT",
      0x67: "GET", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]
    return names[opcode] ?? String(format: "opcode 0x%02x", opcode)
  }
}
