import CBLAS
import Foundation
import SafeTensors

/// Dense Float32 helpers for adapter products (small ranks: the cost is out·in·rank per module).
enum DenseMath {
  /// C = A·B with A m×k and B k×n, row-major, through OpenBLAS `cblas_sgemm` (a full-size SDXL
  /// LoRA is about 2·rank·1.3 G multiply-adds).
  static func matmul(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int) -> [Float] {
    var c = [Float](repeating: 0, count: m * n)
    guard m > 0, n > 0, k > 0 else { return c }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c,
      Int32(n))
    return c
  }

  /// The transpose of an m×n matrix.
  static func transpose(_ a: [Float], m: Int, n: Int) -> [Float] {
    var t = [Float](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n { t[j * m + i] = a[i * n + j] } }
    return t
  }

  /// LyCORIS's Tucker rebuild: R[p, q, s] = Σᵢⱼ T[i, j, s]·B[j, q]·A[i, p] with T r1×r2×hw,
  /// A r1×P, B r2×Q; R is P×Q×hw (hw: the kernel's spatial size).
  static func tucker(_ t: [Float], r1: Int, r2: Int, hw: Int, a: [Float], p: Int, b: [Float], q: Int) -> [Float] {
    // TB[i, q, s] = Σⱼ T[i, j, s]·B[j, q]
    var tb = [Float](repeating: 0, count: r1 * q * hw)
    for i in 0..<r1 {
      for j in 0..<r2 {
        for column in 0..<q {
          let factor = b[j * q + column]
          if factor == 0 { continue }
          let to = (i * q + column) * hw, from = (i * r2 + j) * hw
          for s in 0..<hw { tb[to + s] += t[from + s] * factor }
        }
      }
    }
    return matmul(transpose(a, m: r1, n: p), tb, m: p, k: r1, n: q * hw)
  }
}

