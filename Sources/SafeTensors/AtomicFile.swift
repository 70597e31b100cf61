import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A file written under a temporary name beside its destination and renamed into place only when
/// complete and flushed to disk. If anything fails, the temporary file is removed and the
/// destination keeps whatever it held before: a reader never sees half a file.
public final class AtomicFile {
  /// The final path.
  public let destination: String
  /// The temporary path being written.
  public let temporaryPath: String
  private var fd: Int32
  private var buffer: UnsafeMutableRawBufferPointer
  private var buffered = 0
  private var finished = false
  /// Bytes written so far (buffered bytes included).
  public private(set) var bytesWritten: UInt64 = 0

  /// Hooks for fault-injection tests: each may return an errno to make that step fail.
  public struct Faults: Sendable {
    public var write: (@Sendable (_ bytesSoFar: UInt64) -> Int32?)?
    public var fsync: (@Sendable () -> Int32?)?
    public var rename: (@Sendable () -> Int32?)?
    public init() {}
  }
  // Faults for fault-injection tests, keyed by destination path so parallel tests stay independent.
  nonisolated(unsafe) private static var faultsByDestination: [String: Faults] = [:]
  private static let faultLock = NSLock()

  /// Makes writes to `destination` fail as `faults` says (tests only); nil removes the injection.
  public static func injectFaults(_ faults: Faults?, forDestination destination: String) {
    faultLock.lock()
    defer { faultLock.unlock() }
    faultsByDestination[destination] = faults
  }

  private lazy var faults: Faults = {
    AtomicFile.faultLock.lock()
    defer { AtomicFile.faultLock.unlock() }
    return AtomicFile.faultsByDestination[destination] ?? Faults()
  }()

  /// Creates the temporary file beside `destination`. Refuses when `destination` is the same file
  /// as any of `inputs` (by device and inode, so links and other spellings are caught too).
  public init(destination: String, inputs: [String] = []) throws {
    self.destination = destination
    if let target = FileIdentity.of(path: destination) {
      for input in inputs where FileIdentity.of(path: input) == target {
        throw SafeTensorsError.outputIsInput(output: destination, input: input)
      }
    }
    let slash = destination.lastIndex(of: "/")
    let directory = slash.map { String(destination[..<$0]) } ?? "."
    let name = slash.map { String(destination[destination.index(after: $0)...]) } ?? destination
    var random = SystemRandomNumberGenerator()
    let suffix = String(random.next() & 0xFFFF_FFFF, radix: 16)
    temporaryPath = (directory.isEmpty ? "" : directory + "/") + ".\(name).\(getpid()).\(suffix).partial"
    fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw SafeTensorsError.io(file: destination, operation: "create temporary file", errno: errno)
    }
    buffer = .allocate(byteCount: 8 << 20, alignment: 64)
    InterruptCleanup.register(temporaryPath)
  }

  deinit {
    if !finished { abandon() }
    buffer.deallocate()
  }

  /// Appends bytes.
  public func write(_ bytes: UnsafeRawBufferPointer) throws {
    guard let source = bytes.baseAddress, bytes.count > 0 else { return }
    if buffered + bytes.count <= buffer.count {
      (buffer.baseAddress! + buffered).copyMemory(from: source, byteCount: bytes.count)
      buffered += bytes.count
    } else {
      try flushBuffer()
      if bytes.count >= buffer.count {
        try writeAll(bytes)
      } else {
        buffer.baseAddress!.copyMemory(from: source, byteCount: bytes.count)
        buffered = bytes.count
      }
    }
    bytesWritten += UInt64(bytes.count)
  }

  /// Appends bytes from an array.
  public func write(_ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write($0) }
  }

  /// Replaces already-written bytes at `offset` (e.g. a header whose values were known only at the
  /// end). The range must lie inside what was written.
  public func overwrite(at offset: UInt64, with bytes: [UInt8]) throws {
    guard offset + UInt64(bytes.count) <= bytesWritten else {
      throw SafeTensorsError.invalidEntry(file: destination, tensor: "__header__", reason: "patch outside the written bytes")
    }
    try flushBuffer()
    var done = 0
    while done < bytes.count {
      let result = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done)) }
      if result < 0 {
        if errno == EINTR { continue }
        throw ioError("write")
      }
      done += result
    }
  }

  /// Flushes, fsyncs, renames into place and fsyncs the directory.
  public func commit() throws {
    do {
      try flushBuffer()
      if let code = faults.fsync?() { errno = code; throw ioError("fsync") }
      guard fsync(fd) == 0 else { throw ioError("fsync") }
      guard close(fd) == 0 else { fd = -1; throw ioError("close") }
      fd = -1
      if let code = faults.rename?() { errno = code; throw ioError("rename") }
      guard rename(temporaryPath, destination) == 0 else { throw ioError("rename") }
    } catch {
      abandon()
      throw error
    }
    finished = true
    InterruptCleanup.unregister(temporaryPath)
    let slash = destination.lastIndex(of: "/")
    let directory = slash.map { String(destination[..<$0]) } ?? "."
    let dirfd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_CLOEXEC)
    if dirfd >= 0 {
      _ = fsync(dirfd)
      close(dirfd)
    }
  }

  /// Closes and removes the temporary file; the destination is untouched.
  public func abandon() {
    if fd >= 0 {
      close(fd)
      fd = -1
    }
    unlink(temporaryPath)
    InterruptCleanup.unregister(temporaryPath)
    finished = true
  }

  private func flushBuffer() throws {
    guard buffered > 0 else { return }
    try writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<buffered]))
    buffered = 0
  }

  private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
    var offset = 0
    while offset < bytes.count {
      if let code = faults.write?(bytesWritten) {
        errno = code
        throw ioError("write")
      }
      let result = Glibc.write(fd, bytes.baseAddress! + offset, min(bytes.count - offset, 1 << 30))
      if result < 0 {
        if errno == EINTR { continue }
        throw ioError("write")
      }
      if result == 0 { errno = EIO; throw ioError("write") }
      offset += result
    }
  }

  private func ioError(_ operation: String) -> SafeTensorsError {
    .io(file: destination, operation: operation, errno: errno)
  }
}

