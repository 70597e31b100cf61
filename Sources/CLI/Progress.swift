import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A one-line progress bar with rate and ETA on stderr. Silent unless stderr is a terminal and the
/// command is not producing JSON, so scripts and logs never see it.
public final class ProgressBar {
  private let label: String
  private let total: Double
  private let enabled: Bool
  private let start = Date()
  private var lastDraw = Date.distantPast
  private let unit: Unit

  /// What the counted quantity is, for the rate display.
  public enum Unit {
    case bytes
    case items(String)
  }

  /// Creates a bar for `total` units of work. `quiet` (for `--json` or `--quiet`) disables it.
  public init(_ label: String, total: Double, unit: Unit = .bytes, quiet: Bool = false) {
    self.label = label
    self.total = max(total, 1)
    self.unit = unit
    enabled = !quiet && isatty(STDERR_FILENO) == 1
  }

  /// Reports `done` units; redraws at most ten times a second.
  public func update(_ done: Double) {
    guard enabled else { return }
    let now = Date()
    guard now.timeIntervalSince(lastDraw) >= 0.1 || done >= total else { return }
    lastDraw = now
    let fraction = min(done / total, 1)
    let width = 30
    let filled = Int(fraction * Double(width))
    let elapsed = now.timeIntervalSince(start)
    let rate = elapsed > 0 ? done / elapsed : 0
    let eta = rate > 0 ? (total - done) / rate : 0
    let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    let line = String(
      format: "\r%@ %@ %3.0f%% %@ ETA %@", label, bar, fraction * 100, rateText(rate), ProgressBar.clock(eta))
    FileHandle.standardError.write(Data(line.utf8))
  }

  /// Clears the line.
  public func finish() {
    guard enabled else { return }
    FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
  }

  private func rateText(_ rate: Double) -> String {
    switch unit {
    case .bytes: return String(format: "%.0f MB/s", rate / 1e6)
    case .items(let name): return String(format: "%.2f %@/s", rate, name)
    }
  }

  static func clock(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "--:--" }
    let s = Int(seconds.rounded())
    return s >= 3600
      ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%02d:%02d", s / 60, s % 60)
  }
}
