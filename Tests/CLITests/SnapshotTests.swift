import Foundation
import TestSupport
import Testing

/// What people and scripts read, pinned: `--help` of every command, `info`'s human view and
/// `info --json` of a fixture, compared with the committed files in `Fixtures/snapshots/`.
///
/// When a change is meant, regenerate and review the diff:
///     ROUWEI_UPDATE_SNAPSHOTS=1 swift test --filter SnapshotTests && git diff Fixtures/snapshots
@Suite struct SnapshotTests {
  static let fixture = "trained/tiny-shapes-vpred.safetensors"

  static let cases: [(name: String, arguments: [String])] = [
    ("help", ["--help"]),
    ("info-help", ["info", "--help"]),
    ("convert-help", ["convert", "--help"]),
    ("merge-help", ["merge", "--help"]),
    ("sample-help", ["sample", "--help"]),
    ("verify-help", ["verify", "--help"]),
    ("info-human", ["info", TestPaths.fixture(fixture)]),
    ("info-json", ["info", "--json", TestPaths.fixture(fixture)]),
  ]

  @Test(arguments: cases.map(\.name))
  func outputMatchesSnapshot(name: String) throws {
    let arguments = try #require(Self.cases.first { $0.name == name }).arguments
    var environment = ProcessInfo.processInfo.environment
    environment["COLUMNS"] = "100"
    let run = try BinaryRun.run(arguments, environment: environment)
    #expect(run.status == 0, "\(run.stderr)")
    // The checkout's location is not part of the output's meaning.
    let output = run.stdout.replacingOccurrences(of: TestPaths.packageRoot.path + "/", with: "<checkout>/")
    let path = TestPaths.fixture("snapshots/\(name).txt")
    if ProcessInfo.processInfo.environment["ROUWEI_UPDATE_SNAPSHOTS"] == "1" {
      try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      try output.write(toFile: path, atomically: true, encoding: .utf8)
      return
    }
    let snapshot = try String(contentsOfFile: path, encoding: .utf8)
    if output != snapshot {
      let ours = output.split(separator: "\n", omittingEmptySubsequences: false)
      let theirs = snapshot.split(separator: "\n", omittingEmptySubsequences: false)
      let line = (0..<min(ours.count, theirs.count)).first { ours[$0] != theirs[$0] } ?? min(ours.count, theirs.count)
      Issue.record(
        """
        `rouwei-ckpt \(arguments.joined(separator: " "))` differs from Fixtures/snapshots/\(name).txt \
        at line \(line + 1):
          now:      \(line < ours.count ? String(ours[line]) : "<end>")
          snapshot: \(line < theirs.count ? String(theirs[line]) : "<end>")
        If the change is meant: ROUWEI_UPDATE_SNAPSHOTS=1 swift test --filter SnapshotTests, then review \
        `git diff Fixtures/snapshots` and commit it.
        """)
    }
  }
}
