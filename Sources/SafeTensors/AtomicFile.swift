import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A file written under a temporary name beside its destination and renamed into place only when
/// complete and flushed to disk. If anything fails, the temporary file is removed and the
/// destination keeps whatever it held before: a reader never sees half a file.
///
/// The temporary file is `.NAME.PID.RANDOM.partial` in the destination's directory. SIGINT, SIGTERM
/// and SIGHUP remove it (`InterruptCleanup`); SIGKILL cannot be caught, so the next `AtomicFile` for
/// the same destination removes partial files whose writing process no longer exists.
public final class AtomicFile {
  /// The final path.
  public let destination: String
  /// The temporary path being written.
  public let temporaryPath: String
  private var fd: Int32
  /// The staging buffer being filled.
  private var buffer: UnsafeMutableRawBufferPointer
  /// Every staging buffer, and those neither filling nor being written (under `state`).
  private let staging: [UnsafeMutableRawBufferPointer]
  private var spares: [UnsafeMutableRawBufferPointer]
  private var buffered = 0
  /// Background writes queued and not finished (under `state`).
  private var running = 0
  // Full staging buffers are written on a background queue at their own offsets, so producers
  // compute the next bytes while the kernel copies (or throttles on) the previous ones. Buffered
  // writes go one at a time (two staging buffers); direct ones up to `directWritesInFlight` at once
  // (a single outstanding direct write left this machine's disk a third slower than writeback).
  // `inFlight` is signalled when every queued write has finished; an error is reported by the next call.
  private let writer = DispatchQueue(
    label: "rouwei.atomic-file.writer", qos: .userInitiated, attributes: .concurrent)
  private let inFlight = DispatchGroup()
  /// Guards `spares`, `running`, `backgroundError`, `direct` and `writebackStart` (written from the
  /// writer's threads).
  private let state = NSCondition()
  private var backgroundError: Error?
  // Bytes already handed to the kernel's writeback (Linux: sync_file_range), so the final fsync
  // waits for the tail only, as `cat > file; sync` would not.
  private var writebackStart = 0
  private var finished = false
  // Where the staging buffer's bytes go: everything before is written or handed to the writer.
  private var fileSize = 0
  // Whether writes bypass the page cache (O_DIRECT): then only whole, aligned staging buffers are
  // written until the end, when the flag is cleared for the tail and any header patch.
  private var directFlag = false
  var direct: Bool {
    state.lock()
    defer { state.unlock() }
    return directFlag
  }
  /// Direct writes the background writer keeps in flight at once.
  static let directWritesInFlight = 3
  private let faults: Faults
  /// Bytes written so far (buffered bytes included).
  public private(set) var bytesWritten: UInt64 = 0

  /// Hooks for fault-injection tests. `write`, `fsync` and `rename` may return an errno to make that
  /// step fail (an injected EINTR is retried like a real one); `shortWrite` may cap how many bytes
  /// one `write(2)` call accepts, as a signal or a network file system can.
  public struct Faults: Sendable {
    /// Called before each write(2) with the size the file would reach; e.g. return ENOSPC past a
    /// capacity to emulate a full disk.
    public var write: (@Sendable (_ fileSizeAfter: UInt64) -> Int32?)?
    public var shortWrite: (@Sendable (_ requested: Int) -> Int?)?
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

