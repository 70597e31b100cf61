import Checkpoint
import Foundation
import SafeTensors

/// Finds a recorded recipe's inputs on this machine. A merged file's recipe names its inputs by
/// file name and SHA-256 only (`MergeRequest.inputHashes`), so they are looked up: by name in the
/// recipe's folder and then each search folder, keeping the first whose SHA-256 matches; failing
/// that, by SHA-256 among the `.safetensors` files of those folders (renamed copies). Hashes go
/// through the hash cache, so a second look costs nothing.
public enum RecipeInputs {
  /// The paths of `request.inputs`, searched in `folders` (the recipe's own folder first).
  /// Recipes without hashes (hand-written, older) take the first file of that name; a name that
  /// is a path to an existing file is used as it is.
  /// - Throws: `MergeError.inputNotFound` naming what was searched.
  public static func resolve(_ request: MergeRequest, folders: [String], hashCache: HashCache?) throws -> [String] {
    var hashes: [String: String] = [:]
    func sha256(_ path: String) -> String? {
      if let known = hashes[path] { return known }
      guard let file = try? SafeTensorsFile(path: path) else { return nil }
      let digest = ModelHasher.hashes(of: file.mapping, dataOffset: nil, cache: hashCache).hashes.sha256
      hashes[path] = digest
      return digest
    }
    let fm = FileManager.default
    return try request.inputs.enumerated().map { index, name in
      let wanted = request.inputHashes.flatMap { index < $0.count ? $0[index].lowercased() : nil }
      var candidates: [String] = []
      if name.contains("/"), fm.fileExists(atPath: name) { candidates.append(name) }
      let base = (name as NSString).lastPathComponent
      candidates += folders.map { ($0 as NSString).appendingPathComponent(base) }.filter { fm.fileExists(atPath: $0) }
      guard let wanted else {
        if let first = candidates.first { return first }
        throw MergeError.inputNotFound(name: name, sha256: nil, searched: folders, mismatched: [])
      }
      if let match = candidates.first(where: { sha256($0) == wanted }) { return match }
      for folder in folders {
        let names = (try? fm.contentsOfDirectory(atPath: folder))?.sorted() ?? []
        for other in names where other.lowercased().hasSuffix(".safetensors") {
          let path = (folder as NSString).appendingPathComponent(other)
          if !candidates.contains(path), sha256(path) == wanted { return path }
        }
      }
      throw MergeError.inputNotFound(name: name, sha256: wanted, searched: folders, mismatched: candidates)
    }
  }
}
