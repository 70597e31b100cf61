import Adapters
import Extraction
import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

/// extract-lora on Fixtures/lora/extract (a float32 base/tuned pair with a layer of every kind),
/// against numpy's SVD of each difference (Scripts/fixtures/make_lora_fixtures.py).
@Suite struct ExtractionTests {
  let base = TestPaths.fixture("lora/extract/base.safetensors")
  let tuned = TestPaths.fixture("lora/extract/tuned.safetensors")

  func golden() throws -> SafeTensorsFile {
    try SafeTensorsFile(path: TestPaths.fixture("lora/extract/svd.safetensors"))
  }

  /// LAPACK's full SVD, compared with numpy's (the randomized path has its own test below).
  func request(rank: Int) -> ExtractionRequest {
    var request = ExtractionRequest(tuned: tuned, base: base)
    request.exact = true
    request.rank = rank
    request.textEncoders = .always
    request.dtype = .f32
    return request
  }

  @Test func fullRankReproducesTheDifferenceToFloat32Rounding() throws {
    let out = TestPaths.temporaryDirectory("extract-full") + "/full.safetensors"
    let report = try LoRAExtractor.extract(request(rank: 4096), output: out)
    #expect(report.layers.count == 9)  // te2 in_proj as q, k, v
    #expect(report.layers.allSatisfy { abs($0.retainedEnergy - 1) < 1e-9 })
    let adapter = try AdapterFile(path: out)
    #expect(adapter.unmappedKeys.isEmpty)
    let stack = try AdapterStack([AdapterApplication(adapter: adapter, unet: 1, textEncoders: 1)])
    let b = try WeightSource(path: base), t = try WeightSource(path: tuned)
    #expect(stack.targetKeys == Set(b.names))
    for key in b.names {
      var values = try b.decoder(key).decodeAll()
      let want = try t.decoder(key).decodeAll(), original = values
      try stack.apply(key: key, shape: b.shape(key)!, to: &values)
      let deltaScale = zip(want, original).map { abs($0 - $1) }.max() ?? 1
      let worst = zip(values, want).map { abs($0 - $1) }.max() ?? 0
      // float32 SVD and products: about k·ε of the difference (k ≤ 64 singular values, ε = 1.2e-7).
      #expect(worst <= 1e-5 * deltaScale, "\(key): \(worst) of \(deltaScale)")
    }
  }

