"""Does a miniature T5+LM know its world? A probe on the trained side only (corpus wording).

    python -m bench.world_probe paper_out/models/t5_lm/1500 paper_out/vocab/spiece.model
    python -m bench.world_probe --separation paper_out t5_lm p_all/seed_0   # after make paper

The held-out families of the miniature need what the corpus (t0_jax.data.corpus) teaches: that a
made-up adjective is good or bad, and what that does to people's mood. Before prompted training
can teach a model to *use* that knowledge, the pretrained model must carry it from its input
(encoder) into what it writes (decoder). This probe asks exactly that, with the corpus's own
sentences and never a held-out template: `_GOOD[i]` and `_BAD[i]` are parallel sentences that
agree up to some point after the adjective ("... was {a}, and they" → "cheered." / "groaned.");
for every adjective of the world and two ordinary nouns, the input is that common prefix and the
two continuations are ranked by log-likelihood (the scorer t0-score uses). Accuracy 0.5 means the
model writes the same mood whatever the adjective; 1.0 that it always matches the adjective's
polarity. Used to choose the T5+LM step count of `make paper` without looking at held-out scores.

`--separation OUT_DIR MODEL...` reads what `make paper` already scored (t0-score's scores.jsonl
and the held-out synth_completion rows) and says *why* a completion prompt is at chance: for each
prompt, the margin m = log p(good ending) - log p(bad ending); "separation" is mean m over
positive premises minus mean m over negative ones (does the premise move the choice at all?),
"bias" is mean m over all (how much one ending is preferred whatever the premise). A diagnostic
written after the results were seen; nothing was tuned with it.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Optional, Sequence

import numpy as np

NOUNS = ("soup", "movie")


def bank_frames() -> list[tuple[str, str, str]]:
    """(prefix with {a}/{n}, good continuation, bad continuation) for each parallel pair of the
    corpus's polarity banks whose sentences agree past the adjective."""
    from t0_jax.data import corpus  # noqa: PLC0415

    frames = []
    for good, bad in zip(corpus._GOOD, corpus._BAD):
        g, b = good.split(" "), bad.split(" ")
        common = 0
        while common < min(len(g), len(b)) and g[common] == b[common]:
            common += 1
        prefix = " ".join(g[:common])
        if "{a}" in prefix and common < min(len(g), len(b)):
            frames.append((prefix, " ".join(g[common:]), " ".join(b[common:])))
    return frames


def probe(checkpoint: str, vocab: str, seed: int = 0) -> dict:
    """{frame prefix: accuracy over the world's adjectives × NOUNS, "overall": mean}."""
    import sentencepiece as spm  # noqa: PLC0415

    from t0_jax.data import synthetic  # noqa: PLC0415
    from t0_jax.scoring.runner import ScoreRun, load_model  # noqa: PLC0415
    from t0_jax.scoring.scorer import Scorer  # noqa: PLC0415

    model, params, mesh, _, _ = load_model(ScoreRun(checkpoint_path=checkpoint,
                                                    mixture_or_task_name="-", output_dir="-",
                                                    vocab_path=vocab))
    sp = spm.SentencePieceProcessor(model_file=vocab)
    world = synthetic.make_world(seed)
    keys, inputs, targets, truth = [], [], [], []
    frames = bank_frames()
    for index, (prefix, good, bad) in enumerate(frames):
        for polarity, lexicon in ((1, world.positive), (0, world.negative)):
            for adjective in lexicon:
                for noun in NOUNS:
                    text = prefix.format(a=adjective, n=noun)
                    for ending in (good, bad):  # inputs without EOS, as the prefix-LM task
                        keys.append((index, adjective, noun))
                        inputs.append(np.array(sp.encode(text), np.int32))
                        targets.append(np.array(sp.encode(ending.format(a=adjective, n=noun))
                                                + [1], np.int32))
                    truth.append((index, polarity))
    scores = Scorer(model, params, mesh).score(keys, inputs, targets).reshape(-1, 2)  # [n, 2]
    right: dict = {}
    for (index, polarity), (good, bad) in zip(truth, scores):
        right.setdefault(index, []).append(int(good > bad) == polarity)
    out = {re.sub(r"\s+", " ", frames[i][0]): float(np.mean(v)) for i, v in right.items()}
    out["overall"] = float(np.mean([x for v in right.values() for x in v]))
    return out


GOOD_ENDINGS = ("yes", "good")  # plus every synthetic good ending (_COMPLETION_ENDINGS[i][0])


def separation(out_dir: str, model: str) -> dict:
    """{prompt: {"separation", "bias", "accuracy"}} for synth_completion under `model`'s scores."""
    import collections  # noqa: PLC0415
    import json  # noqa: PLC0415
    import pathlib  # noqa: PLC0415

    from t0_jax.data import synthetic  # noqa: PLC0415

    good = set(GOOD_ENDINGS) | {pair[0] for pair in synthetic._COMPLETION_ENDINGS}
    out = pathlib.Path(out_dir)
    rows = [json.loads(line) for line in
            open(out / "data" / "synth_completion" / "validation.jsonl", encoding="utf-8")]
    choices: dict = collections.defaultdict(dict)
    with open(out / "scores" / model / "scores.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["task"].startswith("synth_completion_"):
                choices[(r["task"], r["example"])][r["choice_text"] in good] = r["log_likelihood"]
    margins: dict = collections.defaultdict(lambda: ([], []))  # prompt -> (negative, positive)
    for (task, example), ll in choices.items():
        prompt = task[len("synth_completion_"):].replace("_score_eval", "")
        margins[prompt][rows[example]["polarity"]].append(ll[True] - ll[False])
    result = {}
    for prompt, (neg, pos) in sorted(margins.items()):
        neg, pos = np.asarray(neg), np.asarray(pos)
        result[prompt] = {"separation": float(pos.mean() - neg.mean()),
                          "bias": float(np.concatenate([neg, pos]).mean()),
                          "accuracy": float(((pos > 0).sum() + (neg < 0).sum())
                                            / (pos.size + neg.size))}
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.world_probe", description=__doc__)
    p.add_argument("paths", nargs="+", help="CHECKPOINT VOCAB (a T5+LM step directory and the "
                   "experiment's spiece.model); with --separation: OUT_DIR MODEL... (models as "
                   "named under OUT_DIR/scores: t5_lm, p_all/seed_0, ...)")
    p.add_argument("--world_seed", type=int, default=0)
    p.add_argument("--separation", action="store_true")
    a = p.parse_args(argv)
    if a.separation:
        out_dir, *models = a.paths
        for model in models:
            for prompt, v in separation(out_dir, model).items():
                print(f"{model:16s} {prompt:20s} separation {v['separation']:6.2f} nats  "
                      f"bias {v['bias']:6.2f}  accuracy {v['accuracy']:.3f}")
        return 0
    if len(a.paths) != 2:
        p.error("expected CHECKPOINT VOCAB (or --separation OUT_DIR MODEL...)")
    for frame, accuracy in probe(*a.paths, a.world_seed).items():
        print(f"{accuracy:6.3f}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
