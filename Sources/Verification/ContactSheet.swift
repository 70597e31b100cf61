import Diffusion

/// A grid of images a person can glance at: equal cells (the largest image's size), each image
/// centred in its cell, `gap` pixels of background between cells and around the edge.
public enum ContactSheet {
  /// The sheet of `images` in rows of `columns` (default: ⌈√n⌉), or nil when `images` is empty.
  /// - Parameters:
  ///   - gap: pixels between cells and around the border (≥ 0).
  ///   - background: the colour of gaps and of cell space an image does not fill.
  public static func make(
    _ images: [RGBImage], columns: Int? = nil, gap: Int = 4,
    background: (red: UInt8, green: UInt8, blue: UInt8) = (255, 255, 255)
  ) -> RGBImage? {
    guard !images.isEmpty else { return nil }
    let gap = Swift.max(0, gap)
    let columnCount = Swift.max(
      1, Swift.min(images.count, columns ?? Int(Double(images.count).squareRoot().rounded(.up))))
    let rowCount = (images.count + columnCount - 1) / columnCount
    let cellWidth = images.map(\.width).max() ?? 0
    let cellHeight = images.map(\.height).max() ?? 0
    let width = columnCount * cellWidth + (columnCount + 1) * gap
    let height = rowCount * cellHeight + (rowCount + 1) * gap
    var sheet = RGBImage(
      width: width, height: height, red: background.red, green: background.green,
      blue: background.blue)
    sheet.pixels.withUnsafeMutableBufferPointer { target in
      for (index, image) in images.enumerated() {
        let cellX = gap + (index % columnCount) * (cellWidth + gap) + (cellWidth - image.width) / 2
        let cellY =
          gap + (index / columnCount) * (cellHeight + gap) + (cellHeight - image.height) / 2
        image.pixels.withUnsafeBufferPointer { source in
          for row in 0..<image.height {
            let from = row * image.width * 3
            let to = ((cellY + row) * width + cellX) * 3
            for byte in 0..<(image.width * 3) { target[to + byte] = source[from + byte] }
          }
        }
      }
    }
    return sheet
  }
}
