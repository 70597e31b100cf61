import ArgumentParser
import Foundation
import SafeTensors
import Tensors

/// The `rouwei-ckpt` command: inspect, convert, merge and verify SDXL checkpoints.
public struct RootCommand: ParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "rouwei-ckpt",
    abstract: "Inspect, convert, merge and verify Stable Diffusion XL checkpoints.",
    discussion: """
      Exit codes: 0 success, 1 verification failed, 2 bad input or usage, 3 I/O failure.
      """,
    // The BLAS kernels in use: where they are slower than the CPU allows, every render is.
    version: "\(ToolVersion.string) (OpenBLAS kernels: \(BLASCore.current))",
    subcommands: RootCommand.subcommandTypes
  )

  public init() {}

  /// Parses the command line, runs the command and exits with the project's exit codes
  /// (argument-parser's own defaults are 64 and 1; ours are documented in `ExitStatus`).
  public static func main(_ arguments: [String]? = nil) -> Never {
    InterruptCleanup.install()
    do {
      var command = try parseAsRoot(arguments)
      try command.run()
      // A mapped input truncated under us was read as zeros (MapGuard): do not report success.
      if let damaged = MappedFile.damagedPaths.first {
        throw SafeTensorsError.fileChanged(
          file: damaged, reason: "it was truncated or could not be read while mapped; the results are not valid")
      }
      Foundation.exit(0)
    } catch {
      let status = ExitStatus(for: error)
      if status == .success {
        // Help and --version are printed by argument-parser itself.
        RootCommand.exit(withError: error)
      }
      let message = ExitStatus.message(for: error)
      if !message.isEmpty {
        FileHandle.standardError.write(Data(("rouwei-ckpt: " + message + "\n").utf8))
      }
      Foundation.exit(status.rawValue)
    }
  }
}
