#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A read-only memory map of a whole file. Pages are loaded lazily by the kernel, so mapping a
/// 7 GB checkpoint costs nothing until its bytes are touched, and touched pages can be dropped
/// again under memory pressure: resident memory stays bounded by what is being worked on.
///
/// A map is only as stable as the file under it: if another program truncates the file while we
/// read it, touching a page past the new end raises SIGBUS, which would kill the process. Every
/// map is therefore registered with `MapGuard` (Linux), whose SIGBUS handler puts zero pages
/// where the lost ones were and marks the map as damaged; `checkIntact()` then reports the damage
/// as a typed error, and the writer refuses to commit an output made from a damaged input.
public final class MappedFile: @unchecked Sendable {
  /// The path the file was opened with (used in every error message).
  public let path: String
  /// The file's size in bytes when it was mapped.
  public let size: Int
  /// Device and inode, to recognise the same file under another name.
  public let identity: FileIdentity
  private let base: UnsafeRawPointer?
  // Kept open so `checkIntact` can re-stat the very file that is mapped, even if the path has
  // since been renamed over.
  private let fd: Int32
  private let guardSlot: Int?

  /// Maps `path` read-only.
  public init(path: String) throws {
    self.path = path
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw SafeTensorsError.io(file: path, operation: "open", errno: errno) }
    var status = stat()
    guard fstat(fd, &status) == 0 else {
      let code = errno
      close(fd)
      throw SafeTensorsError.io(file: path, operation: "stat", errno: code)
    }
    guard (status.st_mode & S_IFMT) == S_IFREG else {
      close(fd)
      throw SafeTensorsError.notRegularFile(file: path, kind: MappedFile.kind(of: status.st_mode))
    }
    guard status.st_size >= 0, UInt64(status.st_size) <= UInt64(Int.max / 2) else {
      close(fd)
      throw SafeTensorsError.io(file: path, operation: "map (file too large)", errno: EFBIG)
    }
    size = Int(status.st_size)
    identity = FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    self.fd = fd
    if size == 0 {
      base = nil
      guardSlot = nil
      return
    }
    let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
    guard let pointer, pointer != MAP_FAILED else {
      let code = errno
      close(fd)
      throw SafeTensorsError.io(file: path, operation: "mmap", errno: code)
    }
    base = UnsafeRawPointer(pointer)
    guardSlot = MapGuard.register(base: UnsafeRawPointer(pointer), length: size)
    if let guardSlot { MapGuard.attach(guardSlot, to: self) }
  }

  deinit {
    if let guardSlot { MapGuard.unregister(guardSlot) }
    if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    close(fd)
  }

  /// The bytes `[offset, offset + count)`.
  ///
  /// Precondition: the range lies inside the file. Every range `SafeTensorsFile` hands out comes
  /// from a validated header, so input data cannot reach the precondition; ranges computed by a
  /// caller from anything else should go through `checkedBytes`.
  public func bytes(offset: Int, count: Int) -> UnsafeRawBufferPointer {
    precondition(
      offset >= 0 && count >= 0 && offset <= size && count <= size - offset,
      "range \(offset)+\(count) outside the \(size)-byte map of \(path)")
    guard let base, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: base + offset, count: count)
  }

  /// The bytes `[offset, offset + count)`, or a typed error when the range is not inside the file.
  public func checkedBytes(offset: Int, count: Int) throws -> UnsafeRawBufferPointer {
    guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
      throw SafeTensorsError.io(
        file: path, operation: "read of \(count) bytes at \(offset) (past the end of the file)",
        errno: EINVAL)
    }
    return bytes(offset: offset, count: count)
  }

  /// Tells the kernel a range will be read front to back soon (read-ahead), or is done with.
  /// Out-of-range requests are clipped to the map; this never fails.
  public func advise(offset: Int, count: Int, willNeed: Bool) {
    guard let base, count > 0, offset >= 0, offset < size else { return }
    let end = count > size - offset ? size : offset + count
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = offset / page * page
    _ = madvise(
      UnsafeMutableRawPointer(mutating: base + start), end - start,
      willNeed ? Int32(MADV_WILLNEED) : Int32(MADV_DONTNEED))
  }

  /// Whether a SIGBUS hit this map (its file shrank, or a page could not be read): the bytes read
  /// since may be zeros instead of the file's data.
  public var isDamaged: Bool { guardSlot.map(MapGuard.wasHit) ?? false }

  /// Throws `SafeTensorsError.fileChanged` when the file behind the map is no longer what was
  /// mapped: a page fault could not be served (SIGBUS) or the file is now shorter. Call it after
  /// reading anything whose correctness matters (hashes, copies); it costs one `fstat`.
  public func checkIntact() throws {
    if isDamaged {
      throw SafeTensorsError.fileChanged(
        file: path,
        reason: "part of it could not be read while mapped (it was truncated by another program, or the device failed)")
    }
    var status = stat()
    if fstat(fd, &status) == 0, status.st_size < size {
      throw SafeTensorsError.fileChanged(
        file: path, reason: "it shrank from \(size) to \(status.st_size) bytes while it was being read")
    }
  }

  /// Checks every live map of one of the files `paths` names (by path or by device and inode),
  /// or every live map when `paths` is nil. Writers call it before they commit an output made
  /// from those files.
  public static func checkIntact(paths: [String]? = nil) throws {
    let identities = Set((paths ?? []).compactMap { FileIdentity.of(path: $0) })
    for mapping in MapGuard.liveMappings() {
      if let paths, !paths.contains(mapping.path), !identities.contains(mapping.identity) { continue }
      try mapping.checkIntact()
    }
  }

  /// Paths of all maps of this process, open or closed, whose reads were served with zero pages
  /// because their file shrank or failed (see `MapGuard`). A command that read from a map should
  /// not report success while this is non-empty; the CLI checks it before exiting.
  public static var damagedPaths: [String] { MapGuard.damagedPaths() }

  private static func kind(of mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a pipe"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFSOCK: return "a socket"
    default: return "not a regular file"
    }
  }
}

/// Device and inode of a file: the same pair means the same file, whatever the path.
public struct FileIdentity: Hashable, Sendable {
  public let device: UInt64
  public let inode: UInt64

  /// The identity of the file at `path`, or nil when it does not exist.
  public static func of(path: String) -> FileIdentity? {
    var status = stat()
    guard stat(path, &status) == 0 else { return nil }
    return FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
  }
}
