#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A read-only memory map of a whole file. Pages are loaded lazily by the kernel, so mapping a
/// 7 GB checkpoint costs nothing until its bytes are touched, and touched pages can be dropped
/// again under memory pressure: resident memory stays bounded by what is being worked on.
public final class MappedFile: @unchecked Sendable {
  /// The path the file was opened with (used in every error message).
  public let path: String
  /// The file's size in bytes when it was mapped.
  public let size: Int
  /// Device and inode, to recognise the same file under another name.
  public let identity: FileIdentity
  private let base: UnsafeRawPointer?

  /// Maps `path` read-only.
  public init(path: String) throws {
    self.path = path
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SafeTensorsError.io(file: path, operation: "open", errno: errno) }
    defer { close(fd) }
    var status = stat()
    guard fstat(fd, &status) == 0 else {
      throw SafeTensorsError.io(file: path, operation: "stat", errno: errno)
    }
    guard (status.st_mode & S_IFMT) == S_IFREG else {
      throw SafeTensorsError.io(file: path, operation: "open (not a regular file)", errno: EISDIR)
    }
    size = Int(status.st_size)
    identity = FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    if size == 0 {
      base = nil
      return
    }
    let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
    guard let pointer, pointer != MAP_FAILED else {
      throw SafeTensorsError.io(file: path, operation: "mmap", errno: errno)
    }
    base = UnsafeRawPointer(pointer)
  }

  deinit {
    if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
  }

  /// The bytes `[offset, offset + count)`; the caller has checked the range.
  public func bytes(offset: Int, count: Int) -> UnsafeRawBufferPointer {
    guard let base, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    precondition(offset >= 0 && count >= 0 && offset + count <= size, "range outside mapped file")
    return UnsafeRawBufferPointer(start: base + offset, count: count)
  }

  /// Tells the kernel a range will be read front to back soon (read-ahead), or is done with.
  public func advise(offset: Int, count: Int, willNeed: Bool) {
    guard let base, count > 0 else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = offset / page * page
    let length = offset + count - start
    _ = madvise(UnsafeMutableRawPointer(mutating: base + start), length,
                willNeed ? Int32(MADV_WILLNEED) : Int32(MADV_DONTNEED))
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
