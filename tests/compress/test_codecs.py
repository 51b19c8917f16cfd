"""The codecs of one table: dimension-search spec 8, properties 21-23, sizes and round trips."""

from __future__ import annotations

import pytest
import torch

from slimctr.compress.codecs import (
    Float8,
    Int8,
    int8_codes,
    parse,
    range_violations,
    stored_bytes,
)
from slimctr.errors import SlimctrError


def _table(n: int = 300, d: int = 10, seed: int = 0) -> torch.Tensor:
    """Rows of very different sizes, as CTR tables have (frequent rows grow, rare ones stay)."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 0.5, n).unsqueeze(1)
    return torch.randn(n, d, generator=generator) * scale


def _decoded(name: str, table: torch.Tensor) -> torch.Tensor:
    codec = parse(name)
    return codec.decode(codec.encode(table), torch.arange(len(table)), table.shape[1])


def test_int8_codes_round_to_nearest_clip_and_dequantise_within_half_a_step():
    table = _table()
    codec = Int8("int8")
    stored = codec.encode(table)
    assert stored["codes"].dtype == torch.uint8  # so every code lies in [0, 255]
    step = stored["step"][0]
    error = (_decoded("int8", table) - table).abs()
    assert torch.all(error <= step / 2 + 1e-6)
    minimum = torch.tensor([0.0])
    outside = torch.tensor([[-1.0], [256.2], [255.6], [2.5], [2.4]])
    codes = int8_codes(outside, minimum, torch.tensor([1.0]))
    assert codes.flatten().tolist() == [
        0,
        255,
        255,
        2,
        2,
    ]  # clipped, never wrapped; 2.5 -> 2 (even)
    per_row = _decoded("int8@row", table)
    assert torch.all(
        (per_row - table).abs() <= Int8("int8@row", "row").encode(table)["step"] / 2 + 1e-6
    )


@pytest.mark.parametrize("name", ["fp8-e4m3", "fp8-e5m2", "fp8-e4m3@field", "fp8-e4m3@block16"])
def test_scaled_fp8_never_makes_inf_or_nan_and_is_close(name):
    table = _table() * 1e4  # far beyond e4m3's 448
    decoded = _decoded(name, table)
    assert torch.isfinite(decoded).all()
    relative = (decoded - table).abs() / table.abs().amax(dim=1, keepdim=True)
    bound = 2**-3 if "e4m3" in name else 2**-2  # half an ulp at the top of the range, roughly
    if name.endswith("@row") or "@" not in name:
        assert relative.max() <= bound


def test_unscaled_fp8_is_refused_when_a_value_is_out_of_range_and_the_check_counts_them():
    table = _table()
    assert range_violations(table * 1000, torch.float8_e4m3fn) > 0
    with pytest.raises(SlimctrError, match="exceed the format's range"):
        Float8("fp8-e4m3@none", 0).encode(table * 1000)
    stored = parse("fp8-e4m3@none").encode(table)
    assert set(stored) == {"codes"}


def test_pca_at_fraction_one_reconstructs_and_its_size_counts_components_and_mean():
    table = _table(d=8)
    assert torch.allclose(_decoded("pca:1", table), table, atol=1e-5)
    stored = parse("pca:0.5").encode(table)
    assert stored["components"].shape == (4, 8) and stored["mean"].shape == (8,)
    assert stored_bytes(stored) == 4 * (300 * 4 + 4 * 8 + 8)
    combined = parse("pca:0.5+fp8-e4m3").encode(table)
    assert stored_bytes(combined) == 300 * 4 + 4 * 300 + 4 * (4 * 8 + 8)  # codes, scales, basis


def test_stored_bytes_are_every_tensor_a_decoder_needs():
    table = _table(n=256, d=16)
    sizes = {name: stored_bytes(parse(name).encode(table)) for name in
             ("fp16", "bf16", "int8", "int8@row", "fp8-e4m3", "fp8-e4m3@field",
              "fp8-e4m3@block64", "binary")}  # fmt: skip
    assert sizes["fp16"] == sizes["bf16"] == 256 * 16 * 2
    assert sizes["int8"] == 256 * 16 + 2 * 4 * 16  # a min and a step per dimension
    assert sizes["int8@row"] == 256 * 16 + 2 * 4 * 256
    assert sizes["fp8-e4m3"] == 256 * 16 + 4 * 256
    assert sizes["fp8-e4m3@field"] == 256 * 16 + 4
    assert sizes["fp8-e4m3@block64"] == 256 * 16 + 4 * 4
    assert sizes["binary"] == 256 * 2 + 4 * 256


def test_binary_keeps_signs_and_the_rows_mean_size():
    table = _table(d=11)
    decoded = _decoded("binary", table)
    assert torch.equal(decoded > 0, table > 0)
    assert torch.allclose(decoded.abs().mean(dim=1), table.abs().mean(dim=1))


def test_decoding_gathered_rows_equals_decoding_all_then_gathering():
    table = _table()
    rows = torch.tensor([[5, 299], [0, 17]])
    for name in ("fp16", "int8", "int8@row", "fp8-e5m2@block7", "binary", "pca:0.3+int8"):
        codec = parse(name)
        stored = codec.encode(table)
        every = codec.decode(stored, torch.arange(len(table)), 10)
        assert torch.equal(codec.decode(stored, rows, 10), every[rows]), name


@pytest.mark.parametrize("name", ["fp9", "int8@col", "pca:0", "pca:x", "pca:0.5+pca:0.5",
                                  "fp8-e4m3@block0", "binary@row"])  # fmt: skip
def test_an_unknown_codec_is_a_one_line_error(name):
    with pytest.raises(SlimctrError) as caught:
        parse(name)
    assert "\n" not in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize("name", ["fp16", "bf16", "int8", "int8@row", "fp8-e4m3", "fp8-e5m2@field",
                                  "fp8-e4m3@block7", "fp8-e4m3@none", "binary", "pca:0.5",
                                  "pca:0.7+int8@row", "pca:0.25+binary"])  # fmt: skip
def test_the_layout_is_what_encoding_stores(name):
    codec = parse(name)
    table = _table(n=50, d=10)
    stored = codec.encode(table)
    layout = codec.layout(50, 10)
    assert {k: (tuple(v.shape), v.dtype) for k, v in stored.items()} == layout


def test_a_split_codec_stores_the_frequent_head_and_the_tail_apart():
    table = _table(n=100, d=8)
    codec = parse("head:0.1:fp16/int8")
    stored = codec.encode(table)
    assert stored["head.values"].shape == (10, 8) and stored["tail.codes"].shape == (90, 8)
    decoded = codec.decode(stored, torch.arange(100), 8)
    assert torch.equal(decoded[:10], table[:10].half().float())
    int8 = parse("int8")
    assert torch.equal(decoded[10:], int8.decode(int8.encode(table[10:]), torch.arange(90), 8))
    assert stored_bytes(stored) == 10 * 8 * 2 + 90 * 8 + 2 * 4 * 8 + 4
    assert codec.layout(100, 8) == {k: (tuple(v.shape), v.dtype) for k, v in stored.items()}
    with pytest.raises(SlimctrError, match="share S in"):
        parse("head:1.5:fp16/int8")
