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
}