  /// Creates the temporary file beside `destination`. Refuses when `destination` is the same file
  /// as any of `inputs` (by device and inode, so links and other spellings are caught too), and
  /// when it is a directory. `directIO` (Linux) writes past the page cache where the file system
  /// allows it: no kernel copy and no dirty pages to reclaim (for a 7 GB file about 5 s of system
  /// time less than buffered writes and a sync), at the cost of the bytes not staying cached.
  public init(destination: String, inputs: [String] = [], directIO: Bool = false) throws {
    self.destination = destination
    AtomicFile.faultLock.lock()
    faults = AtomicFile.faultsByDestination[destination] ?? Faults()
    AtomicFile.faultLock.unlock()
    var status = stat()
    if stat(destination, &status) == 0 {
      let target = FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
      for input in inputs where FileIdentity.of(path: input) == target {
        throw SafeTensorsError.outputIsInput(output: destination, input: input)
      }
      if (status.st_mode & S_IFMT) == S_IFDIR {
        throw SafeTensorsError.io(file: destination, operation: "write over a directory", errno: EISDIR)
      }
    }
    let (prefix, stem) = AtomicFile.temporaryNameParts(destination)
    AtomicFile.removeStalePartials(prefix: prefix, stem: stem)
    var random = SystemRandomNumberGenerator()
    let suffix = String(random.next() & 0xFFFF_FFFF, radix: 16)
    temporaryPath = prefix + stem + "\(getpid()).\(suffix).partial"
    // Registered before it exists, so a signal at any moment after creation removes it.
    InterruptCleanup.register(temporaryPath)
    fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      let code = errno
      InterruptCleanup.unregister(temporaryPath)
      throw SafeTensorsError.io(file: destination, operation: "create temporary file", errno: code)
    }
    var direct = false
    #if os(Linux)
      if directIO {
        let flags = fcntl(fd, F_GETFL)
        direct = flags >= 0 && fcntl(fd, F_SETFL, flags | AtomicFile.directFlag) == 0
      }
    #endif
    directFlag = direct
    // Page-aligned, as direct I/O requires.
    staging = (0...(direct ? AtomicFile.directWritesInFlight : 1)).map { _ in
      .allocate(byteCount: 8 << 20, alignment: 4096)
    }
    buffer = staging[0]
    spares = Array(staging.dropFirst())
  }

  #if os(Linux)
    /// O_DIRECT (not exported to Swift; its value differs between architectures).
    #if arch(arm64) || arch(arm)
      static let directFlag: Int32 = 0o200000
    #else
      static let directFlag: Int32 = 0o40000
    #endif
  #endif

