"""Our T5 v1.1 against Hugging Face's PyTorch T5ForConditionalGeneration on the same weights.

fp32 on CPU: logits at non-pad target positions within 1e-4, per-example log-likelihoods,
greedy decoding (with an EOS mid-sequence so the stop rule is exercised), and ~300-token
inputs, unpacked and packed, so every relative-position bucket is used.
"""
import jax
import numpy as np
import pytest
import torch

from t0_jax.model.config import T5Config, get_config
from t0_jax.model.model import EncoderDecoderModel
from tests.model import test_forms, torch_peer

SMALL = T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                 num_encoder_layers=2, num_decoder_layers=2, dtype="float32")
CONFIGS = {"small_custom": SMALL, "tiny_preset": get_config("tiny", dtype="float32")}


def padded_batch(vocab: int, seed: int = 0):
    """3 rows with different input/target lengths, EOS-terminated, right-padded with 0."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, vocab, (3, 9)).astype(np.int32)
    tgt = rng.integers(2, vocab, (3, 7)).astype(np.int32)
    for row, (li, lt) in enumerate([(6, 4), (3, 5), (9, 7)]):
        enc[row, li - 1], enc[row, li:] = 1, 0
        tgt[row, lt - 1], tgt[row, lt:] = 1, 0
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def peer(request):
    cfg = CONFIGS[request.param]
    hf = torch_peer.hf_model(cfg, seed=1)
    return cfg, hf, torch_peer.hf_to_params(hf, cfg)


def test_logits_and_loglik_match_hf(peer):
    cfg, hf, params = peer
    model = EncoderDecoderModel(cfg)
    batch = padded_batch(cfg.vocab_size)
    ours = np.asarray(jax.jit(model.logits)(params, batch))
    theirs = torch_peer.hf_logits(hf, batch["encoder_input_tokens"],
                                  batch["decoder_input_tokens"])
    real = batch["decoder_target_tokens"] > 0
    assert ours.shape == theirs.shape == (3, 7, cfg.vocab_size)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)

    log_probs = torch.log_softmax(torch.as_tensor(theirs), dim=-1).numpy()
    tok = np.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    hf_scores = (tok * batch["decoder_loss_weights"]).sum(-1)
    ours_scores = np.asarray(jax.jit(model.score_batch)(params, batch))
    np.testing.assert_allclose(ours_scores, hf_scores, atol=1e-4, rtol=1e-5)

    loss, aux = jax.jit(model.loss_fn)(params, batch)
    np.testing.assert_allclose(float(aux["cross_entropy"]), -hf_scores.sum(), rtol=1e-5)
    assert float(aux["weight_sum"]) == real.sum()
    assert float(loss) > float(aux["cross_entropy"])  # z-loss is added on top


def test_greedy_decode_matches_hf():
    cfg = SMALL
    hf = torch_peer.hf_model(cfg, seed=1, embedding_std=0.1)
    enc = padded_batch(cfg.vocab_size, seed=2)["encoder_input_tokens"]
    first = torch_peer.hf_greedy(hf, enc, 10)
    # Make EOS appear mid-sequence: swap the output rows of EOS and a token greedy emits at
    # step 2 of row 0, so rows stop early where that token would have come.
    token = int(first[0, 2])
    with torch.no_grad():
        w = hf.lm_head.weight
        w[[1, token]] = w[[token, 1]].clone()
    expected = torch_peer.hf_greedy(hf, enc, 10)
    eos_rows = [r for r in range(3) if 1 in expected[r, :-1]]
    assert eos_rows, f"test setup: no row stops early: {expected}"

    model = EncoderDecoderModel(cfg)
    params = torch_peer.hf_to_params(hf, cfg)
    decode = jax.jit(model.greedy_decode, static_argnames=("max_decode_len", "eos_id"))
    ours = np.asarray(decode(params, enc, max_decode_len=10))
    np.testing.assert_array_equal(ours, expected)
    for r in eos_rows:
        stop = list(ours[r]).index(1)
        assert (ours[r, stop + 1:] == 0).all()


def test_long_inputs_match_hf_packed_and_unpacked():
    """~300-token inputs reach T5's log-spaced buckets (distances 16..128 and beyond 128, both
    directions in the encoder, causal in the decoder); our unpacked rows and the same examples
    packed into one row both match HF's logits."""
    cfg = SMALL
    hf = torch_peer.hf_model(cfg, seed=3)
    params = torch_peer.hf_to_params(hf, cfg)
    rng = np.random.default_rng(3)
    lengths = [(300, 140), (170, 40)]  # (input, target) per example, EOS-terminated
    examples = [(np.append(rng.integers(2, cfg.vocab_size, li - 1), 1),
                 np.append(rng.integers(2, cfg.vocab_size, lt - 1), 1)) for li, lt in lengths]
    li, lt = (max(n[i] for n in lengths) for i in (0, 1))
    rows = test_forms.unpacked(examples, li, lt)
    theirs = torch_peer.hf_logits(hf, rows["encoder_input_tokens"], rows["decoder_input_tokens"])
    model = EncoderDecoderModel(cfg)
    ours = np.asarray(model.logits(params, rows))
    pack = test_forms.packed([examples], sum(n[0] for n in lengths), sum(n[1] for n in lengths))
    packed_logits = np.asarray(model.logits(params, pack))[0]
    offset = 0
    for row, (_, n) in enumerate(lengths):
        np.testing.assert_allclose(ours[row, :n], theirs[row, :n], atol=1e-4, rtol=0)
        np.testing.assert_allclose(packed_logits[offset:offset + n], theirs[row, :n],
                                   atol=1e-4, rtol=0)
        offset += n
