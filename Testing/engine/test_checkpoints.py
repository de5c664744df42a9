"""Loading: official Slide-SAM layout (hand-checked LoRA), plain SAM recipe, embedded default, bad files."""
import pickle

import pytest
import torch

from SlideSAMLib import CheckpointError, load_model
from SlideSAMLib.checkpoint import identify, read_state_dict
from SlideSAMLib.modeling import build_net

RANK = 8


def official_layout(sd, rank=RANK, nested=False, seed=0):
    """Rewrite a plain three-slice ViT state dict into the official Slide-SAM LoRA key layout (hand-written LoRA on each block's fused qkv)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sd.items():
        if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
            base, leaf = key.rsplit(".", 1)
            dim = sd[f"{base}.weight"].shape[1]
            inner = f"{base}.qkv.qkv" if nested else f"{base}.qkv"
            out[f"{inner}.{leaf}"] = value.clone()
            if leaf == "weight":
                levels = [(base, rank)] + ([(f"{base}.qkv", 1)] if nested else [])
                for prefix, r in levels:
                    for p in ("q", "v"):
                        out[f"{prefix}.linear_a_{p}.weight"] = torch.randn(r, dim, generator=g) * 0.05
                        out[f"{prefix}.linear_b_{p}.weight"] = torch.randn(dim, r, generator=g) * 0.05
        else:
            out[key] = value
    return out


def lora_qkv_by_hand(official, prefix, x, nested=False):
    """qkv(x) with B_q(A_q x) added to the q third and B_v(A_v x) to the v third, at every level."""
    def level(p, depth):
        if depth == 0:
            return x @ official[f"{p}.weight"].T + official[f"{p}.bias"]
        y = level(f"{p}.qkv", depth - 1)
        dim = x.shape[-1]
        dq = (x @ official[f"{p}.linear_a_q.weight"].T) @ official[f"{p}.linear_b_q.weight"].T
        dv = (x @ official[f"{p}.linear_a_v.weight"].T) @ official[f"{p}.linear_b_v.weight"].T
        return torch.cat([y[..., :dim] + dq, y[..., dim : 2 * dim], y[..., 2 * dim :] + dv], dim=-1)

    return level(prefix, 2 if nested else 1)


@pytest.fixture(scope="module")
def vit_b_sd():
    torch.manual_seed(0)
    net = build_net("vit_b")
    return {k: v for k, v in net.state_dict().items()}


@pytest.mark.parametrize("nested", [False, True])
def test_official_vit_b_layout_loads_and_matches_hand_lora(tmp_path, vit_b_sd, nested):
    official = official_layout(vit_b_sd, nested=nested)
    if not nested:
        assert len(official) == 374  # the official Slide-SAM-B file has 374 keys, ~94.2 M values
        assert sum(v.numel() for v in official.values()) == pytest.approx(94.2e6, rel=0.01)
    path = tmp_path / "slide_sam_b.pth"
    torch.save(official, path)
    assert identify(read_state_dict(path))["kind"] == "official"
    model = load_model(path, device="cpu")
    assert model.kind == "official" and model.spec.name == "vit_b" and "r=8" in model.source
    x = torch.randn(2, 5, 768)
    for i in (0, 5, 11):
        block = model.net.image_encoder.blocks[i]
        expected = lora_qkv_by_hand(official, f"image_encoder.blocks.{i}.attn.qkv", x, nested=nested)
        with torch.no_grad():
            got = block.attn.qkv(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        # The LoRA really changed the layer (the test would pass trivially on zeros otherwise).
        plain = x @ official[f"image_encoder.blocks.{i}.attn.qkv.{'qkv.' if nested else ''}qkv.weight"].T
        assert (got - plain).abs().max() > 1e-3
    # Everything else is loaded verbatim.
    torch.testing.assert_close(model.net.mask_decoder.output_upscaling3[0].weight, official["mask_decoder.output_upscaling3.0.weight"])


def test_official_vit_h_key_count():
    with torch.device("meta"):
        net = build_net("vit_h")
    official = official_layout({k: torch.empty(v.shape) for k, v in net.state_dict().items()})
    assert len(official) == 734  # the official Slide-SAM-H file has 734 keys


def test_decoder_channel_order_is_token_times_three_plus_slice(vit_b_sd):
    torch.manual_seed(1)
    net = build_net("litemedsam").eval()
    dec = net.mask_decoder
    with torch.no_grad():  # make the three branches differ so slices are distinguishable
        for branch in (dec.output_upscaling2, dec.output_upscaling3):
            for p in branch.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    emb = torch.randn(1, 256, 64, 64)
    sparse, dense = net.prompt_encoder(points=None, boxes=torch.tensor([[20.0, 30.0, 120.0, 140.0]]), masks=None)
    pe = net.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        multi, iou_m = dec(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
        single, iou_s = dec(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        raw, iou_raw = dec.predict_masks(emb, pe, sparse, dense)  # [B, tokens, slice, h, w]
    assert multi.shape == (1, 9, 256, 256) and iou_m.shape == (1, 3)
    assert single.shape == (1, 3, 256, 256) and iou_s.shape == (1, 1)
    for t in range(3):
        for s in range(3):
            torch.testing.assert_close(multi[0, t * 3 + s], raw[0, t + 1, s])
    torch.testing.assert_close(single[0], raw[0, 0])
    assert not torch.allclose(raw[0, 1, 0], raw[0, 1, 1])


def test_equal_branches_share_one_upscaling_with_the_same_numbers(model):
    """The embedded model's three branches are equal: inference computes one upscaling for the three slices;
    with gradients on (training) every branch runs. Both must give the same masks; unequal branches never share."""
    import copy

    dec = copy.deepcopy(model.net.mask_decoder).float()
    assert dec._branches_identical() is False  # gradients are on here
    torch.manual_seed(3)
    emb, pe = torch.randn(1, 256, 64, 64), model.net.prompt_encoder.get_dense_pe()
    sparse, dense = model.net.prompt_encoder(points=None, boxes=torch.tensor([[20.0, 30.0, 120.0, 140.0]]), masks=None)
    sparse, dense = sparse.detach(), dense.detach()
    every_branch, _ = dec.predict_masks(emb, pe, sparse, dense)
    with torch.inference_mode():
        assert dec._branches_identical()
        shared, _ = dec.predict_masks(emb, pe, sparse, dense)
        with torch.no_grad():
            dec.output_upscaling3[0].bias.add_(0.5)
        assert not dec._branches_identical()
        unequal, _ = dec.predict_masks(emb, pe, sparse, dense)
    torch.testing.assert_close(shared, every_branch.detach(), rtol=0, atol=0)
    torch.testing.assert_close(unequal[:, :, :2], shared[:, :, :2], rtol=0, atol=0)
    assert not torch.equal(unequal[:, :, 2], shared[:, :, 2])


def test_plain_sam_checkpoint_gets_slide_sam_init(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(2)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam.state_dict(), path)
    model = load_model(path, device="cpu")
    assert model.kind == "sam" and model.supports_points
    dec = model.net.mask_decoder
    for a, b in zip(dec.output_upscaling.parameters(), dec.output_upscaling3.parameters()):
        torch.testing.assert_close(a, b)
    w = model.net.prompt_encoder.mask_downscaling[0].weight
    assert w.shape == (4, 3, 2, 2)
    torch.testing.assert_close(w[:, 1:2], sam.prompt_encoder.mask_downscaling[0].weight)


def test_embedded_default_is_litemedsam_three_slice(model):
    assert model.kind == "embedded" and model.spec.name == "litemedsam"
    assert model.net.prompt_encoder.mask_downscaling[0].weight.shape == (4, 3, 2, 2)
    assert not model.supports_points


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not a checkpoint at all"), "not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "checkpoint"),
        (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p), "unrecognised checkpoint"),
        (lambda p: torch.save([torch.zeros(1)], p), "not a state dict"),
    ],
    ids=["missing", "empty", "text", "pickle-list", "foreign-state-dict", "tensor-list"],
)
def test_bad_checkpoints_get_one_line_errors(tmp_path, make, expected):
    path = tmp_path / "model.pth"
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, device="cpu")
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_truncated_checkpoint(tmp_path):
    from SlideSAMLib.checkpoint import embedded_checkpoint_path

    data = open(embedded_checkpoint_path(), "rb").read()
    path = tmp_path / "lite_medsam.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path, device="cpu")


def test_unavailable_device_is_reported():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        load_model(None, device="cuda")


def test_each_loader_declares_whether_clicks_reach_the_decoder(tmp_path, model):
    """LiteMedSAM's own .pth was once kind "sam" (clicks sent to a decoder that never learned points), and a
    three-slice file without LoRA was labelled "official"."""
    from SlideSAMLib.checkpoint import embedded_checkpoint_path

    lite = load_model(embedded_checkpoint_path(), device="cpu", encoder="torch")
    assert lite.kind == "litemedsam" and not lite.supports_points and "LiteMedSAM" in lite.source
    path = tmp_path / "three_slice_litemedsam.pth"
    torch.save(model.net.state_dict(), path)
    three = load_model(path, device="cpu", encoder="torch")
    assert three.kind == "three_slice" and not three.supports_points and "without LoRA" in three.source