extension AdapterFile {
  /// s·ΔW of `module` (alpha/rank or `.scale` applied, the user's strength not), laid out like a
  /// target weight of `shape` — for a fused q/k/v weight, the shape of the module's row block.
  /// Throws `shapeMismatch` when the factors do not make a ΔW of that shape.
  public func scaledDelta(_ module: AdapterModule, shape: [Int]) throws -> [Float] {
    guard let rows = shape.first, rows > 0 else {
      throw AdapterError.shapeMismatch(
        file: path, module: module.name, target: module.target.key, targetShape: shape,
        reason: "the target is not a weight matrix")
    }
    let count = shape.reduce(1, *)
    let columns = count / rows
    func mismatch(_ reason: String) -> AdapterError {
      .shapeMismatch(file: path, module: module.name, target: module.target.key, targetShape: shape, reason: reason)
    }
    func elements(_ role: AdapterRole) -> Int { self.shape(module, role)?.reduce(1, *) ?? 0 }
    var delta: [Float]
    switch module.algorithm {
    case .lora:
      let down = self.shape(module, .down) ?? [], r = down[0]
      let outRows = elements(.up) / r
      guard outRows == rows else { throw mismatch("lora_up has \(outRows) output rows") }
      let up = try values(module, .up)
      if let mid = self.shape(module, .mid) {
        let inputs = elements(.down) / r, hw = mid[2] * mid[3]
        guard inputs * hw == columns else {
          throw mismatch("lora_down × lora_mid give \(inputs)×\(hw) columns per row, not \(columns)")
        }
        let um = DenseMath.matmul(up, try values(module, .mid), m: rows, k: r, n: r * hw)  // [o, n, s]
        let d = try values(module, .down)  // [n, i]
        delta = [Float](repeating: 0, count: count)
        for o in 0..<rows {
          for n in 0..<r {
            for i in 0..<inputs {
              let factor = d[n * inputs + i]
              let to = (o * inputs + i) * hw, from = (o * r + n) * hw
              for s in 0..<hw { delta[to + s] += um[from + s] * factor }
            }
          }
        }
      } else {
        guard elements(.down) / r == columns else {
          throw mismatch("lora_down has \(elements(.down) / r) inputs per rank, the weight \(columns)")
        }
        delta = DenseMath.matmul(up, try values(module, .down), m: rows, k: r, n: columns)
      }
    case .loha:
      if let t1 = self.shape(module, .hadaT1), let t2 = self.shape(module, .hadaT2) {
        var products: [[Float]] = []
        for (t, ts, a, b) in [
          (AdapterRole.hadaT1, t1, AdapterRole.hadaW1a, AdapterRole.hadaW1b), (.hadaT2, t2, .hadaW2a, .hadaW2b),
        ] {
          let sa = self.shape(module, a)!, sb = self.shape(module, b)!
          let hw = ts.dropFirst(2).reduce(1, *)
          guard sa[1] == rows, sb[1] * hw == columns else {
            throw mismatch("LoHa Tucker factors give [\(sa[1]), \(sb[1]), \(hw)]")
          }
          products.append(
            DenseMath.tucker(
              try values(module, t), r1: ts[0], r2: ts[1], hw: hw, a: try values(module, a), p: sa[1],
              b: try values(module, b), q: sb[1]))
        }
        delta = zip(products[0], products[1]).map { $0 * $1 }
      } else {
        var products: [[Float]] = []
        for (a, b) in [(AdapterRole.hadaW1a, AdapterRole.hadaW1b), (.hadaW2a, .hadaW2b)] {
          let sa = self.shape(module, a)!, r = sa[1]
          guard sa[0] == rows, elements(b) / r == columns else {
            throw mismatch("\(a.rawValue)·\(b.rawValue) is [\(sa[0]), \(elements(b) / r)]")
          }
          products.append(DenseMath.matmul(try values(module, a), try values(module, b), m: rows, k: r, n: columns))
        }
        delta = zip(products[0], products[1]).map { $0 * $1 }
      }
    case .lokr:
      // Sizes first (W1 [a, c], W2 [b, d·hw]), so hostile factors are refused before any product.
      let w1a = self.shape(module, .lokrW1a) ?? [], w1b = self.shape(module, .lokrW1b) ?? []
      let w2a = self.shape(module, .lokrW2a) ?? [], w2b = self.shape(module, .lokrW2b) ?? []
      let a: Int, c: Int, b: Int, d2: Int
      if let s = self.shape(module, .lokrW1) { (a, c) = (s[0], s[1]) } else { (a, c) = (w1a[0], w1b[1]) }
      if let s = self.shape(module, .lokrW2) {
        (b, d2) = (s[0], s.dropFirst().reduce(1, *))
      } else if let t = self.shape(module, .lokrT2) {
        (b, d2) = (w2a[1], w2b[1] * t.dropFirst(2).reduce(1, *))
      } else {
        (b, d2) = (w2a[0], w2b.dropFirst().reduce(1, *))
      }
      guard a * b == rows, c * d2 == columns else {
        throw mismatch("W1 [\(a), \(c)] ⊗ W2 [\(b), \(d2)] is [\(a * b), \(c * d2)]")
      }
      let w1: [Float]
      if self.shape(module, .lokrW1) != nil {
        w1 = try values(module, .lokrW1)
      } else {
        w1 = DenseMath.matmul(try values(module, .lokrW1a), try values(module, .lokrW1b), m: a, k: w1a[1], n: c)
      }
      let w2: [Float]
      if self.shape(module, .lokrW2) != nil {
        w2 = try values(module, .lokrW2)
      } else if let t = self.shape(module, .lokrT2) {
        let hw = t.dropFirst(2).reduce(1, *)
        w2 = DenseMath.tucker(
          try values(module, .lokrT2), r1: t[0], r2: t[1], hw: hw, a: try values(module, .lokrW2a), p: b,
          b: try values(module, .lokrW2b), q: w2b[1])
      } else {
        w2 = DenseMath.matmul(try values(module, .lokrW2a), try values(module, .lokrW2b), m: b, k: w2a[1], n: d2)
      }
      delta = [Float](repeating: 0, count: count)
      for i in 0..<a {
        for p in 0..<c {
          let factor = w1[i * c + p]
          for j in 0..<b {
            let to = (i * b + j) * columns + p * d2, from = j * d2
            for q in 0..<d2 { delta[to + q] = factor * w2[from + q] }
          }
        }
      }
    case .full:
      let role: AdapterRole? =
        module.tensors[.diff] != nil ? .diff : module.tensors[.normWeight] != nil ? .normWeight : nil
      guard let role else { return [Float](repeating: 0, count: count) }  // only a bias delta
      guard elements(role) == count else { throw mismatch("\(role.rawValue) has \(elements(role)) values") }
      delta = try values(module, role)
    }
    let s = module.scale
    if s != 1 { for i in delta.indices { delta[i] *= s } }
    return delta
  }

