// libFuzzer target for the prompt-weight parsers (built by Scripts/fuzz-prompt with
// -sanitize=fuzzer,address together with Sources/Diffusion/Prompt/PromptParser.swift; not part of
// the package build). Every byte string, read as UTF-8 with repairs, must parse in both syntaxes:
// a trap, a hang or an unbounded allocation is a finding.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPromptParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let prompt = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
  let a1111 = PromptParser.parse(prompt, syntax: .a1111)
  precondition(!a1111.isEmpty, "A1111 parse is never empty")
  _ = PromptParser.parse(prompt, syntax: .comfyUI)
  _ = PromptParser.pythonFloat(prompt.unicodeScalars)
  return 0
}
