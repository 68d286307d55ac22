"""The VBench dimensions `mvideo eval` can score on its own prompts, and the weight files each loads."""

# dimension -> the files vbench 0.1.5's init_submodules (local mode) and its scorers load from the weights folder
CUSTOM_INPUT_WEIGHTS = {
    "subject_consistency": ["dino_model/dino_vitbase16_pretrain.pth",
                            "dino_model/facebookresearch_dino_main/hubconf.py"],
    "background_consistency": ["clip_model/ViT-B-32.pt"],
    "aesthetic_quality": ["clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"],
    "imaging_quality": ["pyiqa_model/musiq_spaq_ckpt-358bb6af.pth"],
    "temporal_flickering": [],
    "motion_smoothness": ["amt_model/amt-s.pth"],
    "dynamic_degree": ["raft_model/models/raft-things.pth"],
    "human_action": ["umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth"],
    "temporal_style": ["ViCLIP/ViClip-InternVid-10M-FLT.pth"],
    "overall_consistency": ["ViCLIP/ViClip-InternVid-10M-FLT.pth"],
}