  /// Back to buffered writes (for a tail or patch that is not a whole aligned buffer, or after a
  /// direct write the file system refused).
  private func leaveDirect() {
    state.lock()
    defer { state.unlock() }
    guard directFlag else { return }
    directFlag = false
    #if os(Linux)
      let flags = fcntl(fd, F_GETFL)
      if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~AtomicFile.directFlag) }
    #endif
  }

  deinit {
    if !finished { abandon() }
    inFlight.wait()
    for memory in staging { memory.deallocate() }
  }

  /// Appends bytes.
  public func write(_ bytes: UnsafeRawBufferPointer) throws {
    guard let source = bytes.baseAddress, bytes.count > 0 else { return }
    guard !finished, let staging = buffer.baseAddress else {
      throw SafeTensorsError.io(file: destination, operation: "write after commit or abandon", errno: EBADF)
    }
    if buffered + bytes.count <= buffer.count {
      (staging + buffered).copyMemory(from: source, byteCount: bytes.count)
      buffered += bytes.count
    } else if bytes.count >= buffer.count && !direct {
      // Large pieces (tensors copied from a map) go straight to write(2), synchronously: a map
      // whose file shrank then fails with EFAULT instead of raising SIGBUS in another thread.
      try flushBuffer()
      try drain()
      try writeAll(bytes, at: fileSize)
      fileSize += bytes.count
    } else {
      // Top the staging buffer up, hand it to the background writer, go on in the other one.
      var offset = 0
      while offset < bytes.count {
        guard let into = buffer.baseAddress else { return }
        let n = min(buffer.count - buffered, bytes.count - offset)
        (into + buffered).copyMemory(from: source + offset, byteCount: n)
        buffered += n
        offset += n
        if buffered == buffer.count { try flushBufferInBackground() }
      }
    }
    bytesWritten += UInt64(bytes.count)
  }

  /// Appends bytes that stay valid until `release` is called: at once when they were copied, or
  /// when the background write of them has finished. In direct mode, bytes that lie at the same
  /// offset modulo the page size in memory as in the file are written from where they are: their
  /// whole pages go to the disk without passing through a staging buffer (the copy cost a bake 10 %
  /// of its CPU time); the partial pages at either end are staged as usual.
  public func write(_ bytes: UnsafeRawBufferPointer, release: @escaping @Sendable () -> Void) throws {
    var handedOver = false
    defer { if !handedOver { release() } }
    let page = AtomicFile.pageSize
    let position = fileSize + buffered
    guard let base = bytes.baseAddress, bytes.count >= 2 * page, direct,
      (Int(bitPattern: base) - position) & (page - 1) == 0
    else { return try write(bytes) }
    let head = (page - position % page) % page
    try write(UnsafeRawBufferPointer(rebasing: bytes[0..<head]))
    // The staging buffer now ends on a page boundary, as does the file before it: both are
    // whole pages, written in order.
    try flushBufferInBackground()
    let middle = (bytes.count - head) / page * page
    try submit(UnsafeRawBufferPointer(rebasing: bytes[head..<(head + middle)]), release: release)
    handedOver = true
    bytesWritten += UInt64(middle)
    try write(UnsafeRawBufferPointer(rebasing: bytes[(head + middle)...]))
  }

  /// The alignment direct writes need of the file offset, the length and the memory.
  public static let pageSize = 4096

  /// Appends bytes from an array.
  public func write(_ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write($0) }
  }

  /// Replaces already-written bytes at `offset` (e.g. a header whose values were known only at the
  /// end). The range must lie inside what was written.
  public func overwrite(at offset: UInt64, with bytes: [UInt8]) throws {
    let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
    guard !finished, !overflow, end <= bytesWritten else {
      throw SafeTensorsError.invalidEntry(
        file: destination, tensor: "__header__", reason: "patch outside the written bytes")
    }
    try flushBuffer()
    try drain()
    var done = 0
    while done < bytes.count {
      let result = bytes.withUnsafeBytes { buffer in
        buffer.baseAddress.map { pwrite(fd, $0 + done, bytes.count - done, off_t(offset) + off_t(done)) } ?? 0
      }
      if result < 0 {
        if errno == EINTR { continue }
        throw ioError("write")
      }
      if result == 0 { errno = EIO; throw ioError("write") }
      done += result
    }
  }

  /// Flushes, fsyncs, renames into place and fsyncs the directory.
  public func commit() throws {
    guard !finished else {
      throw SafeTensorsError.io(file: destination, operation: "commit after commit or abandon", errno: EBADF)
    }
    do {
      try flushBuffer()
      try drain()
      if let code = faults.fsync?() { errno = code; throw ioError("fsync") }
      guard fsync(fd) == 0 else { throw ioError("fsync") }
      let closed = close(fd)
      fd = -1
      guard closed == 0 else { throw ioError("close") }
      if let code = faults.rename?() { errno = code; throw ioError("rename") }
      guard rename(temporaryPath, destination) == 0 else { throw ioError("rename") }
    } catch {
      abandon()
      throw error
    }
    finished = true
    InterruptCleanup.unregister(temporaryPath)
    // Make the rename itself durable; a failure here cannot undo it, so it is not reported.
    let (prefix, _) = AtomicFile.temporaryNameParts(destination)
    let dirfd = open(prefix.isEmpty ? "." : prefix, O_RDONLY | O_CLOEXEC)
    if dirfd >= 0 {
      _ = fsync(dirfd)
      close(dirfd)
    }
  }

  /// Closes and removes the temporary file; the destination is untouched.
  public func abandon() {
    inFlight.wait()
    if fd >= 0 {
      close(fd)
      fd = -1
    }
    if !finished { unlink(temporaryPath) }
    InterruptCleanup.unregister(temporaryPath)
    finished = true
  }

  /// Writes the staging buffer now (after any background write), on this thread.
  private func flushBuffer() throws {
    try drain()
    // A partial buffer (the tail) or a patch is not a whole aligned block.
    leaveDirect()
    guard buffered > 0 else { return }
    try writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<buffered]), at: fileSize)
    fileSize += buffered
    buffered = 0
  }

  /// Hands the staging buffer to the background writer and continues in a spare one (waiting for
  /// one to come back when all are being written).
  private func flushBufferInBackground() throws {
    guard buffered > 0 else { return }
    try submit(UnsafeRawBufferPointer(rebasing: buffer[0..<buffered]), staging: buffer)
    buffered = 0
  }

  /// Queues a write of `bytes` at the end of the file, once fewer than the allowed writes are in
  /// flight. For a `staging` buffer, waits for a spare one too, which becomes `buffer`, and makes
  /// `staging` a spare when written; `release` runs when the write is over, failed or not (not when
  /// this throws).
  private func submit(
    _ bytes: UnsafeRawBufferPointer, staging: UnsafeMutableRawBufferPointer? = nil,
    release: (@Sendable () -> Void)? = nil
  ) throws {
    state.lock()
    let limit = directFlag ? AtomicFile.directWritesInFlight : 1
    while (running >= limit || (staging != nil && spares.isEmpty)) && backgroundError == nil { state.wait() }
    if backgroundError != nil {
      state.unlock()
      try drain()  // rethrows it
      return try submit(bytes, staging: staging, release: release)
    }
    running += 1
    if staging != nil { buffer = spares.removeLast() }
    state.unlock()
    // The writer is the only user of the file's range and of `bytes` until it is done.
    struct Job: @unchecked Sendable {
      let file: AtomicFile
      let bytes: UnsafeRawBufferPointer
      let offset: Int
      let staging: UnsafeMutableRawBufferPointer?
    }
    let job = Job(file: self, bytes: bytes, offset: fileSize, staging: staging)
    fileSize += bytes.count
    writer.async(group: inFlight) {
      let file = job.file
      var failure: Error?
      do {
        try file.writeAll(job.bytes, at: job.offset)
      } catch {
        failure = error
      }
      file.state.lock()
      if let failure, file.backgroundError == nil { file.backgroundError = failure }
      if let staging = job.staging { file.spares.append(staging) }
      file.running -= 1
      file.state.broadcast()
      file.state.unlock()
      release?()
    }
  }

  /// Waits for the background writes, and rethrows their error (once; the file is then abandoned
  /// by the caller, as after any failed write).
  private func drain() throws {
    inFlight.wait()
    state.lock()
    defer { state.unlock() }
    if let error = backgroundError {
      backgroundError = nil
      throw error
    }
  }

  /// Writes `bytes` at file offset `start` (pwrite: background writes run side by side).
  private func writeAll(_ bytes: UnsafeRawBufferPointer, at start: Int) throws {
    guard let base = bytes.baseAddress else { return }
    var done = 0
    while done < bytes.count {
      // Pieces of 256 KiB: on Linux (ext4 with large folios, seen on 6.x kernels) write(2) calls
      // of 2 MiB and more get several times slower than small ones (`dd bs=8M` 8 s vs `bs=256k`
      // 0.9 s for 1.9 GB here), while 256 KiB costs nothing measurable in system calls.
      // Direct writes go whole (no page cache to slow down; the buffer is aligned).
      let isDirect = direct
      var request = isDirect ? bytes.count - done : min(bytes.count - done, AtomicFile.writePiece)
      if let limit = faults.shortWrite?(request) { request = max(1, min(request, limit)) }
      let result: Int
      if let code = faults.write?(UInt64(start + done + request)) {
        // An injected failure takes the same path as a real one (EINTR is retried).
        errno = code
        result = -1
      } else {
        result = pwrite(fd, base + done, request, off_t(start + done))
      }
      if result < 0 {
        if errno == EINTR { continue }
        // A file system that accepted O_DIRECT but refuses this write: go on buffered.
        if errno == EINVAL && isDirect {
          leaveDirect()
          continue
        }
        throw ioError("write")
      }
      if result == 0 { errno = EIO; throw ioError("write") }
      done += result
      // A short direct write leaves the offset unaligned: the rest goes buffered.
      if isDirect && (result % 4096 != 0) { leaveDirect() }
    }
    #if os(Linux)
      // Start writeback of what is written so far (asynchronous; errors surface at fsync).
      let end = start + bytes.count
      state.lock()
      if !directFlag && end - writebackStart >= 32 << 20 {
        _ = AtomicFile.syncFileRange?(fd, Int64(writebackStart), Int64(end - writebackStart), 2)  // _WRITE
        writebackStart = end
      }
      state.unlock()
    #endif
  }

  /// Bytes per write(2) call (see `writeAll`).
  static let writePiece = 256 << 10
  #if os(Linux)
    /// glibc's `sync_file_range` (declared only under _GNU_SOURCE, so looked up at run time).
    private static let syncFileRange: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32)? = {
      guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
      return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
    }()
  #endif

  private func ioError(_ operation: String) -> SafeTensorsError {
    .io(file: destination, operation: operation, errno: errno)
  }

  /// The directory prefix (with its slash, or empty) and the `.NAME.` stem of temporary names.
  /// Long names are shortened so the temporary name stays within NAME_MAX.
  static func temporaryNameParts(_ destination: String) -> (prefix: String, stem: String) {
    let bytes = Array(destination.utf8)
    let slash = bytes.lastIndex(of: UInt8(ascii: "/"))
    let prefix = slash.map { String(decoding: bytes[...$0], as: UTF8.self) } ?? ""
    var name = slash.map { Array(bytes[($0 + 1)...]) } ?? bytes
    if name.count > 200 {
      name = Array(name.prefix(200))
      // Do not cut a UTF-8 sequence in half: drop a trailing incomplete one.
      var start = name.count - 1
      while start > 0, name[start] & 0xC0 == 0x80, name.count - start < 4 { start -= 1 }
      let lead = name[start]
      let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2
      if start + length > name.count { name.removeSubrange(start...) }
    }
    return (prefix, "." + String(decoding: name, as: UTF8.self) + ".")
  }

  /// Removes `.NAME.PID.RANDOM.partial` files left by processes that no longer exist (a SIGKILL or
  /// power loss in the middle of a write). Files of live processes are left alone.
  static func removeStalePartials(prefix: String, stem: String) {
    let directory = prefix.isEmpty ? "." : prefix
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
    for name in names where name.hasPrefix(stem) && name.hasSuffix(".partial") {
      let middle = name.dropFirst(stem.count).dropLast(".partial".count).split(separator: ".")
      guard middle.count == 2, let pid = Int32(middle[0]), pid > 0, pid != getpid(),
        UInt32(middle[1], radix: 16) != nil
      else { continue }
      if kill(pid, 0) != 0 && errno == ESRCH {
        unlink(prefix + name)
      }
    }
  }
}

