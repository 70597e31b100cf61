import Checkpoint
import Foundation
import SafeTensors
import Weights

/// An adapter's algorithm (LyCORIS names).
public enum AdapterAlgorithm: String, Sendable, Codable, CaseIterable {
  /// Low-rank U·D (LoRA; on convolutions LoCon), optionally with a Tucker core (`lora_mid`).
  case lora
  /// LoHa: (W1a·W1b) ⊙ (W2a·W2b).
  case loha
  /// LoKr: W1 ⊗ W2.
  case lokr
  /// A whole ΔW (`diff`, `w_norm`).
  case full
}

/// One module of an adapter: the tensors that together change one SDXL weight.
public struct AdapterModule: Sendable {
  /// The module name as the file spells it.
  public let name: String
  public let target: AdapterTarget
  public let algorithm: AdapterAlgorithm
  /// Rows of the down factor (`lora_down`, `hada_w1_b`, `lokr_w{2,1}_b`); nil for full deltas and
  /// undecomposed LoKr.
  public let rank: Int?
  /// The stored alpha (nil: none stored).
  public let alpha: Float?
  /// A stored `.scale`, which replaces alpha/rank (A1111, sd.cpp).
  public let storedScale: Float?
  /// Whether the factors are convolution-shaped (LoCon).
  public let isConvolution: Bool
  /// Whether the module carries DoRA's magnitude (`dora_scale`, PEFT `lora_magnitude_vector`).
  public let hasDoRA: Bool
  /// Whether it also changes the bias (`diff_b`, `b_norm`).
  public let hasBias: Bool
  let tensors: [AdapterRole: TensorInfo]

  /// The factor alpha/rank multiplies ΔW by: a stored `.scale`, else alpha/rank, else 1.
  public var scale: Float {
    if let storedScale { return storedScale }
    guard let alpha, let rank else { return 1 }
    return alpha / Float(rank)
  }
}

/// How a file names its modules.
public enum AdapterNaming: String, Sendable, Codable {
  case kohya = "kohya (lora_unet_/lora_te1_/lora_te2_)"
  case peft = "diffusers/PEFT (unet./text_encoder./text_encoder_2.)"
  case lycorisPrefix = "SimpleTuner LyCORIS (lycoris_)"
  case comfy = "ComfyUI (diffusion_model./text_encoders.)"
  case mixed = "mixed"

  static func of(_ module: String) -> AdapterNaming {
    if module.hasPrefix("lora_unet_") || module.hasPrefix("lora_te") { return .kohya }
    if module.hasPrefix("lycoris_") { return .lycorisPrefix }
    if module.hasPrefix("diffusion_model.") || module.hasPrefix("text_encoders.") { return .comfy }
    return .peft
  }
}

/// A LoRA/LyCORIS adapter file read for SDXL: its modules mapped onto canonical single-file
/// weights, every key that maps nowhere listed (never silently skipped), its metadata. The file
/// stays mapped; factors are decoded (fp16, bf16, fp32, …) when a ΔW is computed.
public final class AdapterFile: @unchecked Sendable {
  public let path: String
  public let file: SafeTensorsFile
  public let modules: [AdapterModule]
  /// Keys that belong to no module mapped onto SDXL, in file order.
  public let unmappedKeys: [String]
  public var metadata: [String: String] { file.metadata }

  /// The largest rank accepted: SDXL's widest layer is 10240; a header claiming more is hostile.
  public static let maximumRank = 1 << 16

  public init(path: String) throws {
    self.path = path
    do {
      file = try SafeTensorsFile(path: path)
    } catch let error as SafeTensorsError where error.isIOFailure {
      throw AdapterError.unreadable(file: path, reason: error.description)
    }
    (modules, unmappedKeys) = try Self.group(file: file, path: path)
    if modules.isEmpty && unmappedKeys.isEmpty { throw AdapterError.empty(file: path) }
  }

