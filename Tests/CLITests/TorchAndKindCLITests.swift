import Foundation
import SafeTensors
import TestSupport
import Testing

/// The real binary on PyTorch checkpoints (safe import, hostile pickles) and on files of every kind
/// the sniffer recognises given to commands that cannot use them.
@Suite struct TorchAndKindCLITests {
  /// Runs the binary with `arguments` in a fresh empty working directory; returns the run and the
  /// names of the files that exist there afterwards.
  struct Run {
    let status: Int32
    let stdout: String
    let stderr: String
  }

  static func runInEmptyDirectory(_ arguments: [String]) throws -> (Run, [String], String) {
    // Tests run in parallel: the child gets its own working directory, ours never changes.
    let directory = TestPaths.temporaryDirectory("hostile-cwd")
    let captures = TestPaths.temporaryDirectory("hostile-out")
    defer { try? FileManager.default.removeItem(atPath: captures) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: BinaryRun.executable)
    process.arguments = arguments
    process.environment = BinaryRun.environment()
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    let out = captures + "/stdout", err = captures + "/stderr"
    #expect(FileManager.default.createFile(atPath: out, contents: nil))
    #expect(FileManager.default.createFile(atPath: err, contents: nil))
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
    try process.run()
    process.waitUntilExit()
    let run = Run(
      status: process.terminationStatus,
      stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
      stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    return (run, try FileManager.default.contentsOfDirectory(atPath: directory), directory)
  }

  /// Every hostile pickle: `info` and `convert` exit 2 with one line naming the file and the
  /// reason; no file appears (each payload would `touch pwned-…` in the working directory, or in
  /// /tmp for the traversal names) and no output is written.
  @Test func hostilePicklesAreRefusedWithoutSideEffects() throws {
    let corpusPath = TestPaths.fixture("torch/hostile/expected.json")
    let corpus = try JSONDecoder().decode(
      [String: String].self, from: try #require(FileManager.default.contents(atPath: corpusPath)))
    let before = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("pwned") })
    for (name, fragment) in corpus.sorted(by: { $0.key < $1.key }) where !fragment.isEmpty {
      let file = TestPaths.fixture("torch/hostile/" + name)
      for arguments in [["info", file], ["convert", file, "-o", "out.safetensors"]] {
        let (run, files, directory) = try Self.runInEmptyDirectory(arguments)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(run.status == 2, "\(arguments[0]) \(name): exit \(run.status): \(run.stderr)")
        #expect(run.stderr.hasPrefix("rouwei-ckpt: ") && run.stderr.contains(name), "\(name): \(run.stderr)")
        #expect(run.stderr.contains(fragment), "\(name): '\(fragment)' not in \(run.stderr)")
        #expect(run.stderr.split(separator: "\n").count == 1, "\(name): \(run.stderr)")
        #expect(files.isEmpty, "\(arguments[0]) \(name) left \(files)")
      }
    }
    let after = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("pwned") })
    #expect(after == before, "new files in /tmp: \(after.subtracting(before))")
  }

  /// The test above would pass for a binary that refuses everything: the control imports.
  @Test func controlAndRealCheckpointsImport() throws {
    let (run, files, directory) = try Self.runInEmptyDirectory(
      ["convert", TestPaths.fixture("torch/sd-nested.ckpt"), "-o", "out.safetensors", "--json"])
    defer { try? FileManager.default.removeItem(atPath: directory) }
    #expect(run.status == 0, "\(run.stderr)")
    #expect(files == ["out.safetensors"])
    #expect(run.stdout.contains("\"emaTensorsDropped\" : 3"))
    let output = try SafeTensorsFile(path: directory + "/out.safetensors")
    #expect(output.tensors.count == 5)
    #expect(output.metadata["rouwei.source"] == "sd-nested.ckpt")
    #expect(output.metadata["rouwei.source.global_step"] == "470000")
    #expect(!output.metadata.values.contains { $0.contains(directory) }, "an absolute path in the metadata")

    let info = try BinaryRun.run(["info", TestPaths.fixture("torch/legacy.pt"), "--json"])
    #expect(info.status == 0, "\(info.stderr)")
    #expect(
      info.stdout.contains("\"format\" : \"pytorch-legacy\"") && info.stdout.contains("\"kind\" : \"pytorch-legacy\""))
  }

  /// Files a command cannot use: one line naming the kind and what to do (exit 2).
  @Test func commandsNameTheKindTheyCannotUse() throws {
    func kind(_ name: String) -> String { TestPaths.fixture("torch/kinds/" + name) }
    let cases: [([String], String)] = [
      (
        ["sample", kind("lora.safetensors"), "-p", "x", "-o", "x.png"],
        "lora.safetensors is a LoRA adapter: bake it into a model with `rouwei-ckpt merge BASE --lora lora.safetensors"
      ),
      (["verify", kind("lycoris-loha.safetensors")], "is a LoRA adapter"),
      (
        ["merge", kind("checkpoint.safetensors"), kind("peft-lora.safetensors"), "-o", "m.safetensors"],
        "peft-lora.safetensors is a LoRA adapter"
      ),
      (
        ["merge", kind("checkpoint.safetensors"), kind("embedding.safetensors"), "-o", "m.safetensors"],
        "is a textual-inversion embedding"
      ),
      (["verify", kind("controlnet.safetensors")], "is a ControlNet"),
      (
        ["merge", kind("checkpoint.safetensors"), kind("model.gguf"), "-o", "m.safetensors"],
        "model.gguf is a GGUF file: convert it first: `rouwei-ckpt convert model.gguf -o model.safetensors`"
      ),
      (["verify", kind("model.ckpt")], "model.ckpt is a PyTorch checkpoint (torch.save zip): convert it first"),
      (
        ["info", kind("error-page.safetensors")],
        "error-page.safetensors is an HTML page (a failed download?): first line '<!DOCTYPE html>'"
      ),
      (
        ["convert", kind("api-error.safetensors"), "-o", "x.safetensors"],
        "is a JSON document, not a model: first line '{\"error\":\"Unauthorized\""
      ),
      (["info", kind("empty.safetensors")], "is an empty file (0 bytes"),
      (
        ["merge", kind("truncated.safetensors"), kind("checkpoint.safetensors"), "-o", "m.safetensors"],
        "is a truncated safetensors file"
      ),
      (["sample", kind("lfs-pointer.safetensors"), "-p", "x", "-o", "x.png"], "is a Git LFS pointer"),
      (["info", kind("plain.pkl")], "is a Python pickle, not a PyTorch checkpoint"),
      (
        ["sample", kind("vae.safetensors"), "-p", "x", "-o", "x.png"],
        "is a VAE: sample and verify render a model with a UNet; pass this file as `--vae`"
      ),
    ]
    for (arguments, fragment) in cases {
      let (run, files, directory) = try Self.runInEmptyDirectory(arguments)
      defer { try? FileManager.default.removeItem(atPath: directory) }
      #expect(run.status == 2, "\(arguments): exit \(run.status): \(run.stderr)")
      #expect(run.stderr.contains(fragment), "\(arguments): '\(fragment)' not in \(run.stderr)")
      #expect(run.stderr.split(separator: "\n").count == 1, "\(arguments): \(run.stderr)")
      #expect(files.isEmpty, "\(arguments) left \(files)")
    }
    // info describes what it can: a LoRA is named as one (and described as an adapter, Manuals/lora.md).
    let lora = try BinaryRun.run(["info", kind("lora.safetensors")])
    #expect(
      lora.status == 0 && lora.stdout.contains("lora.safetensors: LoRA adapter (kohya")
        && lora.stdout.contains("rank         4"), "\(lora.stdout)")
    // One the adapter reader refuses (LoHa factors missing) is still described, with the reason.
    let loha = try BinaryRun.run(["info", kind("lycoris-loha.safetensors")])
    #expect(
      loha.status == 0 && loha.stdout.contains("kind: LoRA adapter (an add-on for a base model"), "\(loha.stdout)")
    #expect(
      loha.stdout.contains("! not usable as an adapter:") && loha.stdout.contains("lacks hada_w2_a"), "\(loha.stdout)")
  }
}
