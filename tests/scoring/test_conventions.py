"""The lm-evaluation-harness request split on hand cases (the end-to-end check of both
conventions against their PyTorch peers is tests/bin/test_score_cli.py
`test_both_conventions_match_their_cited_peers`)."""
import numpy as np
import pytest

from t0_jax.scoring import conventions


def test_lm_eval_pair_moves_trailing_whitespace():
    assert conventions.lm_eval_pair("Q: x\nA: ", "yes") == ("Q: x\nA:", "  yes")
    assert conventions.lm_eval_pair("Q: x\n\n", "no") == ("Q: x", "\n\n no")
    assert conventions.lm_eval_pair("Q: x", "no") == ("Q: x", " no")


def _rows():
    return [{"inputs_text": "Q: x\nA: ", "target_text": c, "example": 0, "choice": i,
             "inputs": np.array([5, 6], np.int32), "targets": np.array([7, 1], np.int32)}
            for i, c in enumerate(("ab", "c"))] + [
        {"inputs_text": "say", "target_text": "ab", "example": 1, "choice": -1,
         "inputs": np.array([9], np.int32), "targets": np.array([7, 1], np.int32)}]


def _encode(texts):  # one token per non-space character: enough to see what goes where
    return [np.array([ord(ch) for ch in t if not ch.isspace()], np.int32) for t in texts]


def test_apply_puts_eos_on_the_context_and_truncates_it_from_the_left():
    rows = _rows()
    assert conventions.apply(rows, "t_zero", _encode) is rows
    out = conventions.apply(rows, "lm_eval_harness", _encode, max_input_length=4)
    context = [ord(c) for c in "Q:xA:"] + [conventions.EOS_ID]
    assert out[0]["inputs"].tolist() == context[-4:]  # lm-eval keeps the context's end
    assert out[0]["targets"].tolist() == [ord("a"), ord("b")]  # no EOS on the choice
    assert out[1]["targets"].tolist() == [ord("c")]
    assert out[2] is rows[2]  # generation rows keep their rendering
    with pytest.raises(ValueError, match="unknown scoring convention 'lm_eval'"):
        conventions.apply(rows, "lm_eval", _encode)
    with pytest.raises(ValueError, match=r"choice 0 \(' '\) has no tokens"):
        conventions.apply([rows[0] | {"target_text": " "}], "lm_eval_harness", _encode)
