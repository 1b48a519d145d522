"""The encode-once path equals the naive path (input re-encoded per choice, the peer's layout)
and unpadded single-row scoring, on a sharded mesh; batching keeps few shapes."""
import jax
import numpy as np
import pytest

from t0_jax.model.config import get_config
from t0_jax.model.model import EncoderDecoderModel
from t0_jax.parallel.mesh import make_mesh
from t0_jax.scoring.batching import (BatchingOptions, input_bucket, make_batches, row_bucket,
                                      target_bucket)
from t0_jax.scoring.scorer import Scorer, naive_scores

# Small floors: the batching test sees several shapes; the scoring test's rows (inputs < 32,
# targets < 16 tokens) then differ only in their row-count bucket: few programs to compile.
OPTIONS = BatchingOptions(max_examples=4, max_rows=16, min_input_length=8, min_target_length=4)
FEW_SHAPES = BatchingOptions(max_examples=8, max_rows=32, min_input_length=32,
                            min_target_length=16)


@pytest.fixture(scope="module")
def model_and_params():
    """Random params drawn in numpy from the abstract tree (no init program to compile)."""
    model = EncoderDecoderModel(get_config("tiny", vocab_size=128, dtype="float32"))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[0]))
                          .astype(np.float32), model.abstract_params())
    return model, params


def _rows(seed=0, n_examples=11, max_input=40):
    """Examples with 1–5 choices of varying lengths; examples 3 and 4 share an input."""
    rng = np.random.default_rng(seed)
    keys, inputs, targets = [], [], []
    for e in range(n_examples):
        inp = rng.integers(3, 128, rng.integers(3, max_input)).astype(np.int32)
        if e == 4:
            inp = inputs[keys.index(3)]
        for _ in range(rng.integers(1, 6)):
            tgt = np.append(rng.integers(3, 128, rng.integers(1, 12)), 1).astype(np.int32)
            keys.append(e), inputs.append(inp), targets.append(tgt)
    return keys, inputs, targets


def test_batches_cover_rows_once_with_few_shapes():
    keys, inputs, targets = _rows()
    options = BatchingOptions(**{**OPTIONS.__dict__, "row_multiple": 4})
    batches = list(make_batches(keys, inputs, targets, options))
    seen = np.concatenate([b.row_ids for b in batches])
    assert sorted(seen.tolist()) == list(range(len(keys)))
    for b in batches:
        e, li = b.encoder_input_tokens.shape
        r, lt = b.decoder_target_tokens.shape
        assert e % 4 == 0 and r % 4 == 0 and li == input_bucket(li, 8)
        assert lt == target_bucket(lt, 4) and r == row_bucket(len(b.row_ids), 4)
        for j, row in enumerate(b.row_ids):  # each row points at its own input and target
            enc = b.encoder_input_tokens[b.encoder_index[j]]
            np.testing.assert_array_equal(enc[:len(inputs[row])], inputs[row])
            assert not enc[len(inputs[row]):].any()
            n = len(targets[row])
            np.testing.assert_array_equal(b.decoder_target_tokens[j, :n], targets[row])
            np.testing.assert_array_equal(b.decoder_input_tokens[j, 1:n], targets[row][:-1])
            assert b.decoder_input_tokens[j, 0] == 0 and b.decoder_loss_weights[j].sum() == n
        assert b.decoder_loss_weights[len(b.row_ids):].sum() == 0  # padding rows score nothing
    assert len({b.shape_key for b in batches}) <= 4


def test_bucket_steps_and_partial_batch_sizes():
    """Lengths round to the fine steps (not powers of two); a task's last, partial batch gets
    only the encoder and choice rows it needs."""
    assert [input_bucket(n, 32) for n in (1, 33, 65, 512, 513, 1000)] == \
        [32, 64, 96, 512, 640, 1024]
    assert [target_bucket(n, 4) for n in (1, 5, 64, 65, 257)] == [4, 8, 64, 80, 320]
    assert [row_bucket(n) for n in (1, 3, 8, 9, 17)] == [1, 4, 8, 16, 24]
    keys = [e for e in range(9) for _ in range(2)]
    inputs = [np.arange(2, 67 + e, dtype=np.int32) for e in keys]  # 65-73 tokens
    targets = [np.array([5, 1], np.int32)] * len(keys)
    options = BatchingOptions(max_examples=8, max_rows=32)
    shapes = [b.shape_key for b in make_batches(keys, inputs, targets, options)]
    assert shapes == [(8, 96, 16, 4), (1, 96, 2, 4)]
    with_dp = BatchingOptions(max_examples=8, max_rows=32, row_multiple=4)
    assert [b.shape_key for b in make_batches(keys, inputs, targets, with_dp)] == \
        [(8, 96, 16, 4), (4, 96, 4, 4)]


