import Verification

/// A library progress callback drawn as progress bars on stderr (one bar per label; nothing when
/// `quiet` or stderr is not a terminal).
final class RenderProgressBar {
  private let quiet: Bool
  private var bar: ProgressBar?
  private var label: String?

  init(quiet: Bool) { self.quiet = quiet }

  /// The handler to give a request.
  var handler: ProgressHandler {
    { [self] progress in
      if progress.label != label {
        bar?.finish()
        bar = ProgressBar(progress.label, total: Double(progress.total), unit: .items("steps"), quiet: quiet)
        label = progress.label
      }
      bar?.update(Double(progress.done))
    }
  }

  /// Ends the last bar.
  func finish() {
    bar?.finish()
    bar = nil
    label = nil
  }
}

/// Runs `body` with a progress handler drawn on stderr, finishing the bar whatever happens.
func withProgress<T>(quiet: Bool, _ body: (@escaping ProgressHandler) throws -> T) rethrows -> T {
  let bars = RenderProgressBar(quiet: quiet)
  defer { bars.finish() }
  return try body(bars.handler)
}
