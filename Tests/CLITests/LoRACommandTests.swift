import Foundation
import SafeTensors
import TestSupport
import Testing
import Weights

/// `merge BASE --lora`, `sample --lora` and `info` on adapters, through the real binary.
@Suite struct LoRACommandTests {
  let eps = TestPaths.fixture("tiny-sdxl/tiny-sdxl-eps.safetensors")
  let vpred = TestPaths.fixture("tiny-sdxl/tiny-sdxl-vpred.safetensors")
  func lora(_ name: String) -> String { TestPaths.fixture("lora/\(name).safetensors") }

  @Test func bakeMatchesTheGoldenKeepsTheRestAndRecordsTheAdapters() throws {
    let out = TestPaths.temporaryDirectory("cli-lora-bake") + "/baked.safetensors"
    let run = try BinaryRun.run(["merge", vpred, "--lora", lora("kohya_sgm") + ":0.8", "-o", out, "--json"])
    #expect(run.status == 0, "\(run.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect(report["tensorsChanged"] as? Int == 10)  // 12 modules; te2 q, k, v share one in_proj weight
    let baked = try SafeTensorsFile(path: out)
    let base = try SafeTensorsFile(path: vpred)
    let expected = try SafeTensorsFile(path: TestPaths.fixture("lora/expected.safetensors"))
    var compared = 0
    for info in expected.tensors where info.name.hasPrefix("kohya_sgm/") {
      let key = String(info.name.dropFirst("kohya_sgm/".count))
      let want = try TensorDecoder.resolve(file: expected, tensor: info).decodeAll()
      let tensor = try #require(baked.info(key))
      #expect(tensor.dtype == .f16, "output dtype defaults to the base's")
      let got = try TensorDecoder.resolve(file: baked, tensor: tensor).decodeAll()
      // One fp16 rounding of the float32 result: within an fp16 step at the weight's scale.
      let scale = want.map { abs($0) }.max() ?? 1
      let worst = zip(got, want).map { abs($0 - $1) }.max() ?? 0
      #expect(worst <= scale / 1024, "\(key): \(worst)")
      compared += 1
    }
    #expect(compared == 10)
    // Untouched tensors are copied byte for byte; markers and the model's metadata are kept.
    for key in [
      "model.diffusion_model.out.2.weight", "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
      "v_pred", "ztsnr",
    ] {
      let a = try #require(base.info(key)), b = try #require(baked.info(key))
      #expect(a.dtype == b.dtype && a.shape == b.shape)
      #expect(Array(base.data(a)) == Array(baked.data(b)), "\(key)")
    }
    #expect(baked.metadata["modelspec.prediction_type"] == "v")
    let applied = try #require(baked.metadata["rouwei.lora.applied"])
    #expect(applied.contains("\"name\":\"kohya_sgm.safetensors\"") && applied.contains("\"strength\":0.8"))
    #expect(!applied.contains("/"), "no paths: \(applied)")
  }

  @Test func bakeIsTheSameWhateverTheThreadCount() throws {
    let directory = TestPaths.temporaryDirectory("cli-lora-threads")
    var files: [[UInt8]] = []
    for threads in ["1", "2", "3"] {
      let out = directory + "/t\(threads).safetensors"
      let run = try BinaryRun.run([
        "merge", eps, "--lora", lora("kohya_sgm") + ":0.8", "--lora", lora("peft"), "--lora", lora("loha") + ":0.5",
        "--threads", threads, "--no-hash-cache", "-o", out,
      ])
      #expect(run.status == 0, "\(run.stderr)")
      files.append(Array(try Data(contentsOf: URL(fileURLWithPath: out))))
    }
    #expect(files[0] == files[1] && files[1] == files[2], "a bake depends on --threads")
  }

