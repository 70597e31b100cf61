import ArgumentParser

extension RootCommand {
  /// Every subcommand, in the order `--help` lists them.
  static let subcommandTypes: [ParsableCommand.Type] = [
    Info.self, Convert.self, Merge.self, ExtractLoRA.self, Sample.self, Verify.self,
  ]
}