/// Removes in-progress temporary files when the process is interrupted (SIGINT, SIGTERM, SIGHUP),
/// so Ctrl-C never leaves a `.partial` file behind; the process then dies of the signal as it
/// would have without us (the shell sees 128 + signal).
public enum InterruptCleanup {
  // Fixed storage the signal handler can read without allocating or locking.
  private static let slotCount = 64
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

  /// Installs the signal handlers (once per process; call it from the main thread).
  ///
  /// A signal the parent set to be ignored stays ignored (`nohup`, background jobs), and the three
  /// signals are unblocked in the calling thread: a mask inherited from a parent that spawned us
  /// from a worker thread would otherwise leave Ctrl-C pending forever.
  public static func install() {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    guard !installed else { return }
    installed = true
    _ = slots
    var unblock = sigset_t()
    sigemptyset(&unblock)
    for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
      var current = sigaction()
      sigaction(signalNumber, nil, &current)
      if let handler = current.__sigaction_handler.sa_handler,
        unsafeBitCast(handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
      {
        continue
      }
      signal(signalNumber) { received in
        for slot in 0..<64 {
          let path = InterruptCleanup.slots + slot * 4096
          if path.pointee != 0 { unlink(path) }
        }
        // Die of the signal itself (it is blocked until this handler returns).
        signal(received, SIG_DFL)
        raise(received)
      }
      sigaddset(&unblock, signalNumber)
    }
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
  }

  /// Whether the handlers are installed in this process.
  public static var isInstalled: Bool {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    return installed
  }

  static func register(_ path: String) {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    let utf8 = Array(path.utf8)
    guard !utf8.isEmpty, utf8.count < slotSize, !utf8.contains(0) else { return }
    for slot in 0..<slotCount {
      let target = slots + slot * slotSize
      if target.pointee == 0 {
        // The first byte goes last: the handler never sees a half-written path as live.
        for index in 1..<utf8.count { target[index] = CChar(bitPattern: utf8[index]) }
        target[utf8.count] = 0
        target[0] = CChar(bitPattern: utf8[0])
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
