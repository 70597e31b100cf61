import ArgumentParser
import Foundation

/// `--json`, shared by every reporting command.
struct JSONOption: ParsableArguments {
  @Flag(help: "Print the report as one JSON document on stdout (info with several paths: an array).")
  var json = false
}

/// Prints a `Codable` report as one JSON document on stdout, keys sorted so output is stable.
public func printJSON<T: Encodable>(_ value: T) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
  let data = try encoder.encode(value)
  FileHandle.standardOutput.write(data)
  FileHandle.standardOutput.write(Data("\n".utf8))
}