  /// Groups the keys by module, maps each module and checks its factors' shapes.
  static func group(file: SafeTensorsFile, path: String) throws -> ([AdapterModule], [String]) {
    var order: [String] = []
    var byModule: [String: [AdapterRole: TensorInfo]] = [:]
    var unmapped: [String] = []
    let peftAlpha = Self.peftAlpha(file.metadata)
    for tensor in file.tensors {
      guard let (module, role) = AdapterKeyMap.split(tensor.name), AdapterKeyMap.target(ofModule: module) != nil else {
        unmapped.append(tensor.name)
        continue
      }
      if byModule[module] == nil { order.append(module) }
      if byModule[module]?[role] != nil {
        throw AdapterError.malformed(file: path, module: module, reason: "two tensors for \(role.rawValue)")
      }
      byModule[module, default: [:]][role] = tensor
    }
    var modules: [AdapterModule] = []
    for name in order {
      guard let tensors = byModule[name], let target = AdapterKeyMap.target(ofModule: name) else { continue }
      if tensors.keys.allSatisfy({ [.alpha, .scale, .doraScale].contains($0) }) {
        // An alpha (or scale) without factors: nothing to apply, but not silently dropped either.
        unmapped += tensors.values.map(\.name)
        continue
      }
      modules.append(
        try makeModule(name: name, target: target, tensors: tensors, file: file, path: path, peftAlpha: peftAlpha))
    }
    return (modules, unmapped)
  }

