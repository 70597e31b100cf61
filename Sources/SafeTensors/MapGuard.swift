#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Keeps a file truncated under a live memory map from killing the process.
///
/// Touching a mapped page that lies past the end of its (since shortened) file raises SIGBUS, as
/// does a page the device cannot read. `MapGuard` installs one SIGBUS handler for the process. When
/// the faulting address lies inside a registered map, the handler maps anonymous zero pages over the
/// rest of that map (so the faulting instruction can complete) and marks the map as hit; readers and
/// the writer then turn the mark into `SafeTensorsError.fileChanged`. Faults anywhere else are passed
/// to the handler that was installed before ours (or the default action: a crash, as without us).
///
/// The table the handler reads is fixed storage of machine words written before a map is used and
/// cleared before it is unmapped, so the handler takes no lock and allocates nothing.
enum MapGuard {
  // Per slot: base address, length, hit flag.
  private static let slotCount = 1024
  nonisolated(unsafe) private static let table: UnsafeMutablePointer<UInt> = {
    let memory = UnsafeMutablePointer<UInt>.allocate(capacity: slotCount * 3)
    memory.initialize(repeating: 0, count: slotCount * 3)
    return memory
  }()
  nonisolated(unsafe) private static let previousAction: UnsafeMutablePointer<sigaction> = {
    let memory = UnsafeMutablePointer<sigaction>.allocate(capacity: 1)
    memory.initialize(to: sigaction())
    return memory
  }()
  nonisolated(unsafe) private static var installed = false
  private static let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
  // Weak references for `liveMappings`; only touched under `lock`, never by the handler.
  nonisolated(unsafe) private static var owners: [Int: WeakMapping] = [:]
  // Paths of released maps that had been hit, for `damagedPaths`.
  nonisolated(unsafe) private static var released: [String] = []
  private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
    let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    return mutex
  }()

  private struct WeakMapping {
    weak var mapping: MappedFile?
    let path: String
  }

  /// Registers a map; returns its slot, or nil when every slot is taken (the map then works
  /// unguarded, as any mmap does).
  static func register(base: UnsafeRawPointer, length: Int) -> Int? {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    installIfNeeded()
    for slot in 0..<slotCount where table[slot * 3] == 0 {
      table[slot * 3 + 1] = UInt(length)
      table[slot * 3 + 2] = 0
      // The base goes last: a non-zero base marks the slot as live for the handler.
      table[slot * 3] = UInt(bitPattern: base)
      return slot
    }
    return nil
  }

  /// Records the object owning `slot`, for `liveMappings`.
  static func attach(_ slot: Int, to mapping: MappedFile) {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    owners[slot] = WeakMapping(mapping: mapping, path: mapping.path)
  }

  /// Frees a slot; call before unmapping.
  static func unregister(_ slot: Int) {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    table[slot * 3] = 0
    if table[slot * 3 + 2] != 0, let path = owners[slot]?.path { released.append(path) }
    owners[slot] = nil
  }

  /// Paths of every map, live or released, that a SIGBUS hit in this process.
  static func damagedPaths() -> [String] {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    let live = owners.keys.sorted().filter { table[$0 * 3 + 2] != 0 }.compactMap { owners[$0]?.path }
    return released + live
  }

  /// Whether the handler served a fault inside the map of `slot`.
  static func wasHit(_ slot: Int) -> Bool { table[slot * 3 + 2] != 0 }

  /// The maps alive now.
  static func liveMappings() -> [MappedFile] {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    return owners.keys.sorted().compactMap { owners[$0]?.mapping }
  }

  private static func installIfNeeded() {
    #if os(Linux)
      guard !installed else { return }
      installed = true
      _ = table
      _ = previousAction
      _ = pageSize
      var action = sigaction()
      sigemptyset(&action.sa_mask)
      action.sa_flags = SA_SIGINFO | SA_ONSTACK
      action.__sigaction_handler.sa_sigaction = { signal, info, context in
        let address = UInt(bitPattern: info?.pointee._sifields._sigfault.si_addr)
        if address != 0, MapGuard.serve(address) { return }
        // Not ours: put the previous disposition back and return; the faulting instruction runs
        // again and the fault reaches that handler (or kills the process, as it would have).
        sigaction(SIGBUS, MapGuard.previousAction, nil)
      }
      sigaction(SIGBUS, &action, previousAction)
    #endif
  }

  /// Called from the signal handler: async-signal-safe (reads words, calls mmap).
  private static func serve(_ address: UInt) -> Bool {
    for slot in 0..<slotCount {
      let base = table[slot * 3]
      guard base != 0, address >= base, address - base < table[slot * 3 + 1] else { continue }
      let page = pageSize
      let start = address / page * page
      let end = (base + table[slot * 3 + 1] + page - 1) / page * page
      guard let target = UnsafeMutableRawPointer(bitPattern: start) else { return false }
      let result = mmap(
        target, Int(end - start), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
      guard result != MAP_FAILED else { return false }
      table[slot * 3 + 2] = 1
      return true
    }
    return false
  }
}
