import Foundation
import SafeTensors
import TestSupport
import Testing

@testable import Checkpoint

#if canImport(Glibc)
  import Glibc
#endif

/// The persistent hash cache: hits equal fresh computations, any change to the file invalidates,
/// a bad cache file is ignored and replaced, and a cache never serves what it does not hold.
@Suite struct HashCacheTests {
  let directory = TestPaths.temporaryDirectory("hash-cache-tests")

  /// A cache in the test directory. A small racy margin: the files are made by the test and
  /// hashed after `settle()`.
  func cache(_ name: String = "hashes.json", margin: Double = 0.05) -> HashCache {
    HashCache(path: directory + "/" + name, racyMargin: margin)
  }

  /// A file of `size` pseudo-random bytes (seeded), then a pause longer than the racy margin.
  func makeFile(_ name: String, size: Int = 1_200_000, seed: UInt8 = 1) throws -> String {
    let path = directory + "/" + name
    var state = UInt32(seed) &* 2_654_435_761 | 1
    let bytes = (0..<size).map { _ -> UInt8 in
      state ^= state << 13
      state ^= state >> 17
      state ^= state << 5
      return UInt8(truncatingIfNeeded: state)
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    settle()
    return path
  }

  func settle() { usleep(120_000) }

  func hash(_ path: String, _ cache: HashCache?, dataOffset: Int? = nil) throws -> HashResult {
    ModelHasher.hashes(of: try MappedFile(path: path), dataOffset: dataOffset, cache: cache)
  }

  func fresh(_ path: String, dataOffset: Int? = nil) throws -> ModelHashes {
    ModelHasher.hashes(of: try MappedFile(path: path), dataOffset: dataOffset)
  }

  @Test func hitEqualsFreshComputation() throws {
    let file = try makeFile("model.bin")
    let first = try hash(file, cache())
    #expect(!first.fromCache)
    // A new instance reads the file written by the first: what another process would see.
    let reader = cache()
    let second = try hash(file, reader)
    #expect(second.fromCache)
    #expect(reader.hits == 1)
    #expect(second.hashes == (try fresh(file)))
    #expect(second.hashes == first.hashes)
    // Another spelling of the same file (a symlink) is the same entry.
    let link = directory + "/link.bin"
    try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: file)
    #expect(try hash(link, reader).fromCache)
  }

  @Test func sameSizeContentChangeInvalidates() throws {
    let file = try makeFile("model.bin")
    let before = try hash(file, cache()).hashes
    let stamp = try #require(FileStamp.of(path: file))
    // Rewrite one byte in place: same size, same inode.
    let fd = open(file, O_WRONLY)
    #expect(fd >= 0)
    var byte: UInt8 = 0x5A
    #expect(pwrite(fd, &byte, 1, 777) == 1)
    close(fd)
    // Put the modification time back as it was: the status-change time still gives it away.
    var times = [
      timespec(tv_sec: Int(stamp.modified / 1_000_000_000), tv_nsec: Int(stamp.modified % 1_000_000_000)),
      timespec(tv_sec: Int(stamp.modified / 1_000_000_000), tv_nsec: Int(stamp.modified % 1_000_000_000)),
    ]
    #expect(utimensat(AT_FDCWD, file, &times, 0) == 0)
    #expect(FileStamp.of(path: file)?.modified == stamp.modified)
    settle()
    let after = try hash(file, cache())
    #expect(!after.fromCache)
    #expect(after.hashes != before)
    #expect(after.hashes == (try fresh(file)))
    // The entry was replaced: the new hashes are served now.
    #expect(try hash(file, cache()) == HashResult(hashes: after.hashes, fromCache: true))
  }

  @Test func touchInvalidates() throws {
    let file = try makeFile("model.bin")
    _ = try hash(file, cache())
    #expect(try hash(file, cache()).fromCache)
    #expect(utimensat(AT_FDCWD, file, nil, 0) == 0)
    #expect(try !hash(file, cache()).fromCache)
  }

  @Test func replacedFileInvalidates() throws {
    let file = try makeFile("model.bin")
    let old = try hash(file, cache()).hashes
    let other = try makeFile("other.bin", seed: 9)
    #expect(rename(other, file) == 0)
    settle()
    let result = try hash(file, cache())
    #expect(!result.fromCache)
    #expect(result.hashes != old)
  }

