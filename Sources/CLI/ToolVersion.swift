import Checkpoint

/// The tool's name and version, as recorded in the metadata of every file it writes.
public enum ToolVersion {
  public static let name = ToolInfo.name
  public static let string = ToolInfo.version
}