/// Removes in-progress temporary files when the process is interrupted (SIGINT, SIGTERM, SIGHUP),
/// so Ctrl-C never leaves a `.partial` file behind.
public enum InterruptCleanup {
  // Fixed storage the signal handler can read without allocating or locking.
  private static let slotCount = 16
  private static let slotSize = 4096
  nonisolated(unsafe) private static let slots: UnsafeMutablePointer<CChar> = {
    let memory = UnsafeMutablePointer<CChar>.allocate(capacity: slotCount * slotSize)
    memory.initialize(repeating: 0, count: slotCount * slotSize)
    return memory
  }()
  nonisolated(unsafe) private static var installed = false
  private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
    let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    return mutex
  }()

  /// Installs the signal handlers (once per process).
  public static func install() {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    guard !installed else { return }
    installed = true
    _ = slots
    for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
      signal(signalNumber) { received in
        for slot in 0..<InterruptCleanup.slotCount {
          let path = InterruptCleanup.slots + slot * InterruptCleanup.slotSize
          if path.pointee != 0 { unlink(path) }
        }
        _exit(128 + received)
      }
    }
  }

  static func register(_ path: String) {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    let utf8 = Array(path.utf8)
    guard utf8.count < slotSize else { return }
    for slot in 0..<slotCount {
      let target = slots + slot * slotSize
      if target.pointee == 0 {
        utf8.withUnsafeBufferPointer { source in
          for (index, byte) in source.enumerated() { target[index] = CChar(bitPattern: byte) }
          target[utf8.count] = 0
        }
        return
      }
    }
  }

  static func unregister(_ path: String) {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    for slot in 0..<slotCount {
      let target = slots + slot * slotSize
      if target.pointee != 0, String(cString: target) == path {
        target.pointee = 0
        return
      }
    }
  }
}