  @Test func justChangedFileIsNotRecorded() throws {
    let file = try makeFile("model.bin")
    #expect(utimensat(AT_FDCWD, file, nil, 0) == 0)
    let strict = cache(margin: 2)
    _ = try hash(file, strict)
    #expect(strict.stores == 0)
    #expect(try !hash(file, strict).fromCache)
  }

  @Test func entryWithoutDataDigestDoesNotServeADataRequest() throws {
    let file = try makeFile("model.bin")
    let plain = try hash(file, cache())
    #expect(plain.hashes.dataSHA256 == nil)
    let withData = try hash(file, cache(), dataOffset: 1000)
    #expect(!withData.fromCache)
    #expect(withData.hashes == (try fresh(file, dataOffset: 1000)))
    #expect(withData.hashes.autoV3 != nil)
    // The richer entry now serves both kinds of request, each as a fresh computation would.
    #expect(try hash(file, cache(), dataOffset: 1000) == HashResult(hashes: withData.hashes, fromCache: true))
    #expect(try hash(file, cache()) == HashResult(hashes: plain.hashes, fromCache: true))
    // A data digest taken at another offset is not served.
    #expect(try !hash(file, cache(), dataOffset: 2000).fromCache)
    // Recording a plain result again keeps the data digest of the same file version.
    let writer = cache()
    let ticket = try #require(writer.ticket(for: try MappedFile(path: file)))
    #expect(writer.store(plain.hashes, dataOffset: nil, for: ticket))
    #expect(try hash(file, cache(), dataOffset: 2000).fromCache)
  }

