"""Equivalent ways of computing the same thing must agree (fp32, CPU):
packed vs unpacked rows, the encode-once scorer vs score_batch, scanned+remat vs unrolled
layers (forward, gradients, greedy decoding), and dropout only when a dropout rng is given.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t0_jax.model import losses, stacking
from t0_jax.model.config import T5Config
from t0_jax.model.model import EncoderDecoderModel

CFG = T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
               num_encoder_layers=2, num_decoder_layers=2, dtype="float32")
ATOL = 2e-5
LI, LT = 10, 8  # one batch shape for the whole module: compiled functions are reused


def _batch(seed):
    rng = np.random.default_rng(seed)
    return unpacked([_example(rng, 7, 5), _example(rng, 4, 3)], LI, LT)


@pytest.fixture(scope="module")
def params():
    p = EncoderDecoderModel(CFG).init_params(jax.random.PRNGKey(7))
    # Random norm scales too, so a wrongly stacked/placed scale cannot hide behind ones.
    rng = np.random.default_rng(7)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * (1 + 0.3 * rng.standard_normal(x.shape, np.float32))
        if "scale" in jax.tree_util.keystr(path) else x, p)


def _example(rng, li, lt):
    enc = np.append(rng.integers(2, CFG.vocab_size, li - 1), 1).astype(np.int32)
    tgt = np.append(rng.integers(2, CFG.vocab_size, lt - 1), 1).astype(np.int32)
    return enc, tgt


def _pad(x, n):
    return np.pad(x, (0, n - len(x)))


def unpacked(examples, li, lt):
    enc = np.stack([_pad(e, li) for e, _ in examples])
    tgt = np.stack([_pad(t, lt) for _, t in examples])
    dec_in = np.concatenate([np.zeros((len(examples), 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def packed_row(examples, li, lt):
    """seqio-style packing: concatenated segments 1, 2, ..., positions restart per segment,
    decoder inputs shifted right within each segment (0 = start)."""
    row = {k: [] for k in ("enc", "eseg", "epos", "tgt", "din", "dseg", "dpos")}
    for s, (e, t) in enumerate(examples, start=1):
        for key, values in (("enc", e), ("eseg", [s] * len(e)), ("epos", range(len(e))),
                            ("tgt", t), ("din", [0] + list(t[:-1])), ("dseg", [s] * len(t)),
                            ("dpos", range(len(t)))):
            row[key] += list(values)
    enc_keys, dec_keys = ("enc", "eseg", "epos"), ("tgt", "din", "dseg", "dpos")
    out = {k: _pad(np.array(row[k], np.int32), li) for k in enc_keys}
    out.update({k: _pad(np.array(row[k], np.int32), lt) for k in dec_keys})
    return out


def packed(rows, li, lt):
    rows = [packed_row(r, li, lt) for r in rows]
    col = lambda k: np.stack([r[k] for r in rows])  # noqa: E731
    return {"encoder_input_tokens": col("enc"), "encoder_segment_ids": col("eseg"),
            "encoder_positions": col("epos"), "decoder_target_tokens": col("tgt"),
            "decoder_input_tokens": col("din"), "decoder_segment_ids": col("dseg"),
            "decoder_positions": col("dpos"),
            "decoder_loss_weights": (col("tgt") > 0).astype(np.float32)}


def test_packed_equals_unpacked(params):
    model = EncoderDecoderModel(CFG)
    rng = np.random.default_rng(0)
    a, b = _example(rng, 5, 3), _example(rng, 4, 4)
    li, lt = LI, LT
    single = model.logits(params, unpacked([a, b], li, lt))  # row 0 = a, row 1 = b
    pack = packed([[a, b], [b, a]], li, lt)
    both = model.logits(params, pack)
    # (packed row, packed offset, single row, length)
    for prow, off, srow, n in [(0, 0, 0, 3), (0, 3, 1, 4), (1, 0, 1, 4), (1, 4, 0, 3)]:
        np.testing.assert_allclose(both[prow, off:off + n], single[srow, :n], atol=ATOL, rtol=0)
    # The bias comes from index differences, never from `*_positions`: dropping them is a no-op.
    no_pos = {k: v for k, v in pack.items() if not k.endswith("_positions")}
    np.testing.assert_allclose(model.logits(params, no_pos), both, atol=ATOL, rtol=0)
    # Summed losses agree too (same tokens, same weights).
    _, aux_p = model.loss_fn(params, pack)
    _, aux_u = model.loss_fn(params, unpacked([a, b], li, lt))
    np.testing.assert_allclose(aux_p["cross_entropy"], 2 * aux_u["cross_entropy"], rtol=1e-5)
    assert float(aux_p["weight_sum"]) == 2 * float(aux_u["weight_sum"]) == 14


def test_score_encoded_equals_score_batch(params):
    model = EncoderDecoderModel(CFG)
    rng = np.random.default_rng(1)
    inputs = [_example(rng, 6, 2)[0], _example(rng, 3, 2)[0]]
    choices = [_example(rng, 2, n)[1] for n in (2, 4, 3, 5, 1)]
    owner = np.array([0, 0, 1, 1, 1], np.int32)
    rows = unpacked([(inputs[o], c) for o, c in zip(owner, choices)], 8, 6)
    expected = model.score_batch(params, rows)

    enc_tokens = np.stack([_pad(x, 8) for x in inputs])
    encoded = model.encode(params, enc_tokens)
    assert encoded.shape == (2, 8, CFG.emb_dim) and encoded.dtype == jnp.float32
    got = model.score_encoded(params, encoded, enc_tokens, owner, rows["decoder_input_tokens"],
                              rows["decoder_target_tokens"], rows["decoder_loss_weights"])
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=1e-6)
    # And by hand from the logits: Σ log p(target) over non-pad targets.
    lp = losses.token_log_probs(model.logits(params, rows), rows["decoder_target_tokens"])
    np.testing.assert_allclose(got, (lp * rows["decoder_loss_weights"]).sum(-1), atol=ATOL)
    # The per-input cross-attention K/V gather also goes through scanned + remat layers.
    scanned = EncoderDecoderModel(CFG.replace(scan_layers=True, remat_policy="full"))
    got_scanned = scanned.score_encoded(stacking.scan_params(params), encoded, enc_tokens,
                                        owner, rows["decoder_input_tokens"],
                                        rows["decoder_target_tokens"],
                                        rows["decoder_loss_weights"])
    np.testing.assert_allclose(got_scanned, expected, atol=ATOL, rtol=1e-6)


def test_scanned_remat_matches_unrolled(params):
    flat = EncoderDecoderModel(CFG)
    scanned = EncoderDecoderModel(CFG.replace(scan_layers=True, remat_policy="full"))
    sparams = stacking.scan_params(params)

    # Tree forms: scanned init == scan of unscanned init; axes gain a leading "layers".
    shape = lambda t: jax.tree_util.tree_map(lambda x: x.shape, t)  # noqa: E731
    assert shape(scanned.abstract_params()) == shape(sparams)
    assert sparams["encoder"]["layers"]["attention"]["query"]["kernel"].shape == (2, 32, 32)
    assert scanned.params_axes() == stacking.scan_axes(flat.params_axes())
    assert scanned.params_axes()["decoder"]["layers"]["mlp"]["wo"]["kernel"] == \
        ("layers", "mlp", "embed")
    back = stacking.unscan_params(sparams)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, back, params))

    batch = _batch(2)
    np.testing.assert_allclose(scanned.logits(sparams, batch), flat.logits(params, batch),
                               atol=ATOL, rtol=0)
    grad = lambda m, p: jax.grad(lambda q: m.loss_fn(q, batch)[0])(p)  # noqa: E731
    g_flat, g_scan = grad(flat, params), stacking.unscan_params(grad(scanned, sparams))
    for x, y in zip(jax.tree_util.tree_leaves(g_flat), jax.tree_util.tree_leaves(g_scan)):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(
        scanned.greedy_decode(sparams, batch["encoder_input_tokens"], max_decode_len=5),
        flat.greedy_decode(params, batch["encoder_input_tokens"], max_decode_len=5))


def test_dropout_only_with_rng(params):
    model = EncoderDecoderModel(CFG.replace(dropout_rate=0.3))
    batch = _batch(3)
    clean = EncoderDecoderModel(CFG).logits(params, batch)
    np.testing.assert_allclose(model.logits(params, batch), clean, atol=1e-6)
    r1, r2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    d1 = model.logits(params, batch, dropout_rng=r1)
    np.testing.assert_array_equal(d1, model.logits(params, batch, dropout_rng=r1))
    assert float(jnp.abs(d1 - clean).max()) > 1e-3
    assert float(jnp.abs(d1 - model.logits(params, batch, dropout_rng=r2)).max()) > 1e-3


def test_bfloat16_activations_close_to_float32(params):
    """Default numerics (bf16 activations, fp32 params/softmax/loss) stay near fp32."""
    batch = _batch(4)
    bf16 = EncoderDecoderModel(CFG.replace(dtype="bfloat16"))
    assert jax.eval_shape(bf16.logits, params, batch).dtype == jnp.float32
    log_p = losses.token_log_probs(EncoderDecoderModel(CFG).logits(params, batch),
                                   batch["decoder_target_tokens"])
    ref = (log_p * batch["decoder_loss_weights"]).sum(-1)
    np.testing.assert_allclose(bf16.score_batch(params, batch), ref, rtol=0.02)