def test_auto_batch_sizes_follow_the_backend():
    assert BatchingOptions().resolved("cpu").max_examples == 8
    assert BatchingOptions().resolved("gpu").max_rows == 128
    assert BatchingOptions(max_examples=3).resolved("gpu").max_examples == 3


def test_encode_once_equals_naive_and_single_rows(model_and_params):
    model, params = model_and_params
    keys, inputs, targets = _rows(max_input=32)
    mesh = make_mesh(num_partitions=2)  # 4-way data × 2-way model on the 8 fake devices
    from t0_jax.model.axes import DEFAULT_RULES
    from t0_jax.parallel.sharding import logical_to_sharding
    shardings = logical_to_sharding(model.params_axes(), mesh, DEFAULT_RULES, params)
    sharded = jax.device_put(params, shardings)
    scorer = Scorer(model, sharded, mesh, FEW_SHAPES)
    ours = scorer.score(keys, inputs, targets)
    naive = naive_scores(model, params, keys, inputs, targets, FEW_SHAPES)
    np.testing.assert_allclose(ours, naive, rtol=1e-5, atol=1e-4)
    # Rows alone, unpadded, through the model's own score_batch.
    score_batch = jax.jit(model.score_batch)
    for i in (len(keys) - 1,):
        batch = {"encoder_input_tokens": inputs[i][None],
                 "decoder_target_tokens": targets[i][None],
                 "decoder_input_tokens": np.concatenate([[0], targets[i][:-1]])[None],
                 "decoder_loss_weights": np.ones((1, len(targets[i])), np.float32)}
        single = float(score_batch(params, batch)[0])
        assert ours[i] == pytest.approx(single, rel=1e-5, abs=1e-4)
    assert np.all(ours < 0) and len(scorer.shapes_seen) <= 2  # row counts bucket to 16, 32


def test_scores_do_not_depend_on_the_batch_size(spm_model_path, shared_data_dir):
    """Real MRPC prompts (2 templates): batch sizes 1, 7 and 64 (examples and choice rows per
    batch) give the same predictions and log-likelihoods within 1e-5 in fp32, although the
    padded lengths and the row padding of each row's batch differ between them."""
    from t0_jax.data import score_rows

    rows = [r | {"task": t} for t in ("glue_mrpc_equivalent_score_eval",
                                      "glue_mrpc_paraphrase_score_eval")
            for r in score_rows.task_rows(t, "validation", shared_data_dir, spm_model_path,
                                          max_examples=6)]
    model = EncoderDecoderModel(get_config("tiny", vocab_size=1024, dtype="float32"))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[0]))
                          .astype(np.float32), model.abstract_params())
    keys = [(r["task"], r["example"]) for r in rows]
    scores, shapes = {}, {}
    for size in (1, 7, 64):
        scorer = Scorer(model, params, options=BatchingOptions(max_examples=size, max_rows=size))
        scores[size] = scorer.score(keys, [r["inputs"] for r in rows],
                                    [r["targets"] for r in rows])
        shapes[size] = scorer.shapes_seen

    def predictions(values):
        best = {}
        for key, row, value in zip(keys, rows, values):
            best[key] = max(best.get(key, (-np.inf, -1)), (value, row["choice"]))
        return {k: choice for k, (_, choice) in best.items()}

    assert len(set(map(frozenset, shapes.values()))) == 3  # the three runs padded differently
    for size in (7, 64):
        np.testing.assert_allclose(scores[size], scores[1], rtol=0, atol=1e-5)
        assert predictions(scores[size]) == predictions(scores[1])


def test_activation_dtype_defaults_to_bf16_on_accelerators_only():
    from t0_jax.scoring import runner

    assert runner.default_activation_dtype("cpu") == "float32"
    assert runner.default_activation_dtype("gpu") == runner.default_activation_dtype("tpu") \
        == "bfloat16"
    config = get_config("tiny", vocab_size=128, dtype="bfloat16")
    cfg = runner.ScoreRun("ckpt", "task", "out")  # activation_dtype None: by backend (CPU here)
    assert runner._model(config, cfg).config.dtype == "float32"
    assert runner._model(config, runner.ScoreRun("c", "t", "o", activation_dtype="bfloat16")
                         ).config.dtype == "bfloat16"
