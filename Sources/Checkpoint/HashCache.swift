import Foundation
import SafeTensors

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// What the file system says about one version of a file: device, inode, size, and modification
/// and status-change times in nanoseconds. Rewriting a file in place changes its times; replacing
/// it changes its inode; so a cached hash is served only while all of these are unchanged.
public struct FileStamp: Codable, Hashable, Sendable {
  /// `st_dev`.
  public var device: UInt64
  /// `st_ino`.
  public var inode: UInt64
  /// `st_size` in bytes.
  public var size: Int64
  /// `st_mtim` in nanoseconds since the epoch.
  public var modified: Int64
  /// `st_ctim` in nanoseconds since the epoch. Unlike the modification time it cannot be set
  /// back by `touch -d` or `rsync -t`: any write, rename or chmod moves it to "now".
  public var changed: Int64

  /// The stamp of the file at `path` (following links), or nil when it cannot be stat'ed or is
  /// not a regular file.
  public static func of(path: String) -> FileStamp? {
    var status = stat()
    guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
    #if canImport(Darwin)
      let (m, c) = (status.st_mtimespec, status.st_ctimespec)
    #else
      let (m, c) = (status.st_mtim, status.st_ctim)
    #endif
    guard let modified = nanoseconds(Int64(m.tv_sec), Int64(m.tv_nsec)),
      let changed = nanoseconds(Int64(c.tv_sec), Int64(c.tv_nsec))
    else { return nil }
    return FileStamp(
      device: UInt64(status.st_dev), inode: UInt64(status.st_ino), size: Int64(status.st_size),
      modified: modified, changed: changed)
  }

  /// `seconds · 10⁹ + nanoseconds`, or nil past the year 2262.
  static func nanoseconds(_ seconds: Int64, _ nanoseconds: Int64) -> Int64? {
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    let (sum, overflow2) = scaled.addingReportingOverflow(nanoseconds)
    return overflow || overflow2 ? nil : sum
  }

  /// The wall clock now, in the same unit.
  static func now() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return nanoseconds(Int64(time.tv_sec), Int64(time.tv_nsec)) ?? Int64.max
  }
}

/// A persistent cache of `ModelHashes`, so that a file's SHA-256 (about 1 s per GB and core) is
/// computed once, not on every merge or `info --hash` (A1111 keeps such a cache too).
///
/// Entries are keyed by the file's canonical (`realpath`) path and served only while the file's
/// `FileStamp` (device, inode, size, mtime and ctime in nanoseconds) is the one recorded when the
/// hash was computed; an entry that no longer matches is ignored and replaced. As in git's
/// "racily clean" rule, a hash is not recorded when the file changed less than `racyMargin`
/// seconds before hashing began: a same-size rewrite within one timestamp tick would otherwise
/// keep the old stamp.
///
/// The cache is one small JSON file (at most `maxEntries` entries, the most recently stored
/// kept). It is never required: a missing, unreadable, oversized or corrupt file is treated as
/// empty, and a failed write is skipped with a one-line warning. Writes re-read the file, add
/// their entries to what is there (another process may have written meanwhile: the last writer
/// wins per entry) and replace it atomically, so readers never see a partial file.
public final class HashCache: @unchecked Sendable {
  /// The cache file.
  public let path: String
  /// Seconds a file must have been unchanged before hashing began for its hash to be recorded.
  public let racyMargin: Double
  /// The most entries the file keeps.
  public static let maxEntries = 1000
  /// A cache file larger than this is ignored (and replaced on the next write).
  public static let maxFileBytes = 16 << 20
  static let format = "rouwei-ckpt hash cache"

  private let lock = NSLock()
  private var snapshot: [String: Entry]?
  private var hitCount = 0
  private var storeCount = 0
  nonisolated(unsafe) private static var warned = false
  private static let warnLock = NSLock()

  /// One cached file.
  struct Entry: Codable, Equatable {
    var stamp: FileStamp
    var hashes: ModelHashes
    /// Where the data section began when `dataSHA256` was computed; nil when it was not.
    var dataOffset: Int?
    /// When the entry was stored (nanoseconds since the epoch): the newest entries are kept.
    var storedAt: Int64
  }

  /// The file's layout on disk.
  struct Document: Codable {
    var format: String
    var version: Int
    var entries: [String: Entry]
  }

  /// A cache stored at `path` (made absolute against the working directory). `racyMargin` is
  /// clamped to 0…86,400 s.
  public init(path: String, racyMargin: Double = 2) {
    self.path =
      path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    self.racyMargin = racyMargin.isFinite ? min(max(racyMargin, 0), 86_400) : 2
  }