  @Test func renderingWithLoraEqualsRenderingTheBakedFileBitForBit() throws {
    let directory = TestPaths.temporaryDirectory("cli-lora-render")
    let adapters = [
      "--lora", lora("kohya_sgm") + ":0.8", "--lora", lora("dora_out"), "--lora", lora("lokr") + ":0.6:0.3",
    ]
    let bake = try BinaryRun.run(["merge", eps, "-o", directory + "/baked.safetensors"] + adapters)
    #expect(bake.status == 0, "\(bake.stderr)")
    let common = ["-p", "a red cube", "--steps", "2", "--seed", "7"]
    let baked = try BinaryRun.run(
      [
        "sample", directory + "/baked.safetensors", "-o", directory + "/baked.png", "--save-latents",
        directory + "/baked-latents.safetensors",
      ] + common)
    #expect(baked.status == 0, "\(baked.stderr)")
    let memory = try BinaryRun.run(
      ["sample", eps, "-o", directory + "/lora.png", "--save-latents", directory + "/lora-latents.safetensors"] + common
        + adapters)
    #expect(memory.status == 0, "\(memory.stderr)")
    let plain = try BinaryRun.run(
      ["sample", eps, "-o", directory + "/plain.png", "--save-latents", directory + "/plain-latents.safetensors"]
        + common)
    #expect(plain.status == 0, "\(plain.stderr)")
    func latents(_ name: String) throws -> [String: [UInt8]] {
      let file = try SafeTensorsFile(path: directory + "/\(name)-latents.safetensors")
      return Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, Array(file.data($0))) })
    }
    let a = try latents("baked"), b = try latents("lora"), c = try latents("plain")
    #expect(!a.isEmpty && a == b, "every step's latent equal bit for bit")
    #expect(a != c, "the adapters change the render")
  }

  @Test func blockAndComponentStrengthsSelectWhatChanges() throws {
    let out = TestPaths.temporaryDirectory("cli-lora-blocks") + "/b.safetensors"
    // BASE (text encoders) 1, IN04 0, everything else 1; then the text encoders off.
    let blocks = (0..<20).map { $0 == 5 ? "0" : "1" }.joined(separator: ",")
    let run = try BinaryRun.run([
      "merge", eps, "--lora", lora("kohya_sgm"), "--blocks", blocks, "--lora-te-strength", "0", "-o", out,
    ])
    #expect(run.status == 0, "\(run.stderr)")
    let baked = try SafeTensorsFile(path: out), base = try SafeTensorsFile(path: eps)
    func same(_ key: String) throws -> Bool {
      Array(base.data(try #require(base.info(key)))) == Array(baked.data(try #require(baked.info(key))))
    }
    let u = "model.diffusion_model."
    #expect(try same(u + "input_blocks.4.1.proj_in.weight"))
    #expect(try same("conditioner.embedders.0.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight"))
    #expect(try same("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"))
    #expect(try !same(u + "middle_block.1.transformer_blocks.1.ff.net.0.proj.weight"))
    #expect(try !same(u + "output_blocks.3.1.transformer_blocks.0.attn1.to_out.0.weight"))
  }

  @Test func hostileAdaptersExitTwoAndWriteNothing() throws {
    let out = TestPaths.temporaryDirectory("cli-lora-hostile") + "/x.safetensors"
    for name in ["rank0", "nan_alpha", "shape_mismatch", "unmapped", "huge_rank", "rank_disagree"] {
      let run = try BinaryRun.run(["merge", eps, "--lora", lora("hostile/\(name)"), "-o", out])
      #expect(run.status == 2, "\(name): \(run.stderr)")
      #expect(run.stderr.contains("\(name).safetensors"), "\(name): \(run.stderr)")
      #expect(!FileManager.default.fileExists(atPath: out))
      let render = try BinaryRun.run([
        "sample", eps, "-p", "x", "--steps", "1", "-o", out + ".png", "--lora", lora("hostile/\(name)"),
      ])
      #expect(render.status == 2, "\(name): \(render.stderr)")
    }
    let skipping = try BinaryRun.run([
      "merge", eps, "--lora", lora("hostile/unmapped"), "--lora-skip-unmapped", "-o", out,
    ])
    #expect(skipping.status == 0, "\(skipping.stderr)")
    #expect(skipping.stdout.contains("skipped 3 unmapped keys"))
    #expect(try BinaryRun.run(["merge", eps, eps, "--lora", lora("kohya_sgm"), "-o", out]).status == 2)
  }

  /// Factors that overflow Float32 in the product: the bake (whose encoder counts non-finite
  /// values) and a render with `--lora` (which checks each tile) refuse, naming the weight.
  @Test func productsThatOverflowAreRefused() throws {
    let directory = TestPaths.temporaryDirectory("cli-lora-overflow")
    let source = try SafeTensorsFile(path: lora("kohya_sgm"))
    let ups = source.tensors.map(\.name).filter { $0.hasSuffix(".lora_up.weight") }.sorted()
    let target = try #require(ups.first)
    var entries: [TensorEntry] = []
    for tensor in source.tensors {
      var values = try TensorDecoder.resolve(file: source, tensor: tensor).decodeAll()
      let module = tensor.name.components(separatedBy: ".lora_")[0]
      if module == target.components(separatedBy: ".lora_")[0] && tensor.name.contains(".lora_") {
        values = values.map { _ in 1e30 }  // up and down: 1e60 per term
      }
      entries.append(
        TensorEntry(spec: TensorSpec(name: tensor.name, dtype: .f32, shape: tensor.shape)) { sink in
          try values.withUnsafeBytes { try sink.write($0) }
        })
    }
    let adapter = directory + "/overflow.safetensors"
    try SafeTensorsWriter.write(to: adapter, entries: entries, metadata: source.metadata)
    let out = directory + "/baked.safetensors"
    let bake = try BinaryRun.run(["merge", eps, "--lora", adapter, "-o", out])
    #expect(bake.status == 2, "\(bake.stderr)")
    #expect(bake.stderr.contains("overflow.safetensors") && bake.stderr.contains("non-finite"), "\(bake.stderr)")
    #expect(!FileManager.default.fileExists(atPath: out))
    let render = try BinaryRun.run(["sample", eps, "-p", "x", "--steps", "1", "-o", out + ".png", "--lora", adapter])
    #expect(render.status == 2 && render.stderr.contains("non-finite"), "\(render.stderr)")
  }

  @Test func extractLoRAWritesAKohyaFileThatBakesBack() throws {
    let directory = TestPaths.temporaryDirectory("cli-extract")
    let base = TestPaths.fixture("lora/extract/base.safetensors"),
      tuned = TestPaths.fixture("lora/extract/tuned.safetensors")
    let run = try BinaryRun.run([
      "extract-lora", tuned, base, "-o", directory + "/x.safetensors", "--rank", "8", "--text-encoders", "always",
      "--json",
    ])
    #expect(run.status == 0, "\(run.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect((report["layers"] as? [Any])?.count == 9)
    let info = try BinaryRun.run(["info", directory + "/x.safetensors"])
    #expect(
      info.stdout.contains("every key maps onto SDXL") && info.stdout.contains("sdxl_base_v1-0"), "\(info.stdout)")
    let bake = try BinaryRun.run([
      "merge", base, "--lora", directory + "/x.safetensors", "-o", directory + "/back.safetensors",
    ])
    #expect(bake.status == 0, "\(bake.stderr)")
    #expect(try BinaryRun.run(["extract-lora", base, base, "-o", directory + "/y.safetensors"]).status == 2)
    #expect(
      try BinaryRun.run(["extract-lora", tuned, base, "-o", directory + "/y.safetensors", "--energy", "2"]).status == 2)
    #expect(
      try BinaryRun.run(["extract-lora", tuned, "/nonexistent.safetensors", "-o", directory + "/y.safetensors"]).status
        == 3)
  }

  /// A LoRA fine-tune of the trained tiny model (its base plus a rank-8 update) is extracted at
  /// rank 8 and baked back into the base: the result renders like the fine-tune within `verify`'s
  /// fp16 reference thresholds.
  @Test func extractThenBakeRendersLikeTheTunedModel() throws {
    let directory = TestPaths.temporaryDirectory("cli-lora-roundtrip")
    let base = TestPaths.fixture("trained/tiny-shapes-eps.safetensors")
    func ok(_ arguments: [String]) throws {
      let run = try BinaryRun.run(arguments)
      #expect(run.status == 0, "\(arguments.first ?? ""): \(run.stderr)")
    }
    // A low-rank fine-tune: the rank-8 part of a merge with the v-prediction model, baked in.
    try ok([
      "merge", base, TestPaths.fixture("trained/tiny-shapes-vpred.safetensors"), "--alpha", "0.2", "--prediction",
      "eps", "-o", directory + "/merged.safetensors",
    ])
    try ok([
      "extract-lora", directory + "/merged.safetensors", base, "-o", directory + "/update.safetensors", "--rank", "8",
    ])
    try ok(["merge", base, "--lora", directory + "/update.safetensors", "-o", directory + "/tuned.safetensors"])
    // The round trip.
    try ok([
      "extract-lora", directory + "/tuned.safetensors", base, "-o", directory + "/extracted.safetensors", "--rank", "8",
    ])
    try ok(["merge", base, "--lora", directory + "/extracted.safetensors", "-o", directory + "/back.safetensors"])
    let verify = try BinaryRun.run([
      "verify", directory + "/back.safetensors", "--reference", directory + "/tuned.safetensors", "--change", "fp16",
      "--json",
      "--out", directory + "/renders",
    ])
    let report = try #require(
      try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8)) as? [String: Any], "\(verify.stderr)")
    let images = try #require(report["images"] as? [[String: Any]])
    #expect(!images.isEmpty)
    for image in images {
      let check = try #require(image["referenceCheck"] as? [String: Any])
      #expect(check["passed"] as? Bool == true, "\(check)")
    }
  }

  @Test func infoDescribesAnAdapter() throws {
    let run = try BinaryRun.run(["info", "--json", lora("kohya_sgm")])
    #expect(run.status == 0, "\(run.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect(object["kind"] as? String == "safetensors/lora")
    #expect(object["ranks"] as? [Int] == [2, 4])
    #expect(object["base_model"] as? String == "sdxl_base_v1-0")
    #expect((object["trigger_words"] as? [String])?.first == "tinystyle")
    #expect(object["all_keys_mapped"] as? Bool == true)
    let unmapped = try BinaryRun.run(["info", lora("hostile/unmapped")])
    #expect(unmapped.status == 0)
    #expect(unmapped.stdout.contains("3 keys map onto no SDXL weight"))
    #expect(unmapped.stdout.contains("bundle_emb.tinystyle.string_to_param.*"))
  }
}
