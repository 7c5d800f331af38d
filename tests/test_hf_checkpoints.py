"""Hugging Face checkpoints (save_pretrained directories and .safetensors files): ViT, ViTMAE and
DeiT convert, load through every path and compute what transformers computes; other
architectures are one clear error."""
import re
import subprocess
import sys

import pytest
import torch
import transformers
from detectron2.modeling.backbone import vit as d2_vit

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError, HPViTCheckpointer
from hpvit_d2.cli.convert import main as convert_main
from hpvit_lab.mae import ensure_sincos_positions
from hpvit_d2.checkpoint import convert_plain_vit
from hpvit_d2.checkpoint.plain_vit import extract_state_dict
from hpvit_d2.modeling import HPViT

WIDTH, DEPTH, HEADS = 128, 6, 4  # the tiny configs' backbone


def vit_kwargs():
    return dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                intermediate_size=4 * WIDTH, image_size=224, patch_size=16, layer_norm_eps=1e-6)


def save_hf(tmp_path, kind: str, sincos: bool = True):
    """A small randomly initialised transformers model saved with save_pretrained (a ViTMAE with
    its sin-cos position table, as published MAE checkpoints have, unless ``sincos=False``)."""
    torch.manual_seed(0)
    if kind == "vit_mae":
        model = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
            **vit_kwargs(), decoder_hidden_size=64, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2, decoder_intermediate_size=128))
        if sincos:
            ensure_sincos_positions(model)
        else:  # what transformers 5 builds (4.x built the sin-cos table)
            with torch.no_grad():
                model.vit.embeddings.position_embeddings.zero_()
    elif kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**vit_kwargs(),
                                                                               num_labels=10))
    elif kind == "deit":
        model = transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**vit_kwargs(), num_labels=10))
    elif kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    elif kind == "swin":
        model = transformers.SwinModel(transformers.SwinConfig(
            embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=64, window_size=4))
    elif kind == "convnext":
        model = transformers.ConvNextModel(transformers.ConvNextConfig(
            hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    else:
        raise ValueError(kind)
    table = getattr(getattr(model, "vit", getattr(model, "deit", None)), "embeddings", None)
    if kind in ("vit", "deit") and not bool(table.position_embeddings.any()):
        with torch.no_grad():  # a trained table is not zero (transformers 5 builds it so)
            table.position_embeddings.normal_(std=0.02)
    directory = tmp_path / kind
    model.save_pretrained(directory)
    return directory, model


def tiny_target(**kw):
    return HPViT(img_size=256, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, window_size=8,
                 window_block_indexes=(0, 1), stage_depths=(1, 1, 3, 1), **kw)


@pytest.mark.parametrize("kind, fmt", [("vit_mae", "Hugging Face ViTMAE"), ("vit", "Hugging Face ViT"),
                                       ("deit", "Hugging Face DeiT")])
def test_hf_directory_converts_completely(tmp_path, kind, fmt):
    directory, hf = save_hf(tmp_path, kind)
    model = tiny_target()
    checkpointer = HPViTCheckpointer(model, require="backbone")
    checkpointer.load(str(directory))
    conversion = checkpointer.report.conversion
    assert conversion.source_format == fmt
    assert conversion.missing_pretrained == []
    assert {k for k in conversion.missing} == {k for k in model.state_dict() if k.startswith("pools.")}
    encoder = getattr(hf, "vit", None) or getattr(hf, "deit")
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               encoder.embeddings.patch_embeddings.projection.weight)
    if kind == "deit":  # class slot kept, distillation slot dropped
        torch.testing.assert_close(model.pos_embed[:, 0], encoder.embeddings.position_embeddings[:, 0])
        torch.testing.assert_close(model.pos_embed[:, 1:], encoder.embeddings.position_embeddings[:, 2:])
    else:
        torch.testing.assert_close(model.pos_embed, encoder.embeddings.position_embeddings)
    # The .safetensors file alone (its config.json beside it) reads the same.
    again = tiny_target()
    HPViTCheckpointer(again, require="backbone").load(str(directory / "model.safetensors"))
    for k, v in model.state_dict().items():
        if not k.startswith("pools."):
            assert torch.equal(v, again.state_dict()[k]), k


@pytest.mark.parametrize("source", ["save_pretrained file", "module state_dict"])
@pytest.mark.parametrize("kind", ["vit_mae", "vit", "deit"])
def test_hf_block_computes_what_transformers_computes(tmp_path, kind, source):
    """q, k, v concatenated in the right order: a converted block equals transformers' layer,
    from the file save_pretrained writes and from the module's own (transformers 5) names."""
    from safetensors.torch import load_file

    directory, hf = save_hf(tmp_path, kind)
    state = load_file(str(directory / "model.safetensors")) if source.endswith("file") \
        else extract_state_dict(hf.state_dict())
    plain = HPViT(img_size=224, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, patch_stride=16,
                  stage_depths=(DEPTH,), norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    converted, report = convert_plain_vit(state, plain)
    plain.load_state_dict(converted, strict=True)
    encoder = getattr(hf, "vit", None) or getattr(hf, "deit")
    layers = encoder.layers if hasattr(encoder, "layers") else encoder.encoder.layer
    tokens = torch.randn(2, 7 * 5, WIDTH)
    with torch.no_grad():
        for i in (0, DEPTH - 1):
            expected = layers[i](tokens)
            expected = expected[0] if isinstance(expected, tuple) else expected
            got = d2_vit.Block.__call__(plain.blocks[i], tokens.view(2, 7, 5, WIDTH))
            torch.testing.assert_close(got.reshape(2, 35, WIDTH), expected, atol=1e-5, rtol=1e-4)


def test_converter_strict_on_hf_mae_directory(tmp_path, capsys):
    directory, _ = save_hf(tmp_path, "vit_mae")
    dst = tmp_path / "init.pth"
    assert convert_main([str(directory), str(dst), "--config", "mask_rcnn_hpvit_tiny.py",
                         "--strict"]) == 0
    out = capsys.readouterr().err  # the load report: logged once, on stderr
    assert out.count("(Hugging Face ViTMAE, converted into the backbone)") == 1
    saved = torch.load(dst, weights_only=True)["model"]
    assert "backbone.bottom_up.blocks.3.attn.qkv.weight" in saved
    assert not any(k.startswith("backbone.bottom_up.pools") for k in saved)
    # The same directory into the ViTDet twin, under its own prefix.
    assert convert_main([str(directory), str(tmp_path / "vitdet.pth"), "--config",
                         "mask_rcnn_vitdet_tiny.py", "--strict"]) == 0
    assert "backbone.net.blocks.0.attn.qkv.weight" in torch.load(tmp_path / "vitdet.pth",
                                                                 weights_only=True)["model"]


def test_an_all_zero_position_table_is_named_and_refused_when_strict(tmp_path, capsys):
    """transformers 5 builds ViTMAEForPreTraining with zero (frozen) sin-cos tables; a checkpoint
    trained so has no positions. The report names it; --strict refuses it."""
    directory, hf = save_hf(tmp_path, "vit_mae", sincos=False)
    dst = tmp_path / "init.pth"
    assert convert_main([str(directory), str(dst), "--config", "mask_rcnn_hpvit_tiny.py"]) == 0
    assert "WARNING: 1 tensors are all zeros in the checkpoint (never trained?): pos_embed" in \
        capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"missing, mismatched or all zeros, e\.g\. \['pos_embed'\]"):
        HPViTCheckpointer(tiny_target(), require="backbone").load(str(directory))
    # ensure_sincos_positions gives a model transformers' own sin-cos tables.
    with torch.no_grad():
        hf.decoder.decoder_pos_embed.zero_()
    ensure_sincos_positions(hf)
    table = hf.vit.embeddings.position_embeddings[0, 1:]
    assert table.abs().max() <= 1 and table.std() > 0.3
    assert bool(hf.decoder.decoder_pos_embed.any())


def test_model_zoo_takes_a_hf_directory(tmp_path):
    directory, hf = save_hf(tmp_path, "vit_mae")
    with pytest.raises(CheckpointError, match="plain ViT checkpoint"):  # strict: heads would be random
        model_zoo.get("mask_rcnn_hpvit_tiny.py", weights=str(directory))
    model = model_zoo.get("mask_rcnn_hpvit_tiny.py", weights=str(directory), strict=False)
    layers = hf.vit.layers if hasattr(hf.vit, "layers") else hf.vit.encoder.layer
    fc1 = layers[2].mlp.fc1 if hasattr(layers[2], "mlp") else layers[2].intermediate.dense
    torch.testing.assert_close(model.backbone.bottom_up.blocks[2].mlp.fc1.weight, fc1.weight)


@pytest.mark.parametrize("kind, found", [("bert", "'bert' model (BertModel)"),
                                         ("swin", "'swin' model (SwinModel)"),
                                         ("convnext", "'convnext' model (ConvNextModel)")])
def test_other_architectures_are_one_line(tmp_path, kind, found):
    directory, _ = save_hf(tmp_path, kind)
    with pytest.raises(CheckpointError, match=re.escape(f"{directory}: a Hugging Face {found}")):
        HPViTCheckpointer(tiny_target()).load(str(directory))
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(directory),
                           str(tmp_path / "out.pth"), "--config", "mask_rcnn_hpvit_tiny.py"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and found in proc.stderr, proc.stderr
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("act", ["relu", "gelu_new"])
def test_an_activation_other_than_gelu_is_refused(tmp_path, capsys, act):
    """Issue 33, smaller list: a config.json with hidden_act relu converted silently (the
    converted blocks compute GELU)."""
    import json

    directory, _ = save_hf(tmp_path, "vit")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(config, hidden_act=act)))
    expected = (f"{directory}: its blocks use hidden_act '{act}', but the ViT blocks here compute "
                "GELU (hidden_act 'gelu'): converted, they would compute another function")
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        HPViTCheckpointer(tiny_target()).load(str(directory))
    from hpvit_d2.cli.common import run

    assert run(convert_main, [str(directory), str(tmp_path / "out.pth"), "--config",
                              "mask_rcnn_hpvit_tiny.py"]) == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "out.pth").exists()
