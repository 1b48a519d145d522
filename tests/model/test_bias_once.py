"""The relative-position bias is built once per stack as [1, heads, q, k], never per row.

The train step (forward, backward and Adafactor update, packed batch, so `*_positions` are
there to be misused) is traced, and every operation that reads a relative-position table
[heads, buckets] is checked: the bias it makes (gather) or the gradient it takes back
(scatter-add) must be [heads, q, k]. A per-row bias would carry the batch dimension. Shapes
are chosen so that batch (3), heads (4), encoder (10) and decoder (6) lengths all differ.
"""
import jax
import numpy as np
import pytest

from t0_jax.model.axes import DEFAULT_RULES
from t0_jax.model.config import T5Config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.parallel import mesh as mesh_lib
from t0_jax.train import state as state_lib, steps
from tests.model.test_forms import packed

CFG = T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
               num_encoder_layers=2, num_decoder_layers=2, dtype="float32")
BATCH, LI, LT = 3, 10, 6


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in it (pjit, remat, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _table_uses(config: T5Config) -> list[tuple[str, tuple[int, ...]]]:
    """(primitive, bias-sized shape) for each op that reads a [heads, buckets] table."""
    model = EncoderDecoderModel(config)
    optimizer = state_lib.make_optimizer(model.params_axes())
    layout = state_lib.state_layout(model, optimizer, mesh_lib.make_mesh(
        1, devices=jax.devices()[:1]), DEFAULT_RULES)
    rng = np.random.default_rng(0)
    ex = lambda li, lt: (rng.integers(2, 128, li), rng.integers(2, 128, lt))  # noqa: E731
    batch = packed([[ex(4, 2), ex(5, 3)], [ex(9, 5)], [ex(3, 3), ex(3, 2), ex(2, 1)]], LI, LT)

    def step(state, batch):
        return steps.train_step(state, batch, model=model, optimizer=optimizer)

    with mesh_lib.mesh_context(layout.mesh, layout.rules):
        jaxpr = jax.make_jaxpr(step)(layout.abstract, batch).jaxpr
    table = (config.num_heads, config.relative_attention_num_buckets)
    uses = []
    for eqn in _equations(jaxpr):
        avals = [v.aval for v in list(eqn.invars) + list(eqn.outvars)]
        if eqn.primitive.name in ("gather", "scatter-add", "scatter_add") and any(
                getattr(a, "shape", None) == table for a in avals):
            uses += [(eqn.primitive.name, tuple(a.shape)) for a in avals  # values, not indices
                     if len(a.shape) >= 3 and np.issubdtype(a.dtype, np.floating)]
    return uses


@pytest.mark.parametrize("scan_remat", [False, True], ids=["unrolled", "scan_remat"])
def test_train_step_builds_bias_once_per_stack(scan_remat):
    config = CFG.replace(scan_layers=True, remat_policy="full") if scan_remat else CFG
    uses = _table_uses(config)
    h = CFG.num_heads
    per_row = [u for u in uses if BATCH in u[1]]
    assert not per_row, f"a per-row [batch, heads, q, k] relative-position bias: {per_row}"
    # One gather per stack forward, one scatter-add per stack backward, each [h, q, k].
    assert sorted(uses) == sorted([("gather", (h, LI, LI)), ("gather", (h, LT, LT)),
                                   ("scatter-add", (h, LI, LI)), ("scatter-add", (h, LT, LT))])