  /// The cache the environment asks for: `ROUWEI_HASH_CACHE=off` disables it, another non-empty
  /// value is the file's path; otherwise `$XDG_CACHE_HOME/rouwei-ckpt/hashes.json`, else
  /// `~/.cache/rouwei-ckpt/hashes.json`. Nil when disabled or no location can be found.
  public static func fromEnvironment(
    _ environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> HashCache? {
    if let setting = environment["ROUWEI_HASH_CACHE"], !setting.isEmpty {
      return ["off", "none", "0", "false", "no"].contains(setting.lowercased()) ? nil : HashCache(path: setting)
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
      return HashCache(path: xdg + "/rouwei-ckpt/hashes.json")
    }
    guard let home = environment["HOME"], home.hasPrefix("/") else { return nil }
    return HashCache(path: home + "/.cache/rouwei-ckpt/hashes.json")
  }

  /// Hashes served from this cache so far (in this process).
  public var hits: Int { locked { hitCount } }
  /// Entries recorded so far (in this process).
  public var stores: Int { locked { storeCount } }

  /// Where a file stands with the cache: its canonical path and stamp, taken before hashing.
  public struct Ticket: Sendable, Equatable {
    /// The canonical path (the key).
    public let key: String
    /// The file's stamp before hashing.
    public let stamp: FileStamp
    /// When the ticket was taken (nanoseconds since the epoch).
    let takenAt: Int64
  }

  /// The ticket of the file behind `mapping`, or nil when its path no longer leads to the mapped
  /// file (renamed over, shrunk or grown since it was mapped): such a file is not cached.
  public func ticket(for mapping: MappedFile) -> Ticket? {
    guard let key = HashCache.canonicalPath(mapping.path), let stamp = FileStamp.of(path: key),
      stamp.device == mapping.identity.device, stamp.inode == mapping.identity.inode,
      stamp.size == Int64(mapping.size)
    else { return nil }
    return Ticket(key: key, stamp: stamp, takenAt: FileStamp.now())
  }

  /// The cached hashes of `mapping`'s file, if an entry matches its current stamp and holds
  /// what was asked for: with `dataOffset`, the data-section digest (AutoV3) computed at that
  /// offset. Without it, the data fields are left out, as a fresh computation would.
  public func cachedHashes(of mapping: MappedFile, dataOffset: Int?) -> ModelHashes? {
    guard let ticket = ticket(for: mapping) else { return nil }
    return cachedHashes(for: ticket, dataOffset: dataOffset)
  }

  /// The cached hashes for `ticket` (see `cachedHashes(of:dataOffset:)`).
  public func cachedHashes(for ticket: Ticket, dataOffset: Int?) -> ModelHashes? {
    locked {
      if snapshot == nil { snapshot = load() }
      guard let entry = snapshot?[ticket.key], entry.stamp == ticket.stamp else { return nil }
      var hashes = entry.hashes
      if let dataOffset {
        guard entry.dataOffset == dataOffset, hashes.dataSHA256 != nil else { return nil }
      } else {
        hashes.autoV3 = nil
        hashes.dataSHA256 = nil
      }
      hitCount += 1
      return hashes
    }
  }

  /// Records `hashes`, computed from the whole file described by `ticket` (`dataOffset`: where
  /// the data section began, when `dataSHA256` was computed). Skipped when the file has changed
  /// since the ticket was taken, or changed too shortly before it (see `racyMargin`). Returns
  /// whether the entry was written.
  @discardableResult
  public func store(_ hashes: ModelHashes, dataOffset: Int?, for ticket: Ticket) -> Bool {
    guard FileStamp.of(path: ticket.key) == ticket.stamp,
      max(ticket.stamp.modified, ticket.stamp.changed) < ticket.takenAt - Int64(racyMargin * 1e9)
    else { return false }
    var entry = Entry(
      stamp: ticket.stamp, hashes: hashes, dataOffset: hashes.dataSHA256 == nil ? nil : dataOffset,
      storedAt: FileStamp.now())
    guard HashCache.isValid(entry) else { return false }
    return locked {
      guard let lockFD = HashCache.lockedDirectory(for: path) else { return false }
      defer { if lockFD >= 0 { close(lockFD) } }
      // Read what is on disk now: another process may have added entries since we loaded.
      var entries = load()
      // A richer entry for the same file version (with the AutoV3 digest) is kept.
      if let old = entries[ticket.key], old.stamp == entry.stamp, old.hashes.sha256 == hashes.sha256,
        entry.hashes.dataSHA256 == nil, old.hashes.dataSHA256 != nil
      {
        entry.hashes = old.hashes
        entry.dataOffset = old.dataOffset
      }
      entries[ticket.key] = entry
      entries = HashCache.newest(entries, limit: HashCache.maxEntries)
      snapshot = entries
      guard save(entries) else { return false }
      storeCount += 1
      return true
    }
  }

  // MARK: - File

  /// The entries on disk: empty when the file is missing, too large, unreadable or malformed;
  /// invalid entries are dropped and at most `maxEntries` kept.
  func load() -> [String: Entry] {
    guard let data = HashCache.readBounded(path, limit: HashCache.maxFileBytes),
      let document = try? JSONDecoder().decode(Document.self, from: data),
      document.format == HashCache.format, document.version == 1
    else { return [:] }
    let valid = document.entries.filter { HashCache.isValidKey($0.key) && HashCache.isValid($0.value) }
    return HashCache.newest(valid, limit: HashCache.maxEntries)
  }

  /// Writes `entries` atomically; false (after a one-time warning) when that fails.
  private func save(_ entries: [String: Entry]) -> Bool {
    do {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
      let data = try encoder.encode(Document(format: HashCache.format, version: 1, entries: entries))
      let file = try AtomicFile(destination: path)
      try file.write([UInt8](data))
      try file.commit()
      return true
    } catch {
      HashCache.warnOnce("hash cache \(path) not saved (\(error)); set ROUWEI_HASH_CACHE=off to stop using it")
      return false
    }
  }

  /// The newest `limit` entries by `storedAt`.
  static func newest(_ entries: [String: Entry], limit: Int) -> [String: Entry] {
    guard entries.count > limit else { return entries }
    let kept = entries.sorted { $0.value.storedAt > $1.value.storedAt }.prefix(limit)
    return Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
  }

  /// Whether an entry is well formed: lowercase hex digests of the right lengths, short hashes
  /// that are prefixes of the full ones, and a data offset exactly when a data digest is present.
  static func isValid(_ entry: Entry) -> Bool {
    let h = entry.hashes
    guard isHex(h.sha256, count: 64), h.autoV2 == String(h.sha256.prefix(10)), isHex(h.autoV1, count: 8),
      entry.stamp.size >= 0
    else { return false }
    switch (h.dataSHA256, h.autoV3, entry.dataOffset) {
    case (nil, nil, nil):
      return true
    case (let data?, let v3?, let offset?):
      return isHex(data, count: 64) && v3 == String(data.prefix(12)) && offset >= 0
        && Int64(offset) <= entry.stamp.size
    default:
      return false
    }
  }

  /// Keys are absolute paths of sane length.
  static func isValidKey(_ key: String) -> Bool {
    key.hasPrefix("/") && key.utf8.count <= 4096 && !key.utf8.contains(0)
  }

  static func isHex(_ text: String, count: Int) -> Bool {
    text.utf8.count == count && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
  }

  /// The file's bytes if it is a regular file of at most `limit` bytes; nil otherwise.
  static func readBounded(_ path: String, limit: Int) -> Data? {
    // O_NONBLOCK: a FIFO planted at the cache path must not hang us.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var status = stat()
    guard fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, status.st_size <= limit else {
      return nil
    }
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while true {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0 && errno == EINTR { continue }
      guard count >= 0 else { return nil }
      if count == 0 { return data }
      data.append(contentsOf: buffer[0..<count])
      // The file may have grown since fstat.
      if data.count > limit { return nil }
    }
  }

  /// `realpath(path)`, or nil when it cannot be resolved.
  static func canonicalPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }

  /// Creates the cache file's directory (private to the user) when missing and takes the lock
  /// beside the file (see `lockFile`). Nil, after a one-time warning, when the directory cannot
  /// be made; otherwise the lock's descriptor to close (-1 when no lock could be had).
  static func lockedDirectory(for path: String) -> Int32? {
    let parent = (path as NSString).deletingLastPathComponent
    do {
      if !parent.isEmpty, !FileManager.default.fileExists(atPath: parent) {
        try FileManager.default.createDirectory(
          atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
      }
    } catch {
      warnOnce("hash cache \(path) not saved (\(error)); set ROUWEI_HASH_CACHE=off to stop using it")
      return nil
    }
    return lockFile(path + ".lock")
  }

  /// An exclusive lock on `path` (created if needed), so two processes do not interleave their
  /// read-merge-write; waits at most about a second, then goes on without it (the write is
  /// atomic either way, only an entry of the other process could be lost). Returns the
  /// descriptor to close, or -1.
  static func lockFile(_ path: String) -> Int32 {
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o600)
    guard fd >= 0 else { return -1 }
    for _ in 0..<100 {
      if flock(fd, LOCK_EX | LOCK_NB) == 0 { return fd }
      usleep(10_000)
    }
    return fd
  }

  static func warnOnce(_ message: String) {
    warnLock.lock()
    defer { warnLock.unlock() }
    guard !warned else { return }
    warned = true
    FileHandle.standardError.write(Data(("rouwei-ckpt: warning: " + message + "\n").utf8))
  }

  private func locked<T>(_ body: () -> T) -> T {
    lock.lock()
    defer { lock.unlock() }
    return body()
  }
}
