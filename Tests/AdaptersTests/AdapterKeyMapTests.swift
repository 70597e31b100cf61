import Adapters
import Checkpoint
import Testing

@Suite struct AdapterKeyMapTests {
  @Test func aliasesAreCollisionFree() {
    #expect(AdapterKeyMap.collisions.isEmpty, "\(AdapterKeyMap.collisions.prefix(5))")
  }

  @Test func kohyaSGMAndDiffusersNamesMapToTheSameWeight() {
    let sgm = AdapterKeyMap.target(ofModule: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k")
    let diffusers = AdapterKeyMap.target(
      ofModule: "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k")
    let peft = AdapterKeyMap.target(ofModule: "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")
    #expect(sgm?.key == "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
    #expect(diffusers == sgm)
    #expect(peft == sgm)
    #expect(AdapterKeyMap.target(ofModule: "lycoris_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k") == sgm)
    // A conv of a resnet: SGM in_layers.2 = diffusers conv1.
    #expect(
      AdapterKeyMap.target(ofModule: "lora_unet_down_blocks_2_resnets_0_conv1")?.key
        == "model.diffusion_model.input_blocks.7.0.in_layers.2.weight")
    #expect(
      AdapterKeyMap.target(ofModule: "lora_unet_output_blocks_2_2_conv")?.key
        == "model.diffusion_model.output_blocks.2.2.conv.weight")
  }

  @Test func textEncodersMapOntoCLIPLAndTheFusedOpenCLIPWeights() {
    #expect(
      AdapterKeyMap.target(ofModule: "lora_te1_text_model_encoder_layers_3_self_attn_q_proj")?.key
        == "conditioner.embedders.0.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight")
    let v = AdapterKeyMap.target(ofModule: "lora_te2_text_model_encoder_layers_5_self_attn_v_proj")
    #expect(
      v
        == AdapterTarget(
          key: "conditioner.embedders.1.model.transformer.resblocks.5.attn.in_proj_weight", sliceIndex: 2, sliceCount: 3
        ))
    #expect(AdapterKeyMap.target(ofModule: "text_encoder_2.text_model.encoder.layers.5.self_attn.v_proj") == v)
    #expect(
      AdapterKeyMap.target(ofModule: "lora_te2_text_model_encoder_layers_0_mlp_fc1")?.key
        == "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight")
    #expect(
      AdapterKeyMap.target(ofModule: "text_encoder.text_model.encoder.layers.0.self_attn.out_proj")?.key
        == "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.out_proj.weight")
  }

  @Test func suffixesSplitOnTheirLongestMatch() {
    #expect(AdapterKeyMap.split("lora_unet_out_2.lora_down.weight")! == ("lora_unet_out_2", .down))
    #expect(AdapterKeyMap.split("unet.conv_in.lora_A.weight")! == ("unet.conv_in", .down))
    #expect(AdapterKeyMap.split("unet.a.to_q.lora.up.weight")! == ("unet.a.to_q", .up))
    #expect(AdapterKeyMap.split("x.lokr_w1_a")! == ("x", .lokrW1a))
    #expect(AdapterKeyMap.split("x.lokr_w1")! == ("x", .lokrW1))
    #expect(AdapterKeyMap.split("x.diff_b")! == ("x", .diffBias))
    #expect(AdapterKeyMap.split("bundle_emb.name.string_to_param.*") == nil)
    // SD1 names and unknown modules map nowhere.
    #expect(AdapterKeyMap.target(ofModule: "lora_te_text_model_encoder_layers_0_mlp_fc1") == nil)
    #expect(AdapterKeyMap.target(ofModule: "lora_unet_down_blocks_0_attentions_0_proj_in") == nil)
  }
}