  /// diffusers files carry no alpha tensors; `lora_adapter_metadata` (the PEFT LoraConfig of each
  /// component as JSON, keys `unet.lora_alpha`, `text_encoder.use_rslora`, … or unprefixed) may
  /// give `lora_alpha`, else alpha = rank. Returns the alpha for a module of rank `rank` under
  /// `component` (`unet`, `text_encoder`, `text_encoder_2`); rs-LoRA's α/√r is returned as the
  /// alpha that gives it under α/r.
  static func peftAlpha(_ metadata: [String: String]) -> (String, Int) -> Float? {
    guard let text = metadata["lora_adapter_metadata"], let data = text.data(using: .utf8),
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return { _, _ in nil } }
    return { component, rank in
      func value(_ key: String) -> Any? { object[component + "." + key] ?? object[key] }
      guard let alpha = (value("lora_alpha") as? NSNumber)?.doubleValue, alpha.isFinite else { return nil }
      let rs = (value("use_rslora") as? Bool) == true
      return Float(rs ? alpha * Double(rank).squareRoot() : alpha)
    }
  }

  static func scalar(_ info: TensorInfo?, file: SafeTensorsFile, path: String, module: String, what: String) throws
    -> Float?
  {
    guard let info else { return nil }
    guard info.elementCount == 1 else {
      throw AdapterError.malformed(
        file: path, module: module, reason: "\(what) has shape \(info.shape), one value expected")
    }
    let value: Float
    do {
      value = try TensorDecoder.resolve(file: file, tensor: info).decodeAll()[0]
    } catch {
      throw AdapterError.malformed(
        file: path, module: module, reason: "\(what) is not a float (\(info.dtype.rawValue))")
    }
    guard value.isFinite else {
      throw AdapterError.malformed(file: path, module: module, reason: "\(what) is \(value)")
    }
    return value
  }

  static func makeModule(
    name: String, target: AdapterTarget, tensors: [AdapterRole: TensorInfo], file: SafeTensorsFile, path: String,
    peftAlpha: (String, Int) -> Float?
  ) throws -> AdapterModule {
    func fail(_ reason: String) -> AdapterError { .malformed(file: path, module: name, reason: reason) }
    for (role, info) in tensors where role != .alpha && role != .scale {
      guard info.dtype.isFloatingPoint, FloatCodec.supported.contains(info.dtype) else {
        throw fail("\(role.rawValue) is \(info.dtype.rawValue), not a float type")
      }
      guard !info.shape.isEmpty, info.shape.allSatisfy({ $0 > 0 }) else {
        throw fail("\(role.rawValue) has shape \(info.shape)")
      }
    }
    var alpha = try scalar(tensors[.alpha], file: file, path: path, module: name, what: "alpha")
    let storedScale = try scalar(tensors[.scale], file: file, path: path, module: name, what: "scale")
    let roles = Set(tensors.keys)
    let algorithm: AdapterAlgorithm
    var rank: Int?
    var convolution = false
    func shape(_ role: AdapterRole) -> [Int] { tensors[role]?.shape ?? [] }
    func require(_ needed: [AdapterRole]) throws {
      let missing = needed.filter { tensors[$0] == nil }
      if !missing.isEmpty { throw fail("lacks \(missing.map(\.rawValue).joined(separator: ", "))") }
    }
    func checkRank(_ r: Int) throws {
      guard r > 0 else { throw fail("rank 0") }
      guard r <= maximumRank else { throw fail("rank \(r) is absurd (more than \(maximumRank))") }
    }
    if roles.contains(.down) || roles.contains(.up) {
      algorithm = .lora
      try require([.down, .up])
      let down = shape(.down), up = shape(.up)
      let r = down[0]
      try checkRank(r)
      guard up.count >= 2, up[1] == r, up.dropFirst(2).allSatisfy({ $0 == 1 }) else {
        throw fail("lora_up \(up) does not match lora_down \(down) (rank \(r))")
      }
      if let mid = tensors[.mid]?.shape {
        guard mid.count == 4, mid[0] == r, mid[1] == r, down.count == 4, down[2] == 1, down[3] == 1 else {
          throw fail("lora_mid \(mid) does not match lora_down \(down)")
        }
      }
      rank = r
      convolution = down.count == 4
      // PEFT/diffusers keys have no alpha tensor: the config's, else alpha = rank (scale 1).
      if alpha == nil, AdapterNaming.of(name) == .peft {
        alpha = peftAlpha(String(name.prefix { $0 != "." }), r)
      }
    } else if roles.contains(where: { $0.rawValue.hasPrefix("hada_") }) {
      algorithm = .loha
      try require([.hadaW1a, .hadaW1b, .hadaW2a, .hadaW2b])
      let tucker = tensors[.hadaT1] != nil || tensors[.hadaT2] != nil
      if tucker { try require([.hadaT1, .hadaT2]) }
      let r = shape(.hadaW1b)[0]
      try checkRank(r)
      try checkRank(shape(.hadaW2b)[0])
      for (a, b) in [(AdapterRole.hadaW1a, AdapterRole.hadaW1b), (.hadaW2a, .hadaW2b)] {
        let sa = shape(a), sb = shape(b)
        let ok = tucker ? sa.count == 2 && sb.count == 2 && sa[0] == sb[0] : sa.count == 2 && sa[1] == sb[0]
        guard ok else { throw fail("\(a.rawValue) \(sa) does not match \(b.rawValue) \(sb)") }
      }
      if tucker {
        for (t, a, b) in [
          (AdapterRole.hadaT1, AdapterRole.hadaW1a, AdapterRole.hadaW1b), (.hadaT2, .hadaW2a, .hadaW2b),
        ] {
          let st = shape(t)
          guard st.count >= 2, st[0] == shape(a)[0], st[1] == shape(b)[0] else {
            throw fail("\(t.rawValue) \(st) does not match \(a.rawValue) \(shape(a)) and \(b.rawValue) \(shape(b))")
          }
        }
      }
      rank = r
      convolution = tucker || shape(.hadaW1b).count > 2
    } else if roles.contains(where: { $0.rawValue.hasPrefix("lokr_") }) {
      algorithm = .lokr
      guard roles.contains(.lokrW1) || (roles.contains(.lokrW1a) && roles.contains(.lokrW1b)) else {
        throw fail("lacks lokr_w1 (or lokr_w1_a and lokr_w1_b)")
      }
      guard roles.contains(.lokrW2) || (roles.contains(.lokrW2a) && roles.contains(.lokrW2b)) else {
        throw fail("lacks lokr_w2 (or lokr_w2_a and lokr_w2_b)")
      }
      if !roles.contains(.lokrW1) {
        guard shape(.lokrW1a).count == 2, shape(.lokrW1b).count == 2, shape(.lokrW1a)[1] == shape(.lokrW1b)[0] else {
          throw fail("lokr_w1_a \(shape(.lokrW1a)) does not match lokr_w1_b \(shape(.lokrW1b))")
        }
        try checkRank(shape(.lokrW1b)[0])
      } else if shape(.lokrW1).count != 2 {
        throw fail("lokr_w1 \(shape(.lokrW1)) is not a matrix")
      }
      if !roles.contains(.lokrW2) {
        let a = shape(.lokrW2a), b = shape(.lokrW2b)
        if let t = tensors[.lokrT2]?.shape {
          guard t.count >= 2, a.count == 2, b.count == 2, t[0] == a[0], t[1] == b[0] else {
            throw fail("lokr_t2 \(t) does not match lokr_w2_a \(a) and lokr_w2_b \(b)")
          }
        } else {
          guard a.count == 2, b.count >= 2, a[1] == b[0] else {
            throw fail("lokr_w2_a \(a) does not match lokr_w2_b \(b)")
          }
        }
        try checkRank(b[0])
      }
      rank = roles.contains(.lokrW2b) ? shape(.lokrW2b)[0] : roles.contains(.lokrW1b) ? shape(.lokrW1b)[0] : nil
      // Neither factor decomposed: alpha is ignored (ComfyUI, A1111; LyCORIS forces alpha = dim).
      if rank == nil { alpha = nil }
      convolution = tensors[.lokrT2] != nil || (tensors[.lokrW2]?.shape.count ?? 2) > 2 || shape(.lokrW2b).count > 2
    } else if roles.contains(.diff) || roles.contains(.normWeight) || roles.contains(.diffBias)
      || roles.contains(.normBias)
    {
      algorithm = .full
      alpha = nil
    } else {
      throw fail("holds only \(roles.map(\.rawValue).sorted().joined(separator: ", "))")
    }
    if let dora = tensors[.doraScale] {
      guard algorithm != .full else { throw fail("dora_scale on a full ΔW") }
      guard dora.shape.filter({ $0 != 1 }).count <= 1 else { throw fail("dora_scale \(dora.shape) is not a vector") }
    }
    return AdapterModule(
      name: name, target: target, algorithm: algorithm, rank: rank, alpha: alpha, storedScale: storedScale,
      isConvolution: convolution, hasDoRA: tensors[.doraScale] != nil,
      hasBias: tensors[.diffBias] != nil || tensors[.normBias] != nil, tensors: tensors)
  }

  /// The naming of the file's modules (`mixed` when they disagree).
  public var naming: AdapterNaming {
    var all = Set(modules.map { AdapterNaming.of($0.name) })
    if all.isEmpty { all = Set(unmappedKeys.prefix(1).map { AdapterNaming.of(AdapterKeyMap.split($0)?.module ?? $0) }) }
    return all.count == 1 ? all.first! : all.isEmpty ? .kohya : .mixed
  }

  /// The decoded values of one of a module's tensors.
  func values(_ module: AdapterModule, _ role: AdapterRole) throws -> [Float] {
    try decoder(module, role).decodeAll()
  }

  /// The decoder of a factor (for decoding parts of it in place).
  func decoder(_ module: AdapterModule, _ role: AdapterRole) throws -> TensorDecoder {
    guard let info = module.tensors[role] else {
      throw AdapterError.malformed(file: path, module: module.name, reason: "lacks \(role.rawValue)")
    }
    do {
      return try TensorDecoder.resolve(file: file, tensor: info)
    } catch let error as CodecError {
      throw AdapterError.malformed(file: path, module: module.name, reason: error.description)
    }
  }

  func shape(_ module: AdapterModule, _ role: AdapterRole) -> [Int]? { module.tensors[role]?.shape }
}
