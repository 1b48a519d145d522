"""Tasks for `bench.cache_scale`, registered on import (`t0-cache --module_import` imports it).

Every template of the four datasets of ../shared/data (glue/mrpc, piqa, social_i_qa, ag_news:
31 templates) registered again under the round names r0..r6 (the registry's round suffix, e.g.
`ag_news_classify_r3`), each reading split `validation` of a bench mirror that `cache_scale`
builds (1,000 real examples per dataset): 217 distinct tasks of real shape, so peak memory can
be measured at 12, 48 and 192 tasks.
"""
from __future__ import annotations

from t0_jax.data import registry

DATASETS = (("glue", "mrpc", "validation"), ("piqa", None, "validation"),
            ("social_i_qa", None, "validation"), ("ag_news", None, "test"))
ROUNDS = tuple(f"r{k}" for k in range(7))


def register() -> list:
    """Register the round tasks (idempotent); returns their names, datasets interleaved so that
    every prefix mixes the four datasets."""
    per_dataset = []
    for name, subset, _ in DATASETS:
        per_round = [registry.register_dataset_tasks(name, subset, {"validation": "validation"},
                                                     None, round_name)
                     for round_name in ROUNDS]
        per_dataset.append(per_round)
    ordered = []
    for k in range(len(ROUNDS)):
        longest = max(len(p[k]) for p in per_dataset)
        for i in range(longest):
            ordered += [p[k][i].name for p in per_dataset if i < len(p[k])]
    return ordered


TASKS = register()