  @Test func reducedRankKeepsNumpysEnergyAndSingularValues() throws {
    let svd = try golden()
    let out = TestPaths.temporaryDirectory("extract-rank4") + "/r4.safetensors"
    let report = try LoRAExtractor.extract(request(rank: 4), output: out)
    let lora = try SafeTensorsFile(path: out)
    for layer in report.layers {
      let energy = try TensorDecoder.resolve(file: svd, tensor: #require(svd.info(layer.module + ".energy_at_rank_4")))
        .decodeAll()[0]
      #expect(
        abs(layer.retainedEnergy - Double(energy)) < 1e-5, "\(layer.module): \(layer.retainedEnergy) vs \(energy)")
      #expect(layer.rank == 4)
      // lora_up = U·S with orthonormal U: its column norms are the singular values.
      let sv = try TensorDecoder.resolve(file: svd, tensor: #require(svd.info(layer.module + ".singular_values")))
        .decodeAll()
      let up = try TensorDecoder.resolve(file: lora, tensor: #require(lora.info(layer.module + ".lora_up.weight")))
        .decodeAll()
      let rows = up.count / 4
      for i in 0..<4 {
        let norm = (0..<rows).reduce(Float(0)) { $0 + up[$1 * 4 + i] * up[$1 * 4 + i] }.squareRoot()
        #expect(abs(norm - sv[i]) <= 1e-4 * sv[0], "\(layer.module) σ\(i): \(norm) vs \(sv[i])")
      }
    }
    #expect(lora.metadata["ss_network_module"] == "networks.lora")
    #expect(lora.metadata["ss_base_model_version"] == "sdxl_base_v1-0")
    #expect(lora.metadata["ss_network_dim"] == "4")
  }

  @Test func energyRuleChoosesNumpysRank() throws {
    let svd = try golden()
    var request = request(rank: 64)
    request.energy = 0.9
    let report = try LoRAExtractor.extract(
      request, output: TestPaths.temporaryDirectory("extract-energy") + "/e.safetensors")
    for layer in report.layers {
      let info = try #require(svd.info(layer.module + ".rank_for_energy_0.9"))
      let want = Int(svd.data(info).load(as: Int64.self))
      #expect(layer.rank == want, "\(layer.module)")
      #expect(layer.retainedEnergy >= 0.9)
    }
  }

  /// The randomized range finder used for large layers keeps the exact SVD's leading values and
  /// energy on a matrix with a decaying spectrum (rank-12 signal plus noise, 600×400).
  @Test func randomizedLeadingValuesMatchTheFullSVD() throws {
    var state: UInt64 = 42
    func uniform() -> Float {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      return Float(state >> 40) / Float(1 << 24) - 0.5
    }
    let m = 600, n = 400, r = 12
    let a = (0..<(m * r)).map { _ in uniform() }, b = (0..<(r * n)).map { _ in uniform() }
    var matrix = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
      for k in 0..<r { let x = a[i * r + k] * Float(r - k); for j in 0..<n { matrix[i * n + j] += x * b[k * n + j] } }
    }
    for i in matrix.indices { matrix[i] += 0.01 * uniform() }
    let exact = try #require(SVD(matrix, rows: m, columns: n))
    let fast = try #require(SVD.leading(matrix, rows: m, columns: n, rank: 8))
    for i in 0..<8 {
      #expect(abs(fast.singularValues[i] - exact.singularValues[i]) <= 1e-3 * exact.singularValues[0], "σ\(i)")
    }
    #expect(abs(fast.retainedEnergy(rank: 8) - exact.retainedEnergy(rank: 8)) < 1e-4)
    #expect(abs(fast.totalEnergy - exact.totalEnergy) / exact.totalEnergy < 1e-5)
  }

  @Test func identicalModelsAndBadRequestsAreRefused() throws {
    let out = TestPaths.temporaryDirectory("extract-bad") + "/x.safetensors"
    #expect(throws: ExtractionError.self) {
      try LoRAExtractor.extract(ExtractionRequest(tuned: base, base: base), output: out)
    }
    var bad = request(rank: 0)
    #expect(throws: ExtractionError.self) { try LoRAExtractor.extract(bad, output: out) }
    bad = request(rank: 4)
    bad.energy = 1.5
    #expect(throws: ExtractionError.self) { try LoRAExtractor.extract(bad, output: out) }
    #expect(!FileManager.default.fileExists(atPath: out))
  }
}

/// The per-layer rank rules on known spectra.
@Suite struct RankRuleTests {
  let s: [Float] = [10, 5, 2, 1, 0.5]  // energies 100, 25, 4, 1, 0.25 of 130.25

  @Test func fixedRankIsTheCap() {
    #expect(LoRAExtractor.chooseRank(s, cap: 3, energy: nil, ratio: nil) == 3)
    #expect(LoRAExtractor.chooseRank(s, cap: 1, energy: 0.99, ratio: nil) == 1)
  }

  @Test func energyKeepsTheSmallestRankReachingTheFraction() {
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: 0.7, ratio: nil) == 1)  // 100/130.25 = 0.768
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: 0.9, ratio: nil) == 2)  // 125/130.25 = 0.960
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: 0.99, ratio: nil) == 3)  // 129/130.25 = 0.9904
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: 0.995, ratio: nil) == 4)  // 130/130.25 = 0.998
    #expect(LoRAExtractor.chooseRank(s, cap: 2, energy: 0.99, ratio: nil) == 2)  // capped
    // Against a larger total (a truncated decomposition): the kept values reach less of it.
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: 0.9, ratio: nil, total: 200) == 5)
  }

  @Test func ratioKeepsValuesAboveTheLargestOverR() {
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: nil, ratio: 4) == 2)  // ≥ 2.5
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: nil, ratio: 10) == 4)  // ≥ 1
    #expect(LoRAExtractor.chooseRank(s, cap: 5, energy: nil, ratio: 1) == 1)
  }
}
