"""Which tokens a rank-classification score is computed over: two conventions users meet.

The same prompt and answer choice give different log-likelihoods depending on where EOS goes
and how spaces are split between prompt and choice, so a number is only comparable with its
convention named (results.json records it under "convention").

`t_zero` (default; what reproduces T0): bigscience t-zero `evaluation/run_eval.py` with its
data collator — the prompt is tokenized WITHOUT special tokens (no EOS), each choice WITH them
(EOS appended), the score is the sum of the choice tokens' log-probabilities, EOS included, with
no length normalisation. These are the rows `t0_jax.data.score_rows` renders, used unchanged.

`lm_eval_harness`: EleutherAI lm-evaluation-harness, zero-shot `multiple_choice` request on its
Hugging Face encoder-decoder path (read at commit 4e7e0d4 of the repository, 2026-08):
  * `lm_eval/api/task.py` `ConfigurableTask.construct_requests`: the request is
    (context, target_delimiter + choice), target_delimiter " " by default
    (`lm_eval/config/task.py`); with a promptsource template the context is the rendered
    prompt and the choices are the template's answer choices;
  * `lm_eval/api/model.py` `TemplateLM._encode_pair`: trailing whitespace of the context is
    moved to the front of the continuation; for a seq2seq model the two are tokenized
    separately, the context by `tok_encode(context)` with the tokenizer's default special
    tokens (a T5 tokenizer appends EOS), the continuation with `add_special_tokens=False`
    (no EOS);
  * `lm_eval/models/huggingface.py` `HFLM._loglikelihood_tokens` (seq2seq branch): the
    encoder gets the last `max_length` context tokens (left truncation), the continuation is
    passed as `labels` (decoder input = labels shifted right after the decoder start token),
    and the score is the sum of log_softmax at the continuation tokens;
  * `lm_eval/api/task.py` `ConfigurableTask.process_results`: `acc` is right when
    `np.argmax` of those sums (the first maximum on ties, as here) is a gold choice;
    `acc_norm` (sums divided by the choices' character lengths) is another metric, not this.
Here that becomes: inputs = tokens(context) + EOS, left-truncated to max_input_length;
targets = tokens(continuation), no EOS. Rows without answer choices (greedy generation) are
left as rendered.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

T_ZERO = "t_zero"
LM_EVAL_HARNESS = "lm_eval_harness"
CONVENTIONS = {
    T_ZERO: "t-zero run_eval: inputs without EOS, choice + EOS, sum of log-probabilities",
    LM_EVAL_HARNESS: "lm-evaluation-harness seq2seq: context + EOS (trailing spaces moved to "
                     "the continuation), ' ' + choice without EOS, sum of log-probabilities",
}
TARGET_DELIMITER = " "  # lm_eval/config/task.py TaskConfig.target_delimiter default
EOS_ID = 1

Encode = Callable[[Sequence[str]], Sequence[np.ndarray]]  # texts -> token ids, no EOS


def check(name: str) -> str:
    if name not in CONVENTIONS:
        raise ValueError(f"unknown scoring convention {name!r}; SCORING_CONVENTION is one of "
                         + ", ".join(f"'{k}' ({v})" for k, v in CONVENTIONS.items()))
    return name


def describe(name: str) -> dict:
    return {"name": check(name), "description": CONVENTIONS[name]}


def lm_eval_pair(prompt: str, choice: str,
                 target_delimiter: str = TARGET_DELIMITER) -> tuple[str, str]:
    """(context, continuation) texts of one choice: the request is (prompt, delimiter +
    choice), then the context's trailing whitespace moves to the continuation."""
    context, continuation = prompt, target_delimiter + choice
    stripped = context.rstrip()
    return stripped, context[len(stripped):] + continuation


def apply(rows: list[dict], name: str, encode: Encode,
          max_input_length: Optional[int] = None) -> list[dict]:
    """Rows as the convention scores them (new dicts; `t_zero` returns `rows` itself)."""
    if check(name) == T_ZERO:
        return rows
    ranked = [i for i, r in enumerate(rows) if r["choice"] >= 0]
    textless = [i for i in ranked if not rows[i]["inputs_text"] and len(rows[i]["inputs"])]
    if textless:
        raise ValueError(
            f"{len(textless)} rows carry tokens but no rendered prompt text (a seqio cache "
            f"written without inputs_pretokenized?); the {name} convention re-tokenizes the "
            "text: score from the rendered tasks (USE_CACHED_TASKS=False) or a cache with texts.")
    pairs = [lm_eval_pair(rows[i]["inputs_text"], rows[i]["target_text"]) for i in ranked]
    contexts = encode([c for c, _ in pairs])
    continuations = encode([c for _, c in pairs])
    out = list(rows)
    for i, context, continuation in zip(ranked, contexts, continuations):
        inputs = np.concatenate([np.asarray(context, np.int32), [EOS_ID]]).astype(np.int32)
        if max_input_length is not None:
            inputs = inputs[-max_input_length:]  # lm-eval keeps the END of the context
        targets = np.asarray(continuation, np.int32)
        if targets.size == 0:
            raise ValueError(
                f"example {rows[i]['example']} choice {rows[i]['choice']} "
                f"({rows[i]['target_text']!r}) has no tokens under the {name} convention "
                "(lm-evaluation-harness asserts a non-empty continuation); score it with "
                f"SCORING_CONVENTION='{T_ZERO}' or fix the template's answer choices.")
        out[i] = rows[i] | {"inputs": inputs, "targets": targets}
    return out
