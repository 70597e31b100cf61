import Diffusion
import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Verification

@Suite struct PNGTests {
  /// A deterministic pseudo-random image (every byte value occurs, so filters and deflate get work).
  static func noiseImage(width: Int, height: Int, seed: UInt64 = 7) -> RGBImage {
    var state = seed
    let pixels = (0..<(width * height * 3)).map { _ -> UInt8 in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt8(truncatingIfNeeded: state >> 56)
    }
    return RGBImage(width: width, height: height, pixels: pixels)
  }

  static func partialFiles(in directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
      $0.hasSuffix(".partial")
    }
  }

  static let parameters = GenerationParameters(
    prompt: "masterpiece, best quality, 1girl, (smile:1.2)\nBREAK white background",
    negativePrompt: "worst quality, low quality, watermark", steps: 20, sampler: "Euler a",
    scheduleType: "Karras", cfgScale: 7, seed: 1, width: 1024, height: 1024,
    modelHash: "abcdef1234",
    modelName: "rouwei_v080", version: "rouwei-ckpt 0.1.0")

  @Test(arguments: [(1, 1), (64, 64), (37, 5), (300, 17)])
  func roundTripIsBitExact(width: Int, height: Int) throws {
    let image = Self.noiseImage(width: width, height: height)
    let directory = TestPaths.temporaryDirectory("png")
    let path = directory + "/image.png"
    try PNGWriter.write(image, text: [Self.parameters.pngText], to: path)
    let read = try PNGReader.read(path: path)
    #expect(read.image == image)
    #expect(read.text(for: "parameters") == Self.parameters.infotext)
    #expect(Self.partialFiles(in: directory).isEmpty)
  }

  @Test func infotextHasA1111Format() {
    let expected = """
      masterpiece, best quality, 1girl, (smile:1.2)
      BREAK white background
      Negative prompt: worst quality, low quality, watermark
      Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 1024x1024, \
      Model hash: abcdef1234, Model: rouwei_v080, Version: rouwei-ckpt 0.1.0
      """
    #expect(Self.parameters.infotext == expected)
    var other = Self.parameters
    other.negativePrompt = ""
    other.scheduleType = nil
    other.cfgScale = 5.5
    other.modelName = "odd, name: \"v2\""
    other.extra = [.init("Clip skip", "2")]
    // No negative line; values with , : or newline quoted as JSON (A1111 infotext_utils.quote).
    #expect(
      other.infotext == """
        masterpiece, best quality, 1girl, (smile:1.2)
        BREAK white background
        Steps: 20, Sampler: Euler a, CFG scale: 5.5, Seed: 1, Size: 1024x1024, Model hash: abcdef1234, \
        Model: "odd, name: \\"v2\\"", Clip skip: 2, Version: rouwei-ckpt 0.1.0
        """)
    #expect(GenerationParameters.parse(other.infotext) == other)
    #expect(GenerationParameters.parse(Self.parameters.infotext) == Self.parameters)
    #expect(GenerationParameters.parse("just a prompt") == nil)
  }

  /// Pillow's `add_text` (what A1111 uses): Latin-1 text as tEXt, anything else as uncompressed
  /// iTXt in UTF-8.
  @Test func nonLatin1TextUsesITXt() throws {
    let latin = PNGTextEntry(keyword: "parameters", text: "café, crème brûlée, ×2")
    let unicode = PNGTextEntry(
      keyword: "parameters", text: "猫耳, 1girl, ☆ smile 🎨\nNegative prompt: ぼやけ")
    let image = Self.noiseImage(width: 8, height: 8)
    let latinBytes = try PNGWriter.encode(image, text: [latin])
    let unicodeBytes = try PNGWriter.encode(
      image, text: [unicode, PNGTextEntry(keyword: "Software", text: "rouwei-ckpt")])
    let latinChunks = try #require(PNGChunks.chunks(latinBytes)).map(\.type)
    let unicodeChunks = try #require(PNGChunks.chunks(unicodeBytes)).map(\.type)
    #expect(latinChunks.contains("tEXt") && !latinChunks.contains("iTXt"))
    #expect(unicodeChunks.contains("iTXt") && unicodeChunks.contains("tEXt"))
    // Text chunks sit before the image data, as Pillow writes them.
    let firstData = try #require(unicodeChunks.firstIndex(of: "IDAT"))
    #expect(try #require(unicodeChunks.firstIndex(of: "iTXt")) < firstData)
    // Latin-1 is stored as Latin-1 bytes (é = 0xE9), not UTF-8.
    let text = try #require(PNGChunks.chunks(latinBytes)?.first { $0.type == "tEXt" })
    #expect(Array(text.data).contains(0xE9) && !Array(text.data).contains(0xC3))
    #expect(try PNGReader.decode(latinBytes).text == [latin])
    let decoded = try PNGReader.decode(unicodeBytes)
    #expect(
      decoded.text(for: "parameters") == unicode.text
        && decoded.text(for: "Software") == "rouwei-ckpt")
    #expect(decoded.image == image)
  }

  /// The chunks are byte for byte what Pillow 12's `PngInfo.add_text("parameters", …)` writes
  /// (hex taken from a Pillow-written file).
  @Test func textChunksMatchPillow() throws {
    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    #expect(
      hex(try PNGWriter.textChunk(PNGTextEntry(keyword: "parameters", text: "café ×2")))
        == "0000001274455874706172616d657465727300636166e920d732ceb19c4b")
    #expect(
      hex(try PNGWriter.textChunk(PNGTextEntry(keyword: "parameters", text: "猫耳, x")))
        == "0000001869545874706172616d65746572730000000000e78cabe880b32c2078bce77705")
  }

  @Test func invalidTextIsRefused() {
    let image = Self.noiseImage(width: 2, height: 2)
    for keyword in [
      "", " lead", "trail ", "two  spaces", String(repeating: "k", count: 80), "ключ", "tab\t",
    ] {
      #expect(throws: PNGError.self) {
        try PNGWriter.encode(image, text: [PNGTextEntry(keyword: keyword, text: "x")])
      }
    }
    #expect(throws: PNGError.self) {
      try PNGWriter.encode(image, text: [PNGTextEntry(keyword: "k", text: "a\0b")])
    }
  }

  @Test func unwritablePathsAreTypedAndLeaveNothing() throws {
    let directory = TestPaths.temporaryDirectory("png-fail")
    let image = Self.noiseImage(width: 4, height: 4)
    // A missing directory, and a "directory" that is a regular file.
    let blocker = directory + "/file"
    #expect(FileManager.default.createFile(atPath: blocker, contents: Data([1])))
    for path in [directory + "/missing/out.png", blocker + "/out.png"] {
      #expect {
        try PNGWriter.write(image, to: path)
      } throws: { error in
        guard let error = error as? PNGError, case .io(let file, _, let code) = error else {
          return false
        }
        return file == path && (code == ENOENT || code == ENOTDIR) && error.isIOFailure
      }
    }
    // Over a directory.
    try FileManager.default.createDirectory(
      atPath: directory + "/dir.png", withIntermediateDirectories: false)
    #expect(throws: PNGError.self) { try PNGWriter.write(image, to: directory + "/dir.png") }
    #expect(Self.partialFiles(in: directory).isEmpty)
  }

  /// A failure after the data is written (fsync, rename) leaves the old file as it was and no
  /// temporary file.
  @Test(arguments: ["fsync", "rename", "write"])
  func failedCommitLeavesThePreviousFile(step: String) throws {
    let directory = TestPaths.temporaryDirectory("png-fault")
    let path = directory + "/out.png"
    let old = Self.noiseImage(width: 5, height: 5, seed: 1)
    try PNGWriter.write(old, to: path)
    var faults = AtomicFile.Faults()
    switch step {
    case "fsync": faults.fsync = { EIO }
    case "rename": faults.rename = { EACCES }
    default: faults.write = { _ in ENOSPC }
    }
    AtomicFile.injectFaults(faults, forDestination: path)
    defer { AtomicFile.injectFaults(nil, forDestination: path) }
    #expect {
      try PNGWriter.write(Self.noiseImage(width: 50, height: 50, seed: 2), to: path)
    } throws: { error in
      guard let error = error as? PNGError, case .io(let file, let operation, _) = error else {
        return false
      }
      return file == path && operation == step
    }
    #expect(try PNGReader.read(path: path).image == old)
    #expect(Self.partialFiles(in: directory).isEmpty)
  }

  @Test func unreadableFilesAreTypedErrors() throws {
    let directory = TestPaths.temporaryDirectory("png-read")
    #expect {
      try PNGReader.read(path: directory + "/none.png")
    } throws: { error in
      guard let error = error as? PNGError, case .io(_, _, let code) = error else { return false }
      return code == ENOENT
    }
    let valid = try PNGWriter.encode(
      Self.noiseImage(width: 16, height: 16), text: [Self.parameters.pngText])
    var cases: [(String, [UInt8])] = [
      ("empty", []), ("not a PNG", Array("GIF89a and more bytes".utf8)),
      ("truncated", Array(valid.prefix(60))),
    ]
    // A flipped byte in the text chunk breaks its CRC; one in the image data breaks zlib or IDAT's CRC.
    var badText = valid
    let textChunk = try #require(PNGChunks.chunks(valid)?.first { $0.type == "tEXt" })
    badText[textChunk.offset + 12] ^= 0x20
    cases.append(("text CRC", badText))
    var badData = valid
    let dataChunk = try #require(PNGChunks.chunks(valid)?.first { $0.type == "IDAT" })
    badData[dataChunk.offset + 20] ^= 0xFF
    cases.append(("image CRC", badData))
    for (label, bytes) in cases {
      #expect(throws: PNGError.self, "\(label)") { try PNGReader.decode(bytes, file: label) }
    }
    // A header claiming 100000 × 100000 pixels is refused before any allocation.
    var huge = try PNGWriter.encode(Self.noiseImage(width: 1, height: 1))
    let ihdr = PNGChunks.frame(
      type: "IHDR", data: [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0])
    huge.replaceSubrange(8..<(8 + 25), with: ihdr)
    #expect {
      try PNGReader.decode(huge, file: "huge")
    } throws: { error in
      guard let error = error as? PNGError, case .tooLarge(_, let width, let height) = error else {
        return false
      }
      return width == 100_000 && height == 100_000
    }
  }

  @Test func crcMatchesTheStandardCheckValue() {
    #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
  }

  @Test func contactSheetPlacesImagesInAGrid() throws {
    let red = RGBImage(width: 4, height: 2, red: 255, green: 0, blue: 0)
    let blue = RGBImage(width: 2, height: 2, red: 0, green: 0, blue: 255)
    let sheet = try #require(
      ContactSheet.make([red, blue, red], columns: 2, gap: 1, background: (9, 9, 9)))
    // 2 columns × 4 px + 3 gaps; 2 rows × 2 px + 3 gaps.
    #expect(sheet.width == 11 && sheet.height == 7)
    func pixel(_ x: Int, _ y: Int) -> [UInt8] {
      Array(sheet.pixels[((y * sheet.width + x) * 3)..<((y * sheet.width + x) * 3 + 3)])
    }
    #expect(pixel(0, 0) == [9, 9, 9])
    #expect(pixel(1, 1) == [255, 0, 0] && pixel(4, 2) == [255, 0, 0])
    // The narrower image is centred in its 4-pixel cell: columns 7–8 of the cell starting at 6.
    #expect(pixel(6, 1) == [9, 9, 9] && pixel(7, 1) == [0, 0, 255] && pixel(8, 2) == [0, 0, 255])
    #expect(pixel(1, 4) == [255, 0, 0] && pixel(6, 4) == [9, 9, 9])
    #expect(ContactSheet.make([]) == nil)
    let path = TestPaths.temporaryDirectory("sheet") + "/sheet.png"
    try PNGWriter.write(sheet, to: path)
    #expect(try PNGReader.read(path: path).image == sheet)
  }
}
