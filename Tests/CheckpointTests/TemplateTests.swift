import Testing

@testable import Checkpoint

@Suite struct TemplateTests {
  let tensors = SDXLTemplate.sdxlBase.tensors

  func summary(_ component: Component) -> (count: Int, parameters: Int) {
    let selected = tensors.filter { $0.component == component && !$0.isInteger }
    let all = tensors.filter { $0.component == component }
    return (all.count, selected.reduce(0) { $0 + $1.parameterCount })
  }

  @Test func matchesPublishedSDXLCounts() {
    #expect(tensors.count == 2515)
    #expect(summary(.unet).count == 1680)
    #expect(summary(.unet).parameters == 2_567_463_684)
    #expect(summary(.clipL).count == 197)
    #expect(summary(.clipL).parameters == 123_060_480)
    #expect(summary(.clipG).count == 390)
    // 694,659,840 weights plus the scalar logit_scale.
    #expect(summary(.clipG).parameters == 694_659_840 + 1)
    #expect(summary(.vae).count == 248)
    #expect(summary(.vae).parameters == 83_653_863)
    #expect(Set(tensors.map(\.key)).count == tensors.count)
  }

  @Test func knownShapes() {
    let byKey = Dictionary(uniqueKeysWithValues: tensors.map { ($0.key, $0.shape) })
    #expect(byKey["model.diffusion_model.output_blocks.2.2.conv.weight"] == [1280, 1280, 3, 3])
    #expect(byKey["model.diffusion_model.output_blocks.5.2.conv.weight"] == [640, 640, 3, 3])
    #expect(byKey["model.diffusion_model.output_blocks.0.0.in_layers.0.weight"] == [2560])
    #expect(byKey["model.diffusion_model.output_blocks.2.0.skip_connection.weight"] == [1280, 1920, 1, 1])
    #expect(byKey["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == [1280, 2048])
    #expect(byKey["model.diffusion_model.label_emb.0.0.weight"] == [1280, 2816])
    #expect(byKey["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == [3840, 1280])
    #expect(byKey["first_stage_model.decoder.up.1.block.0.nin_shortcut.weight"] == [256, 512, 1, 1])
    #expect(byKey["first_stage_model.encoder.mid.attn_1.q.weight"] == [512, 512, 1, 1])
    #expect(byKey["first_stage_model.encoder.conv_out.weight"] == [8, 512, 3, 3])
    #expect(byKey["conditioner.embedders.1.model.logit_scale"] == [])
  }

  /// The generator is parametric: the same code yields the other UNets with their published counts
  /// (toolkit `UNET-XL-Refiner.txt`, `UNET-v1-SD.txt`, `UNET-v2-SD.txt`; checkpoint-layouts.md).
  @Test(arguments: [
    ("refiner", UNetConfig.sdxlRefiner, 1220, 2_259_526_660),
    ("sd1", UNetConfig.sd1, 686, 859_520_964),
    ("sd2", UNetConfig.sd2, 686, 865_910_724),
  ])
  func otherUNets(name: String, config: UNetConfig, count: Int, parameters: Int) {
    let unet = SDXLTemplate.unetTensors(config)
    #expect(unet.count == count, "\(name)")
    #expect(unet.reduce(0) { $0 + $1.parameterCount } == parameters, "\(name)")
    #expect(Set(unet.map(\.key)).count == unet.count, "\(name)")
  }

  @Test func sd1ProjectionsAreConvolutions() {
    let byKey = Dictionary(uniqueKeysWithValues: SDXLTemplate.unetTensors(.sd1).map { ($0.key, $0.shape) })
    #expect(byKey["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == [320, 320, 1, 1])
    #expect(byKey["model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"] == [1280, 768])
    #expect(byKey["model.diffusion_model.output_blocks.2.1.conv.weight"] == [1280, 1280, 3, 3])
    #expect(byKey["model.diffusion_model.input_blocks.10.1.norm.weight"] == nil)
  }

  @Test func refinerTemplate() {
    let refiner = SDXLTemplate.sdxlRefiner
    #expect(refiner.tensors.count == 1858)
    #expect(refiner.tensors(of: .clipL).isEmpty)
    #expect(refiner.tensors(of: .clipG).allSatisfy { $0.key.hasPrefix("conditioner.embedders.0.model.") })
    let byKey = Dictionary(uniqueKeysWithValues: refiner.tensors.map { ($0.key, $0.shape) })
    #expect(byKey["model.diffusion_model.middle_block.1.transformer_blocks.3.attn2.to_k.weight"] == [1536, 1280])
    #expect(byKey["model.diffusion_model.output_blocks.8.2.conv.weight"] == [768, 768, 3, 3])
    #expect(byKey["model.diffusion_model.output_blocks.2.1.conv.weight"] == [1536, 1536, 3, 3])
  }
}