  @Test(arguments: ["garbage", "empty", "huge", "wrong-types", "deep", "directory"])
  func badCacheFileIsIgnoredThenRewritten(kind: String) throws {
    let file = try makeFile("model.bin")
    let cachePath = directory + "/bad-\(kind).json"
    switch kind {
    case "garbage":
      try Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: cachePath))
    case "empty": try Data().write(to: URL(fileURLWithPath: cachePath))
    case "huge":
      // 17 MB of spaces around a valid-looking document: refused unread.
      #expect(FileManager.default.createFile(atPath: cachePath, contents: Data("{}".utf8)))
      #expect(truncate(cachePath, off_t(HashCache.maxFileBytes + 1_000_000)) == 0)
    case "deep":
      // Nesting deep enough to exhaust a recursive parser's stack.
      try Data((String(repeating: "[", count: 1_000_000) + String(repeating: "]", count: 1_000_000)).utf8)
        .write(to: URL(fileURLWithPath: cachePath))
    case "wrong-types":
      try Data(#"{"format": 3, "version": "x", "entries": [[[[]]]]}"#.utf8).write(to: URL(fileURLWithPath: cachePath))
    default: try FileManager.default.createDirectory(atPath: cachePath, withIntermediateDirectories: true)
    }
    let cache = HashCache(path: cachePath, racyMargin: 0.05)
    let result = try hash(file, cache)
    #expect(!result.fromCache)
    #expect(result.hashes == (try fresh(file)))
    if kind == "directory" {
      // Cannot be replaced: the store is skipped (with a warning), nothing breaks.
      #expect(cache.stores == 0)
      return
    }
    #expect(cache.stores == 1)
    let size = try #require(try FileManager.default.attributesOfItem(atPath: cachePath)[.size] as? Int)
    #expect(size < 10_000)
    #expect(try hash(file, HashCache(path: cachePath)).fromCache)
  }

  @Test func malformedEntriesAreNeverServed() throws {
    let file = try makeFile("model.bin")
    let cachePath = directory + "/hashes.json"
    let good = try hash(file, cache()).hashes
    let text = try String(contentsOfFile: cachePath, encoding: .utf8)
    // The same entry with a short hash that is not a prefix of the full one: dropped.
    let forged = text.replacingOccurrences(of: "\"\(good.autoV2)\"", with: "\"0123456789\"")
    #expect(forged != text)
    try forged.write(toFile: cachePath, atomically: true, encoding: .utf8)
    #expect(try !hash(file, cache()).fromCache)
    // Non-hex digests: dropped.
    try text.replacingOccurrences(of: good.sha256, with: String(repeating: "Z", count: 64))
      .replacingOccurrences(of: "\"\(good.autoV2)\"", with: "\"ZZZZZZZZZZ\"")
      .write(toFile: cachePath, atomically: true, encoding: .utf8)
    #expect(try !hash(file, cache()).fromCache)
  }

  @Test func offAndLocations() throws {
    #expect(HashCache.fromEnvironment(["ROUWEI_HASH_CACHE": "off", "HOME": "/home/u"]) == nil)
    #expect(HashCache.fromEnvironment(["ROUWEI_HASH_CACHE": "/x/h.json"])?.path == "/x/h.json")
    #expect(
      HashCache.fromEnvironment(["XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"])?.path == "/xdg/rouwei-ckpt/hashes.json")
    #expect(
      HashCache.fromEnvironment(["XDG_CACHE_HOME": "relative", "HOME": "/home/u"])?.path
        == "/home/u/.cache/rouwei-ckpt/hashes.json")
    #expect(HashCache.fromEnvironment([:]) == nil)
    // Without a cache nothing is recorded or served.
    let file = try makeFile("model.bin")
    #expect(try !hash(file, nil).fromCache)
    #expect(try !hash(file, nil).fromCache)
    #expect(!FileManager.default.fileExists(atPath: directory + "/hashes.json"))
  }

  @Test func writersMergeWithWhatIsOnDisk() throws {
    let one = try makeFile("one.bin", seed: 1)
    let two = try makeFile("two.bin", seed: 2)
    // Two instances loaded before either wrote, as two processes would be.
    let first = cache(), second = cache()
    #expect(try !hash(one, first).fromCache)
    #expect(try !hash(two, second).fromCache)
    let reader = cache()
    #expect(try hash(one, reader).fromCache)
    #expect(try hash(two, reader).fromCache)
  }

  @Test func keepsTheNewestEntries() throws {
    let hashes = ModelHashes(
      sha256: String(repeating: "a", count: 64), autoV2: String(repeating: "a", count: 10),
      autoV1: String(repeating: "b", count: 8), autoV3: nil, dataSHA256: nil)
    let stamp = FileStamp(device: 1, inode: 2, size: 3, modified: 4, changed: 5)
    var entries: [String: HashCache.Entry] = [:]
    for index in 0..<(HashCache.maxEntries + 5) {
      entries["/m/\(index)"] = HashCache.Entry(stamp: stamp, hashes: hashes, dataOffset: nil, storedAt: Int64(index))
    }
    let kept = HashCache.newest(entries, limit: HashCache.maxEntries)
    #expect(kept.count == HashCache.maxEntries)
    #expect(kept["/m/4"] == nil && kept["/m/5"] != nil && kept["/m/\(HashCache.maxEntries + 4)"] != nil)
  }
}

/// The hash-cache fuzz seeds (Fixtures/fuzz/hash-cache, Scripts/fixtures/make_hash_cache_seeds.py)
/// stay meaningful: the valid one is read as the format HashCache writes, and every hostile one
/// yields only well-formed entries (none for the forged or malformed parts).
@Suite struct HashCacheFuzzSeedTests {
  func entries(_ name: String) -> [String: HashCache.Entry] {
    HashCache(path: TestPaths.fixture("fuzz/hash-cache/\(name)")).load()
  }

  @Test func theValidSeedIsReadWhole() {
    let loaded = entries("valid.json")
    #expect(Set(loaded.keys) == ["/models/a.safetensors", "/models/b.safetensors"])
    #expect(loaded["/models/a.safetensors"]?.dataOffset == 128)
    #expect(loaded["/models/b.safetensors"]?.hashes.dataSHA256 == nil)
  }

  @Test(arguments: [
    ("forged-short-hash.json", ["/models/b.safetensors"]), ("uppercase-digest.json", ["/models/a.safetensors"]),
    ("relative-key.json", []), ("offset-beyond-size.json", ["/models/b.safetensors"]),
    ("huge-number.json", []), ("wrong-version.json", []), ("wrong-format.json", []),
    ("entries-not-object.json", []), ("nesting-bomb.json", []), ("truncated.json", []),
  ])
  func hostileSeedsKeepOnlyWellFormedEntries(name: String, kept: [String]) {
    #expect(Set(entries(name).keys) == Set(kept), "\(name)")
  }
}