  /// Adds `strength`·s·ΔW of `module` to `weight` (the target, or its row block, of `shape`);
  /// with DoRA, rescales it to the stored magnitude: V = W + s·ΔW, W′ = W + m·(V·d/‖V‖ − W),
  /// the norm taken per output row for a [out, 1, …] `dora_scale` and per input column for a
  /// [1, in, …] one (ComfyUI's and A1111's strength rule; at m = 1 every tool agrees).
  public func apply(
    _ module: AdapterModule, to weight: UnsafeMutableBufferPointer<Float>, shape: [Int], strength: Float
  ) throws {
    // Plain LoRA: one product accumulated into the weight, W += (m·s)·U·D (no ΔW buffer).
    if module.algorithm == .lora, module.tensors[.mid] == nil, !module.hasDoRA, let rows = shape.first, rows > 0,
      let down = self.shape(module, .down)
    {
      let r = down[0], columns = weight.count / rows
      let outRows = (self.shape(module, .up)?.reduce(1, *) ?? 0) / r
      guard outRows == rows, down.reduce(1, *) / r == columns else { _ = try scaledDelta(module, shape: shape); return }
      let up = try values(module, .up), d = try values(module, .down)
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(columns), Int32(r), strength * module.scale, up,
        Int32(r),
        d, Int32(columns), 1, weight.baseAddress, Int32(columns))
      return
    }
    let delta = try scaledDelta(module, shape: shape)
    guard module.hasDoRA else {
      for i in 0..<weight.count { weight[i] += strength * delta[i] }
      return
    }
    let magnitude = try values(module, .doraScale)
    let rows = shape[0], columns = weight.count / rows
    let inputs = shape.count > 1 ? shape[1] : columns, spatial = columns / max(inputs, 1)
    var v = [Float](repeating: 0, count: weight.count)
    for i in 0..<weight.count { v[i] = weight[i] + delta[i] }
    var norms: [Double]
    let onOutput: Bool
    if magnitude.count == rows && (self.shape(module, .doraScale)?.first ?? 1) == rows {
      onOutput = true
      norms = [Double](repeating: 0, count: rows)
      for o in 0..<rows { for j in 0..<columns { let x = Double(v[o * columns + j]); norms[o] += x * x } }
    } else if magnitude.count == inputs {
      onOutput = false
      norms = [Double](repeating: 0, count: inputs)
      for o in 0..<rows { for j in 0..<columns { let x = Double(v[o * columns + j]); norms[j / spatial] += x * x } }
    } else {
      throw AdapterError.shapeMismatch(
        file: path, module: module.name, target: module.target.key, targetShape: shape,
        reason: "dora_scale has \(magnitude.count) values, neither \(rows) outputs nor \(inputs) inputs")
    }
    let factors = (0..<norms.count).map { Float(Double(magnitude[$0]) / norms[$0].squareRoot()) }
    for o in 0..<rows {
      for j in 0..<columns {
        let index = o * columns + j
        let factor = onOutput ? factors[o] : factors[j / spatial]
        weight[index] += strength * (v[index] * factor - weight[index])
      }
    }
  }

  /// Adds `strength`·Δbias (`diff_b`, `b_norm`) of `module` to `bias`.
  public func applyBias(_ module: AdapterModule, to bias: UnsafeMutableBufferPointer<Float>, strength: Float) throws {
    let role: AdapterRole = module.tensors[.diffBias] != nil ? .diffBias : .normBias
    let delta = try values(module, role)
    guard delta.count == bias.count else {
      throw AdapterError.shapeMismatch(
        file: path, module: module.name, target: module.target.biasKey ?? module.target.key, targetShape: [bias.count],
        reason: "\(role.rawValue) has \(delta.count) values")
    }
    for i in 0..<bias.count { bias[i] += strength * delta[i] }
  }
}
